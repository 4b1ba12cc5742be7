//! The manifest of a complete export, in the layout of Redshift's
//! `UNLOAD … MANIFEST VERBOSE`: `entries[].url` with `meta.content_length`
//! and `meta.record_count`, `schema.elements` (each column's name and
//! Redshift type), and the totals in `meta`, so tools that read an
//! UNLOAD's output (COPY, Spectrum, shiftload's staged source) read an
//! export the same way.

use arrow_schema::{DataType, Field, Schema};
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Part;
use crate::error::Result;
use crate::kind::FieldKind;
use crate::objects::{store_error, Location};

/// A manifest as written.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: Vec<Entry>,
    pub schema: Value,
    pub author: Value,
    pub meta: Meta,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub url: String,
    pub meta: Meta,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Meta {
    pub content_length: u64,
    pub record_count: u64,
}

/// The Redshift type of a column as UNLOAD's manifest names it.
fn element(field: &Field) -> Value {
    let base = |b: &str| json!({"base": b});
    let kind = FieldKind::of(field);
    let ty = match field.data_type() {
        DataType::Boolean => base("boolean"),
        DataType::Int16 => base("smallint"),
        DataType::Int32 => base("integer"),
        DataType::Int64 => base("bigint"),
        DataType::Float32 => base("real"),
        DataType::Float64 => base("double precision"),
        DataType::Decimal128(p, s) => json!({"base": "numeric", "precision": p, "scale": s}),
        DataType::Date32 => base("date"),
        DataType::Timestamp(_, None) => base("timestamp without time zone"),
        DataType::Timestamp(_, Some(_)) => base("timestamp with time zone"),
        DataType::Time64(_) => base("time without time zone"),
        DataType::Utf8 if kind == Some(FieldKind::Json) => base("super"),
        DataType::Utf8 if kind == Some(FieldKind::Char) => base("character"),
        DataType::Utf8 => base("character varying"),
        DataType::Binary if kind == Some(FieldKind::Geometry) => base("geometry"),
        DataType::Binary => base("varbyte"),
        other => base(&other.to_string().to_lowercase()),
    };
    json!({"name": field.name(), "type": ty})
}

/// The manifest of `parts` (every part of the export, in order).
pub fn manifest(location: &Location, parts: &[Part], schema: &Schema) -> Manifest {
    let entries: Vec<Entry> = parts
        .iter()
        .map(|p| Entry {
            url: location.object_url(&p.key),
            meta: Meta {
                content_length: p.bytes,
                record_count: p.rows,
            },
        })
        .collect();
    Manifest {
        meta: Meta {
            content_length: parts.iter().map(|p| p.bytes).sum(),
            record_count: parts.iter().map(|p| p.rows).sum(),
        },
        entries,
        schema: json!({"elements": schema.fields().iter().map(|f| element(f)).collect::<Vec<_>>()}),
        author: json!({"name": "shiftload", "version": env!("CARGO_PKG_VERSION")}),
    }
}

/// Write `<location>manifest`; its URL.
pub async fn write_manifest(location: &Location, manifest: &Manifest) -> Result<String> {
    let key = location.key("manifest");
    let url = location.object_url(&key);
    let body = serde_json::to_vec_pretty(manifest).expect("serializable");
    location
        .store()
        .put(&location.path_of(&key)?, PutPayload::from(body))
        .await
        .map_err(|e| store_error(&format!("cannot write {url}"), e))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::TimeUnit;

    #[test]
    fn the_manifest_has_unloads_layout() {
        let location =
            Location::open("s3://b/exp/", None, Some("http://127.0.0.1:1"), "k").unwrap();
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            FieldKind::Json.mark(Field::new("doc", DataType::Utf8, true)),
        ]);
        let parts = [
            Part {
                key: "exp/a_part_00.parquet".into(),
                rows: 3,
                bytes: 100,
            },
            Part {
                key: "exp/b_part_00.parquet".into(),
                rows: 4,
                bytes: 50,
            },
        ];
        let m = serde_json::to_value(manifest(&location, &parts, &schema)).unwrap();
        assert_eq!(m["entries"][1]["url"], "s3://b/exp/b_part_00.parquet");
        assert_eq!(m["entries"][0]["meta"]["record_count"], 3);
        assert_eq!(m["entries"][0]["meta"]["content_length"], 100);
        assert_eq!(m["meta"]["record_count"], 7);
        assert_eq!(m["meta"]["content_length"], 150);
        let elements = &m["schema"]["elements"];
        assert_eq!(elements[0]["type"]["base"], "bigint");
        assert_eq!(
            elements[1]["type"],
            json!({"base": "numeric", "precision": 12, "scale": 2})
        );
        assert_eq!(elements[2]["type"]["base"], "timestamp with time zone");
        assert_eq!(
            elements[3],
            json!({"name": "doc", "type": {"base": "super"}})
        );
    }
}
