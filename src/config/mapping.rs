//! The job's `[mapping]`: how result columns become document fields.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// How result columns become document fields.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Key columns that make `_id`: one column gives its value, several give a
    /// sub-document `{col1: .., col2: ..}`. Without it each document gets a
    /// fresh ObjectId, which is not safe to re-run (a retry duplicates rows).
    #[serde(default)]
    pub id: Vec<String>,
    /// Columns to keep (default: all). Cannot be combined with `exclude`.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Columns to drop.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Column → field path. A dotted path (`address.city`) builds nested
    /// documents.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// What a SQL NULL becomes.
    #[serde(default)]
    pub null: NullPolicy,
    /// What DECIMAL/NUMERIC values become.
    #[serde(default)]
    pub decimal: DecimalPolicy,
    /// What happens to a decimal with more than 34 significant digits, which
    /// BSON Decimal128 cannot hold exactly.
    #[serde(default)]
    pub decimal_overflow: OverflowPolicy,
    /// What DATE, TIMESTAMP and TIMESTAMPTZ values become.
    #[serde(default)]
    pub timestamp: TimestampPolicy,
    /// What JSON/JSONB/SUPER text becomes.
    #[serde(default)]
    pub json: JsonPolicy,
    /// What Redshift GEOMETRY/GEOGRAPHY values become.
    #[serde(default)]
    pub geometry: GeometryPolicy,
    /// Strip the trailing blanks that CHAR(n) pads values with.
    #[serde(default = "default_true")]
    pub trim_char: bool,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            id: Vec::new(),
            include: None,
            exclude: Vec::new(),
            rename: BTreeMap::new(),
            null: NullPolicy::default(),
            decimal: DecimalPolicy::default(),
            decimal_overflow: OverflowPolicy::default(),
            timestamp: TimestampPolicy::default(),
            json: JsonPolicy::default(),
            geometry: GeometryPolicy::default(),
            trim_char: true,
        }
    }
}

/// What a SQL NULL becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NullPolicy {
    /// Leave the field out of the document.
    #[default]
    Omit,
    /// Write a BSON null.
    Null,
}

/// What DECIMAL/NUMERIC values become.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecimalPolicy {
    /// BSON Decimal128, exact (up to 34 significant digits).
    #[default]
    Decimal128,
    /// BSON double: lossy beyond 15-17 significant digits.
    Double,
    /// The decimal's text, e.g. `"12.3400"`.
    String,
}

/// What happens to a decimal that BSON Decimal128 cannot hold exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Stop the run with an error naming the column and row key.
    #[default]
    Error,
    /// Write the exact value as a string.
    String,
}

/// What DATE, TIMESTAMP and TIMESTAMPTZ values become.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimestampPolicy {
    /// BSON datetime (milliseconds since the epoch, UTC); microseconds are
    /// truncated toward minus infinity.
    #[default]
    Datetime,
    /// ISO 8601 text with microseconds (`2024-01-31T12:00:00.123456Z`, or
    /// `2024-01-31` for a DATE).
    String,
    /// int64 microseconds since the Unix epoch.
    Micros,
}

/// What JSON/JSONB/SUPER text becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JsonPolicy {
    /// Embedded documents and arrays.
    #[default]
    Parse,
    /// The JSON text as a string.
    String,
}

/// What Redshift GEOMETRY/GEOGRAPHY values become.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GeometryPolicy {
    /// The EWKB bytes as BSON binary: exact, SRID included.
    #[default]
    Ewkb,
    /// A GeoJSON geometry document (`{type, coordinates}`), as MongoDB's
    /// `2dsphere` indexes read: the SRID is dropped, Z kept; M values,
    /// curves and non-finite coordinates are row errors.
    Geojson,
}

fn default_true() -> bool {
    true
}

impl MappingConfig {
    /// Checks that need no schema: exclusive settings, field paths, keys.
    pub(super) fn check(&self) -> std::result::Result<(), String> {
        if self.include.is_some() && !self.exclude.is_empty() {
            return Err("`mapping.include` and `mapping.exclude` cannot both be set".into());
        }
        for (column, path) in &self.rename {
            check_field_path(path)
                .map_err(|why| format!("`mapping.rename.{column}` = {path:?}: {why}"))?;
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.id {
            if !seen.insert(c) {
                return Err(format!("`mapping.id` names column `{c}` twice"));
            }
        }
        Ok(())
    }

    /// The result columns the mapping writes (`_id` key columns, then the
    /// included ones), in result order: what a source needs to fetch.
    pub fn columns_used(&self, all: &[String]) -> Vec<String> {
        all.iter()
            .filter(|c| {
                self.id.contains(c)
                    || match &self.include {
                        Some(list) => list.contains(c),
                        None => !self.exclude.contains(c),
                    }
            })
            .cloned()
            .collect()
    }

    /// The mapping for a result narrowed to `columns`: settings about
    /// columns that were not fetched are dropped.
    pub fn narrowed_to(&self, columns: &[String]) -> MappingConfig {
        let mut m = self.clone();
        m.exclude.retain(|c| columns.contains(c));
        m.rename.retain(|c, _| columns.contains(c));
        m
    }
}

/// Check a dotted field path for what MongoDB (and compatible servers) reject.
pub fn check_field_path(path: &str) -> std::result::Result<(), &'static str> {
    for part in path.split('.') {
        if part.is_empty() {
            return Err("a path segment is empty");
        }
        if part.starts_with('$') {
            return Err("a field name cannot start with `$`");
        }
        if part.contains('\0') {
            return Err("a field name cannot contain NUL");
        }
    }
    Ok(())
}
