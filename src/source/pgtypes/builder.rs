//! Builds one result column from wire values, row by row.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::ArrayRef;

use super::interval::write_iso8601;
use super::numeric::{numeric_to_i128, text_to_i128, unscaled_to_i128};
use super::{IntervalWire, NumericWire, PgKind};

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Builds one result column from wire values, row by row.
///
/// The wire reader hands each value's bytes (or `None` for NULL) straight
/// from the `DataRow` message; nothing is copied per row except into the
/// Arrow buffers (and, for hex text, a scratch buffer reused across rows).
pub struct ColumnBuilder {
    pub name: String,
    kind: PgKind,
    inner: Builder,
    scratch: Vec<u8>,
}

enum Builder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
        wire: NumericWire,
        /// 10^precision, which every magnitude stays below (computed once:
        /// a 128-bit power per value was about 5 % of the reader's work).
        bound: u128,
    },
    Text(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
}

impl ColumnBuilder {
    pub fn new(name: &str, kind: PgKind, rows: usize) -> Self {
        let inner = Self::builder(kind, rows, rows * 16);
        ColumnBuilder {
            name: name.to_string(),
            kind,
            inner,
            scratch: Vec::new(),
        }
    }

    /// A builder for `rows` values (`data` bytes of text or binary).
    fn builder(kind: PgKind, rows: usize, data: usize) -> Builder {
        match kind {
            PgKind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            PgKind::Int2 => Builder::Int16(Int16Builder::with_capacity(rows)),
            PgKind::Int4 => Builder::Int32(Int32Builder::with_capacity(rows)),
            PgKind::Int8 => Builder::Int64(Int64Builder::with_capacity(rows)),
            PgKind::Float4 => Builder::Float32(Float32Builder::with_capacity(rows)),
            PgKind::Float8 => Builder::Float64(Float64Builder::with_capacity(rows)),
            PgKind::Numeric {
                precision,
                scale,
                wire,
            } => Builder::Decimal {
                builder: Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(precision, scale)
                    .expect("precision and scale checked by numeric_kind"),
                precision,
                scale,
                wire,
                bound: 10u128.pow(precision as u32),
            },
            PgKind::Text { .. }
            | PgKind::Json { .. }
            | PgKind::Super
            | PgKind::Hllsketch
            | PgKind::Interval(_) => Builder::Text(StringBuilder::with_capacity(rows, data)),
            PgKind::Bytea | PgKind::HexBytes | PgKind::Geometry => {
                Builder::Binary(BinaryBuilder::with_capacity(rows, data))
            }
            PgKind::Date => Builder::Date(Date32Builder::with_capacity(rows)),
            PgKind::Timestamp => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows))
            }
            PgKind::Timestamptz => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
            PgKind::Time | PgKind::Timetz => {
                Builder::Time(Time64MicrosecondBuilder::with_capacity(rows))
            }
        }
    }

    /// The result format this column is asked for in (1 binary, 0 text).
    pub fn format(&self) -> i16 {
        self.kind.format()
    }

    /// Append one value in the column's wire form ([`PgKind::format`]), or
    /// a NULL.
    #[inline]
    pub fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match &mut self.inner {
            Builder::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Builder::Int16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Builder::Int32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Builder::Int64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Builder::Float32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Builder::Float64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Builder::Decimal {
                builder: b,
                precision,
                scale,
                wire,
                bound,
            } => {
                let x = match wire {
                    NumericWire::Postgres => numeric_to_i128(v, *scale),
                    NumericWire::Unscaled => unscaled_to_i128(v),
                    NumericWire::Text => text_to_i128(v, *scale),
                }
                .map_err(|e| e.to_string())?;
                if x.unsigned_abs() >= *bound {
                    return Err(format!("value does not fit numeric({precision},{scale})"));
                }
                b.append_value(x);
            }
            Builder::Text(b) => match self.kind {
                PgKind::Interval(wire) => {
                    let (months, days, micros) = interval(v, wire)?;
                    write_iso8601(b, months, days, micros);
                    b.append_value("");
                }
                PgKind::Json { jsonb: true } => match v.split_first() {
                    Some((1, rest)) => b.append_value(utf8(rest)?),
                    _ => return Err("malformed value from the server (jsonb version)".into()),
                },
                _ => b.append_value(utf8(v)?),
            },
            Builder::Binary(b) if matches!(self.kind, PgKind::HexBytes | PgKind::Geometry) => {
                unhex(v, &mut self.scratch)?;
                b.append_value(&self.scratch);
            }
            Builder::Binary(b) => b.append_value(v),
            Builder::Date(b) => {
                let d = i32::from_be_bytes(fixed(v)?);
                // ±infinity are i32::MAX/MIN and stay so.
                b.append_value(match d {
                    i32::MAX | i32::MIN => d,
                    _ => d + PG_EPOCH_DAYS,
                });
            }
            Builder::Timestamp(b) => b.append_value(
                pg_timestamp_to_unix(i64::from_be_bytes(fixed(v)?)).ok_or_else(|| {
                    "timestamp out of range: past year 294,246, beyond 64-bit Unix microseconds"
                        .to_string()
                })?,
            ),
            Builder::Time(b) if self.kind == PgKind::Timetz => {
                let v: [u8; 12] = fixed(v)?;
                let local = i64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                // The zone is in seconds *west* of UTC: UTC = local + zone.
                let zone = i32::from_be_bytes(v[8..].try_into().expect("4 bytes")) as i64;
                b.append_value((local + zone * 1_000_000).rem_euclid(MICROS_PER_DAY));
            }
            Builder::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match &mut self.inner {
            Builder::Bool(b) => b.append_null(),
            Builder::Int16(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Decimal { builder: b, .. } => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
        }
    }

    /// The column so far as an array; the builder starts over, empty, with
    /// room for as many values as this batch had (so that the next batch
    /// does not grow, and copy, its buffers value by value).
    pub fn finish(&mut self) -> ArrayRef {
        let data = match &self.inner {
            Builder::Text(b) => b.values_slice().len(),
            Builder::Binary(b) => b.values_slice().len(),
            _ => 0,
        };
        let array: ArrayRef = match &mut self.inner {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int16(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Decimal { builder: b, .. } => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        };
        self.inner = Self::builder(self.kind, array.len(), data + data / 8);
        array
    }
}

/// Months, days and microseconds of a binary interval in `wire`'s layout.
fn interval(v: &[u8], wire: IntervalWire) -> Result<(i32, i32, i64), String> {
    let i64_at = |v: &[u8], at: usize| i64::from_be_bytes(v[at..at + 8].try_into().expect("8"));
    let i32_at = |v: &[u8], at: usize| i32::from_be_bytes(v[at..at + 4].try_into().expect("4"));
    Ok(match wire {
        IntervalWire::Postgres => {
            let v: [u8; 16] = fixed(v)?;
            (i32_at(&v, 12), i32_at(&v, 8), i64_at(&v, 0))
        }
        IntervalWire::Redshift => {
            let v: [u8; 12] = fixed(v)?;
            (i32_at(&v, 8), 0, i64_at(&v, 0))
        }
        IntervalWire::YearToMonth => (i32::from_be_bytes(fixed(v)?), 0, 0),
        IntervalWire::DayToSecond => (0, 0, i64::from_be_bytes(fixed(v)?)),
    })
}

/// Hex text (either case, an optional `\x` prefix) into `out`.
fn unhex(v: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let v = v.strip_prefix(b"\\x").unwrap_or(v);
    if !v.len().is_multiple_of(2) {
        return Err("malformed hex value from the server (odd length)".into());
    }
    out.clear();
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err("malformed hex value from the server".to_string()),
    };
    for pair in v.chunks_exact(2) {
        out.push(nibble(pair[0])? << 4 | nibble(pair[1])?);
    }
    Ok(())
}

/// Unix microseconds from PostgreSQL microseconds; ±infinity (i64::MAX/MIN)
/// are kept as they are. None past about year 294,246, where Unix
/// microseconds leave 64 bits (PostgreSQL's own range ends in 294,276).
pub fn pg_timestamp_to_unix(v: i64) -> Option<i64> {
    match v {
        i64::MAX | i64::MIN => Some(v),
        _ => v
            .checked_add(PG_EPOCH_MICROS)
            .filter(|&u| u != i64::MAX && u != i64::MIN),
    }
}

#[inline]
fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| "malformed value from the server (unexpected length)".to_string())
}

#[inline]
fn utf8(v: &[u8]) -> Result<&str, String> {
    if v.is_ascii() {
        // SAFETY: ASCII is UTF-8. Checked inline: most text is short ASCII,
        // where a call to the general validator costs more than the check.
        return Ok(unsafe { std::str::from_utf8_unchecked(v) });
    }
    simdutf8::basic::from_utf8(v).map_err(|_| "text is not valid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;

    fn texts(kind: PgKind, values: &[&[u8]]) -> Vec<String> {
        let mut b = ColumnBuilder::new("c", kind, 4);
        for v in values {
            b.append(Some(v)).unwrap();
        }
        let a = b.finish();
        let a = a.as_string::<i32>();
        (0..a.len()).map(|i| a.value(i).to_string()).collect()
    }

    #[test]
    fn a_decimal_beyond_its_precision_is_refused() {
        let kind = PgKind::Numeric {
            precision: 4,
            scale: 2,
            wire: NumericWire::Unscaled,
        };
        let mut b = ColumnBuilder::new("c", kind, 4);
        // Unscaled values: 99.99 and -99.99 fit numeric(4,2); 100.00 does not.
        for ok in [9_999i64, -9_999, 0] {
            b.append(Some(&ok.to_be_bytes())).unwrap();
        }
        for too_big in [10_000i64, -10_000, i64::MAX] {
            let e = b.append(Some(&too_big.to_be_bytes())).unwrap_err();
            assert_eq!(e, "value does not fit numeric(4,2)");
        }
        let a = b.finish();
        let a = a.as_primitive::<arrow_array::types::Decimal128Type>();
        assert_eq!(a.values().to_vec(), [9_999, -9_999, 0]);
        // The widest precision's bound is 10^38 itself.
        let kind = PgKind::Numeric {
            precision: 38,
            scale: 0,
            wire: NumericWire::Text,
        };
        let mut b = ColumnBuilder::new("c", kind, 2);
        b.append(Some("9".repeat(38).as_bytes())).unwrap();
        let e = b.append(Some(format!("1{}", "0".repeat(38)).as_bytes()));
        assert_eq!(e, Err("value does not fit numeric(38,0)".to_string()));
    }

    #[test]
    fn intervals_in_each_layout() {
        let mut pg = Vec::new();
        pg.extend(3_723_000_000i64.to_be_bytes()); // 01:02:03
        pg.extend(4i32.to_be_bytes()); // days
        pg.extend(14i32.to_be_bytes()); // months
        let mut rs = Vec::new();
        rs.extend((4 * MICROS_PER_DAY + 3_723_000_000).to_be_bytes());
        rs.extend(14i32.to_be_bytes());
        assert_eq!(
            texts(PgKind::Interval(IntervalWire::Postgres), &[&pg]),
            ["P1Y2M4DT1H2M3S"]
        );
        assert_eq!(
            texts(PgKind::Interval(IntervalWire::Redshift), &[&rs]),
            ["P1Y2M4DT1H2M3S"]
        );
        assert_eq!(
            texts(
                PgKind::Interval(IntervalWire::YearToMonth),
                &[&(-3i32).to_be_bytes()]
            ),
            ["P-3M"]
        );
        // A 16-byte value where Redshift's 12 are expected is an error.
        let mut b = ColumnBuilder::new("c", PgKind::Interval(IntervalWire::Redshift), 1);
        assert!(b.append(Some(&pg)).is_err());
    }

    #[test]
    fn hex_bytes() {
        let mut b = ColumnBuilder::new("g", PgKind::HexBytes, 2);
        b.append(Some(b"0101000020E6100000")).unwrap();
        b.append(Some(b"\\x00ff")).unwrap();
        assert!(b.append(Some(b"0g")).is_err());
        let a = b.finish();
        let a = a.as_binary::<i32>();
        assert_eq!(a.value(0), [1, 1, 0, 0, 0x20, 0xE6, 0x10, 0, 0]);
        assert_eq!(a.value(1), [0, 0xff]);
    }
}
