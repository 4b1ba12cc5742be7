//! The staged parts of a location, checked before they become partitions.
//!
//! A listing is not taken on trust: no part at all is an error (unless a
//! manifest says the result was empty), and where a Redshift manifest
//! (`MANIFEST VERBOSE`, which shiftload's UNLOAD asks for) lies beside the
//! parts, the parts must be exactly its entries and the rows in their
//! Parquet footers must add up to its `record_count`, part by part and in
//! all — checked when the plan is made, before anything is written.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Deserialize;

use super::parquet::{s3_error, Staging};
use crate::error::{Error, Result};

/// A Redshift UNLOAD manifest (the fields shiftload reads).
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub entries: Vec<Entry>,
    pub meta: Option<Meta>,
}

#[derive(Debug, Deserialize)]
pub struct Entry {
    pub url: String,
    pub meta: Option<Meta>,
}

#[derive(Debug, Deserialize)]
pub struct Meta {
    pub record_count: Option<u64>,
}

/// A part as listed: its key and the rows its footer announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub key: String,
    pub rows: u64,
}

fn mismatch(location: &str, message: String) -> Error {
    Error::config(
        "source.staging.location",
        format!("{location}: {message}; nothing is taken for complete from a part list that does not add up"),
    )
}

/// Check `parts` (key order) against `manifest`, whose URLs are `base`
/// (`s3://bucket/`, `file:///`) and a key.
pub fn check(
    location: &str,
    parts: &[Part],
    manifest: Option<&Manifest>,
    base: &str,
) -> Result<()> {
    let Some(manifest) = manifest else {
        if parts.is_empty() {
            return Err(mismatch(
                location,
                "no Parquet part is there (and no manifest says the result was empty); check \
                 `source.staging.location`"
                    .into(),
            ));
        }
        return Ok(());
    };
    let prefix = base;
    let mut expected: BTreeMap<&str, Option<u64>> = BTreeMap::new();
    for e in &manifest.entries {
        let key = e.url.strip_prefix(prefix).unwrap_or(&e.url);
        expected.insert(key, e.meta.as_ref().and_then(|m| m.record_count));
    }
    let listed: BTreeMap<&str, u64> = parts.iter().map(|p| (p.key.as_str(), p.rows)).collect();
    if let Some(missing) = expected.keys().find(|k| !listed.contains_key(*k)) {
        return Err(mismatch(
            location,
            format!("the manifest lists {base}{missing}, which is not there"),
        ));
    }
    if let Some(extra) = listed.keys().find(|k| !expected.contains_key(*k)) {
        return Err(mismatch(
            location,
            format!("{base}{extra} is not in the manifest"),
        ));
    }
    for (key, want) in &expected {
        if let Some(want) = want {
            if listed[key] != *want {
                return Err(mismatch(
                    location,
                    format!(
                        "{base}{key} holds {} rows, the manifest says {want}",
                        listed[key]
                    ),
                ));
            }
        }
    }
    let total: u64 = parts.iter().map(|p| p.rows).sum();
    if let Some(want) = manifest.meta.as_ref().and_then(|m| m.record_count) {
        if total != want {
            return Err(mismatch(
                location,
                format!("the parts hold {total} rows, the manifest says {want}"),
            ));
        }
    }
    Ok(())
}

impl Staging {
    /// The Parquet parts under `sub` (keys, in key order), checked as the
    /// module says. Empty objects, manifests and whatever lies under a
    /// `_`/`.` name are not parts.
    pub async fn parts(&self, sub: &str) -> Result<Vec<String>> {
        let prefix = self.key(sub);
        let location = self.url(sub);
        let path = self.path_of(&prefix)?;
        let objects: Vec<(String, u64)> = self
            .store
            .list(Some(&path))
            .map_ok(|meta| (meta.location.to_string(), meta.size))
            .try_collect()
            .await
            .map_err(|e| s3_error(&format!("cannot list {location}"), e))?;
        let mut manifest = None;
        let mut keys = Vec::new();
        for (key, size) in objects {
            // Under `_` or `.` names (markers, an export's own state and
            // parts being written) nothing is a part.
            let relative = key.strip_prefix(prefix.as_str()).unwrap_or(&key);
            if relative
                .split('/')
                .any(|c| c.starts_with('_') || c.starts_with('.'))
            {
                continue;
            }
            if key.ends_with("manifest") {
                manifest = Some(self.manifest(&key).await?);
            } else if size > 0 {
                keys.push(key);
            }
        }
        keys.sort();
        // Footers are read only to check them against a manifest; without
        // one, a part that cannot be read fails alone when it is read.
        let mut parts = Vec::with_capacity(keys.len());
        for key in keys {
            let rows = match manifest {
                Some(_) => self.footer_rows(&key).await?,
                None => 0,
            };
            parts.push(Part { key, rows });
        }
        check(&location, &parts, manifest.as_ref(), &self.base)?;
        Ok(parts.into_iter().map(|p| p.key).collect())
    }

    async fn manifest(&self, key: &str) -> Result<Manifest> {
        let url = self.object_url(key);
        let bytes = self
            .store
            .get(&self.path_of(key)?)
            .await
            .map_err(|e| s3_error(&format!("cannot read {url}"), e))?
            .bytes()
            .await
            .map_err(|e| s3_error(&format!("cannot read {url}"), e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::config(
                "source.staging.location",
                format!("{url} is not a Redshift UNLOAD manifest: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(key: &str, rows: u64) -> Part {
        Part {
            key: key.into(),
            rows,
        }
    }

    fn manifest(text: &str) -> Manifest {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn an_empty_listing_is_an_error_unless_a_manifest_says_empty() {
        let e = check("s3://b/p/", &[], None, "s3://b/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Parquet part"), "{e}");
        let empty = manifest(r#"{"entries": [], "meta": {"record_count": 0}}"#);
        check("s3://b/p/", &[], Some(&empty), "s3://b/").unwrap();
    }

    #[test]
    fn parts_and_rows_must_match_the_manifest() {
        let m = manifest(
            r#"{"entries": [
                {"url": "s3://b/p/0000_part_00.parquet", "meta": {"content_length": 9, "record_count": 3}},
                {"url": "s3://b/p/0001_part_00.parquet", "meta": {"content_length": 9, "record_count": 2}}],
              "schema": {"elements": []},
              "meta": {"content_length": 18, "record_count": 5}}"#,
        );
        let parts = [
            part("p/0000_part_00.parquet", 3),
            part("p/0001_part_00.parquet", 2),
        ];
        check("s3://b/p/", &parts, Some(&m), "s3://b/").unwrap();
        let e = check("s3://b/p/", &parts[..1], Some(&m), "s3://b/")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0001_part_00.parquet, which is not there"),
            "{e}"
        );
        let short = [
            part("p/0000_part_00.parquet", 3),
            part("p/0001_part_00.parquet", 1),
        ];
        let e = check("s3://b/p/", &short, Some(&m), "s3://b/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds 1 rows, the manifest says 2"), "{e}");
        let mut extra = parts.to_vec();
        extra.push(part("p/stale.parquet", 7));
        let e = check("s3://b/p/", &extra, Some(&m), "s3://b/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stale.parquet is not in the manifest"), "{e}");
    }
}
