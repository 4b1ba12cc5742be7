//! Cutting a job into partitions: key ranges of one integer, date or
//! timestamp column, each small enough that redoing it is cheap.
//!
//! Bounds are kept as i64 in the key's natural unit (the integer itself,
//! days since 1970-01-01, or microseconds since the epoch) and written into
//! the SQL as literals of the column's type, so the predicate is pushed down
//! to Redshift. The first range has no lower bound and the last no upper
//! bound, so rows outside the planned min/max are not lost; rows whose key
//! is NULL get a partition of their own.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sql::{quote_ident, subquery, trim_query};
use crate::time::{date_string, parse_date, parse_timestamp, timestamp_string};

/// How to cut the job into partitions.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// Key column to split on: an integer, DATE or TIMESTAMP column of the
    /// query's result (Redshift: preferably the sort key).
    pub column: String,
    /// Number of equal key ranges between the key's min and max. Default:
    /// the row count divided by `target_rows`.
    #[serde(default)]
    pub count: Option<u32>,
    /// Rows a partition should hold when `count` is not given.
    #[serde(default = "default_target_rows")]
    pub target_rows: u64,
    /// How to place the boundaries between min and max: `equal` key ranges,
    /// or `quantiles` of a random sample of the keys (ranges of about equal
    /// row counts when the keys are skewed; costs one sampling query).
    #[serde(default)]
    pub split: SplitMode,
    /// Explicit inner boundaries instead of equal ranges: integers, or
    /// `"2024-01-01"` / `"2024-01-01 12:00:00"` strings for date and
    /// timestamp keys. N boundaries make N + 1 ranges.
    #[serde(default)]
    pub boundaries: Vec<Boundary>,
    /// Partitions transferred at once by one worker.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
}

/// How boundaries are placed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SplitMode {
    /// Equal key ranges between min and max.
    #[default]
    Equal,
    /// Quantiles of a sample of the keys.
    Quantiles,
}

/// Keys sampled for quantile boundaries.
pub const SAMPLE_KEYS: u64 = 20_000;

fn default_target_rows() -> u64 {
    2_000_000
}
fn default_parallel() -> usize {
    1
}

/// A boundary as written in the job file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Boundary {
    Int(i64),
    Text(String),
}

/// The type of the partition key, which decides units and literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    Int,
    /// Days since 1970-01-01.
    Date,
    /// Microseconds since the epoch; `tz` for TIMESTAMPTZ.
    Timestamp {
        tz: bool,
    },
}

/// One partition: a key range `[lo, hi)` (`i64::MIN`/`i64::MAX` for open
/// ends), the NULL keys, or the whole query when the job is not partitioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub lo: i64,
    pub hi: i64,
    pub null: bool,
}

impl Range {
    pub const ALL: Range = Range {
        lo: i64::MIN,
        hi: i64::MAX,
        null: false,
    };

    /// Half of the range, for a partition that timed out twice; `None`
    /// when it cannot be cut (open ends are cut at `known` bounds).
    /// `[min, max]` are the keys known to lie in the range (the
    /// partition's own, or the plan's); the cut falls between them, in
    /// 128-bit arithmetic, and the outer ends stay as they were.
    pub fn split(&self, min: i64, max: i64) -> Option<(Range, Range)> {
        if self.null {
            return None;
        }
        let lo = (self.lo as i128).max(min as i128);
        let hi = (self.hi as i128).min(max as i128 + 1);
        if hi - lo < 2 {
            return None;
        }
        let mid = i64::try_from(lo + (hi - lo) / 2).ok()?;
        Some((Range { hi: mid, ..*self }, Range { lo: mid, ..*self }))
    }
}

/// One partition of a plan: a key range, or a staged part (its object key;
/// the range then only orders the parts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub range: Range,
    pub part: Option<String>,
    /// The rows the planner expects the partition to hold, when it knows
    /// (for the progress's ETA only: nothing is checked against it).
    pub rows: Option<u64>,
}

impl Planned {
    pub fn range(range: Range) -> Self {
        Planned {
            range,
            part: None,
            rows: None,
        }
    }

    /// The same partition, expected to hold `rows` rows.
    pub fn expecting(self, rows: u64) -> Self {
        Planned {
            rows: Some(rows),
            ..self
        }
    }

    /// Part `index` of a staged result.
    pub fn part(index: usize, key: String) -> Self {
        let i = index as i64;
        Planned {
            range: Range {
                lo: i,
                hi: i + 1,
                null: false,
            },
            part: Some(key),
            rows: None,
        }
    }

    /// The partition's id within its generation.
    pub fn id(&self, job: &str, generation: i64) -> String {
        let r = &self.range;
        format!(
            "{job}/{generation}/{}{}",
            if r.null { "null" } else { "" },
            r.lo
        )
    }
}

impl Range {
    /// `[lo, hi)`, in the key's own terms when its type is known.
    pub fn describe(&self, key: Option<KeyType>) -> String {
        if self.null {
            return "key IS NULL".into();
        }
        let show = |v: i64| key.map_or_else(|| v.to_string(), |k| k.display(v));
        let lo = if self.lo == i64::MIN {
            "-inf".into()
        } else {
            show(self.lo)
        };
        let hi = if self.hi == i64::MAX {
            "+inf".into()
        } else {
            show(self.hi)
        };
        format!("[{lo}, {hi})")
    }
}

impl KeyType {
    /// The key type of a column of `data_type`, when it can be one.
    pub fn of(data_type: &arrow_schema::DataType) -> Option<KeyType> {
        use arrow_schema::DataType;
        Some(match data_type {
            DataType::Int16 | DataType::Int32 | DataType::Int64 => KeyType::Int,
            DataType::Date32 => KeyType::Date,
            DataType::Timestamp(_, tz) => KeyType::Timestamp { tz: tz.is_some() },
            _ => return None,
        })
    }

    /// `v` as a person reads a value of this type.
    pub fn display(&self, v: i64) -> String {
        match self {
            KeyType::Int => v.to_string(),
            KeyType::Date => date_string(v),
            KeyType::Timestamp { tz } => timestamp_string(v, *tz).replace('T', " "),
        }
    }

    /// A literal of this type for `v`, safe to put into SQL.
    pub fn literal(&self, v: i64) -> String {
        match self {
            KeyType::Int => v.to_string(),
            KeyType::Date => format!("DATE '{}'", date_string(v)),
            KeyType::Timestamp { tz: false } => {
                format!(
                    "TIMESTAMP '{}'",
                    timestamp_string(v, false).replace('T', " ")
                )
            }
            KeyType::Timestamp { tz: true } => format!(
                "TIMESTAMPTZ '{}+00'",
                timestamp_string(v, false).replace('T', " ")
            ),
        }
    }

    /// Parse a key value as PostgreSQL/Redshift prints it in text.
    pub fn parse(&self, text: &str) -> Option<i64> {
        let t = text.trim();
        match self {
            KeyType::Int => t.parse().ok(),
            KeyType::Date => parse_date(t),
            KeyType::Timestamp { .. } => parse_timestamp(t),
        }
    }

    /// SQL that draws about [`SAMPLE_KEYS`] keys of `column` at random,
    /// sorted, out of `rows`.
    pub fn sample_sql(query: &str, column: &str, rows: u64) -> String {
        let p = (SAMPLE_KEYS as f64 / rows.max(1) as f64).min(1.0);
        format!(
            "SELECT {c}::text FROM {q} AS shiftload_q WHERE {c} IS NOT NULL AND RANDOM() < {p} ORDER BY {c}",
            c = quote_ident(column),
            q = subquery(query)
        )
    }

    /// SQL that gives min, max and count of `column` over `query`.
    pub fn stats_sql(query: &str, column: &str) -> String {
        format!(
            "SELECT min({c})::text, max({c})::text, count(*)::text FROM {q} AS shiftload_q",
            c = quote_ident(column),
            q = subquery(query)
        )
    }
}

/// The query restricted to one partition.
pub fn partition_sql(query: &str, column: Option<&str>, key: KeyType, r: &Range) -> String {
    let Some(column) = column else {
        return trim_query(query).to_string();
    };
    let c = quote_ident(column);
    let predicate = if r.null {
        format!("{c} IS NULL")
    } else {
        match (r.lo, r.hi) {
            (i64::MIN, i64::MAX) => format!("{c} IS NOT NULL"),
            (i64::MIN, hi) => format!("{c} < {}", key.literal(hi)),
            (lo, i64::MAX) => format!("{c} >= {}", key.literal(lo)),
            (lo, hi) => format!("{c} >= {} AND {c} < {}", key.literal(lo), key.literal(hi)),
        }
    };
    format!(
        "SELECT * FROM {} AS shiftload_q WHERE {predicate}",
        subquery(query)
    )
}

/// Equal ranges over `[min, max]`, quantiles of `sample` (sorted keys), or
/// ranges between explicit boundaries; then the NULL-key partition.
pub fn ranges(
    cfg: &PartitionConfig,
    key: KeyType,
    min: Option<i64>,
    max: Option<i64>,
    rows: u64,
    sample: Option<&[i64]>,
) -> Result<Vec<Range>> {
    let count = || match cfg.count {
        Some(n) => n.max(1) as u64,
        None => rows.div_ceil(cfg.target_rows.max(1)).max(1),
    };
    let mut bounds: Vec<i64> = if !cfg.boundaries.is_empty() {
        cfg.boundaries
            .iter()
            .map(|b| match b {
                Boundary::Int(v) if key == KeyType::Int => Ok(*v),
                Boundary::Text(s) => key.parse(s).ok_or(()),
                Boundary::Int(_) => Err(()),
            })
            .collect::<std::result::Result<_, ()>>()
            .map_err(|_| {
                Error::config(
                    "partition.boundaries",
                    format!(
                        "each boundary must be a value of the key column `{}`'s type",
                        cfg.column
                    ),
                )
            })?
    } else if let (Some(sample), true) = (sample, cfg.split == SplitMode::Quantiles) {
        let n = count() as usize;
        (1..n)
            .filter_map(|i| sample.get(i * sample.len() / n).copied())
            .collect()
    } else if let (Some(min), Some(max)) = (min, max) {
        let n = count();
        let span = (max as i128 - min as i128 + 1).max(1);
        let n = (n as i128).min(span);
        let width = (span + n - 1) / n;
        (1..n).map(|i| (min as i128 + i * width) as i64).collect()
    } else {
        Vec::new()
    };
    bounds.sort_unstable();
    bounds.dedup();
    let mut out = Vec::with_capacity(bounds.len() + 2);
    let mut lo = i64::MIN;
    for b in bounds {
        out.push(Range {
            lo,
            hi: b,
            null: false,
        });
        lo = b;
    }
    out.push(Range {
        lo,
        hi: i64::MAX,
        null: false,
    });
    out.push(Range {
        lo: i64::MIN,
        hi: i64::MIN,
        null: true,
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(count: Option<u32>) -> PartitionConfig {
        PartitionConfig {
            column: "id".into(),
            count,
            target_rows: 100,
            split: SplitMode::Equal,
            boundaries: vec![],
            parallel: 1,
        }
    }

    #[test]
    fn equal_ranges_cover_everything_with_open_ends() {
        let r = ranges(&cfg(Some(4)), KeyType::Int, Some(1), Some(100), 100, None).unwrap();
        let inner: Vec<(i64, i64)> = r.iter().filter(|r| !r.null).map(|r| (r.lo, r.hi)).collect();
        assert_eq!(inner, [(i64::MIN, 26), (26, 51), (51, 76), (76, i64::MAX)]);
        assert!(r.last().unwrap().null);
        // Count from target_rows: 1,000 rows / 100 = 10 ranges.
        let r = ranges(&cfg(None), KeyType::Int, Some(1), Some(1000), 1000, None).unwrap();
        assert_eq!(r.len(), 11);
        // Never more ranges than distinct keys.
        let r = ranges(&cfg(Some(50)), KeyType::Int, Some(5), Some(7), 3, None).unwrap();
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn quantiles_follow_skewed_keys() {
        // 90 % of the keys below 10, the rest spread up to 1000.
        let mut sample: Vec<i64> = (0..900).map(|i| i % 10).collect();
        sample.extend((0..100).map(|i| 10 + i * 10));
        sample.sort_unstable();
        let mut c = cfg(Some(4));
        c.split = SplitMode::Quantiles;
        let r = ranges(&c, KeyType::Int, Some(0), Some(1000), 1000, Some(&sample)).unwrap();
        let bounds: Vec<i64> = r
            .iter()
            .filter(|r| !r.null && r.lo != i64::MIN)
            .map(|r| r.lo)
            .collect();
        // Equal ranges would cut at 250, 500, 750; quantiles cut among the dense keys.
        assert!(
            bounds.iter().filter(|&&b| b < 10).count() >= 2,
            "{bounds:?}"
        );
    }

    #[test]
    fn sql_pushes_the_range_down_with_typed_literals() {
        let r = Range {
            lo: 19_723,
            hi: 19_754,
            null: false,
        };
        assert_eq!(
            partition_sql("select * from t;", Some("day"), KeyType::Date, &r),
            "SELECT * FROM (\nselect * from t\n) AS shiftload_q WHERE \"day\" >= DATE '2024-01-01' AND \"day\" < DATE '2024-02-01'"
        );
        let r = Range {
            lo: i64::MIN,
            hi: 0,
            null: false,
        };
        assert_eq!(
            partition_sql("q", Some("ts"), KeyType::Timestamp { tz: true }, &r),
            "SELECT * FROM (\nq\n) AS shiftload_q WHERE \"ts\" < TIMESTAMPTZ '1970-01-01 00:00:00.000000+00'"
        );
        let null = Range {
            lo: i64::MIN,
            hi: i64::MIN,
            null: true,
        };
        assert!(partition_sql("q", Some("a\"b"), KeyType::Int, &null)
            .ends_with("WHERE \"a\"\"b\" IS NULL"));
    }

    #[test]
    fn key_text_parses() {
        assert_eq!(KeyType::Date.parse("2024-01-01"), Some(19_723));
        assert_eq!(KeyType::Date.parse("1969-12-31"), Some(-1));
        let ts = KeyType::Timestamp { tz: true };
        assert_eq!(ts.parse("1970-01-01 00:00:01.5+00"), Some(1_500_000));
        assert_eq!(ts.parse("1970-01-01 02:00:00+02"), Some(0));
        assert_eq!(ts.parse("1969-12-31 23:59:59.999999"), Some(-1));
    }

    #[test]
    fn split_halves_and_stops_at_one_key() {
        let r = Range {
            lo: 10,
            hi: 20,
            null: false,
        };
        let (a, b) = r.split(0, 100).unwrap();
        assert_eq!((a.lo, a.hi, b.lo, b.hi), (10, 15, 15, 20));
        assert!(Range {
            lo: 10,
            hi: 11,
            null: false
        }
        .split(0, 100)
        .is_none());
        let open = Range {
            lo: 50,
            hi: i64::MAX,
            null: false,
        };
        let (a, b) = open.split(0, 99).unwrap();
        assert_eq!((a.hi, b.lo, b.hi), (75, 75, i64::MAX));
    }
}
