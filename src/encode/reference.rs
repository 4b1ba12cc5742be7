//! The slow, obviously correct path: one `bson::Document` per row, built
//! value by value through the `bson` crate's own types and serialiser.
//!
//! It exists to check and to measure the fast encoder: the property tests
//! compare the two byte for byte, and `benches/encode.rs` reports the fast
//! path as a ratio of this one. It covers the default mapping (every column
//! under its own name, `_id` from at most one column).

use std::str::FromStr;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bson::{Bson, Document};

use super::bson as b;
use crate::config::NullPolicy;
use crate::kind::FieldKind;

/// The document for `row`, `_id` first when `id_column` is given.
pub fn document(
    batch: &RecordBatch,
    row: usize,
    id_column: Option<usize>,
    null: NullPolicy,
) -> Document {
    let mut doc = Document::new();
    if let Some(c) = id_column {
        doc.insert("_id", value(batch, c, row).expect("non-null key"));
    }
    for (c, field) in batch.schema().fields().iter().enumerate() {
        match value(batch, c, row) {
            Some(v) => {
                doc.insert(field.name().clone(), v);
            }
            None if null == NullPolicy::Null => {
                doc.insert(field.name().clone(), Bson::Null);
            }
            None => {}
        }
    }
    doc
}

/// The document's bytes, through `bson`'s serialiser.
pub fn document_bytes(
    batch: &RecordBatch,
    row: usize,
    id_column: Option<usize>,
    null: NullPolicy,
) -> Vec<u8> {
    document(batch, row, id_column, null)
        .to_vec()
        .expect("serialisable")
}

fn value(batch: &RecordBatch, c: usize, row: usize) -> Option<Bson> {
    let a = batch.column(c);
    if a.is_null(row) {
        return None;
    }
    let schema = batch.schema();
    let field = schema.field(c);
    Some(match a.data_type() {
        DataType::Boolean => Bson::Boolean(a.as_boolean().value(row)),
        DataType::Int16 => Bson::Int32(a.as_primitive::<Int16Type>().value(row) as i32),
        DataType::Int32 => Bson::Int32(a.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Bson::Int64(a.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => Bson::Double(a.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => Bson::Double(a.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => {
            let s = a.as_string::<i32>().value(row);
            match FieldKind::of(field) {
                Some(FieldKind::Char) => Bson::String(s.trim_end_matches(' ').to_string()),
                _ => Bson::String(s.to_string()),
            }
        }
        DataType::Binary => Bson::Binary(bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: a.as_binary::<i32>().value(row).to_vec(),
        }),
        DataType::Decimal128(_, s) => {
            let text = b::decimal_string(a.as_primitive::<Decimal128Type>().value(row), *s);
            Bson::Decimal128(bson::Decimal128::from_str(&text).expect("34 digits or fewer"))
        }
        DataType::Date32 => Bson::DateTime(bson::DateTime::from_millis(
            a.as_primitive::<Date32Type>().value(row) as i64 * 86_400_000,
        )),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let us = a.as_primitive::<TimestampMicrosecondType>().value(row);
            Bson::DateTime(bson::DateTime::from_millis(us.div_euclid(1000)))
        }
        DataType::Time64(TimeUnit::Microsecond) => Bson::String(crate::time::time_string(
            a.as_primitive::<Time64MicrosecondType>().value(row),
        )),
        other => panic!("reference path does not cover {other}"),
    })
}
