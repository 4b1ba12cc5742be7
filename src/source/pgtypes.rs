//! PostgreSQL/Redshift types → Arrow types, and the binary wire format of
//! each value → Arrow arrays.
//!
//! Values arrive in PostgreSQL's binary format (the extended protocol asks
//! for it). The decoders here read those bytes straight into Arrow builders,
//! one column at a time. `docs/TYPES.md` is the table a user reads; this is
//! the code behind it.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field, TimeUnit};
use tokio_postgres::types::Type;

use crate::error::{Error, Result};
use crate::kind::FieldKind;

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Redshift's SUPER type OID; it reaches clients as JSON text.
const REDSHIFT_SUPER_OID: u32 = 4000;

/// How one result column is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// NUMERIC(precision, scale).
    Numeric {
        precision: u8,
        scale: i8,
    },
    /// TEXT/VARCHAR/NAME; `padded` for CHAR(n).
    Text {
        padded: bool,
    },
    /// JSON, JSONB (binary form has a version byte) and SUPER.
    Json {
        jsonb: bool,
    },
    Bytea,
    Date,
    Timestamp,
    Timestamptz,
    Time,
    Timetz,
}

impl PgKind {
    /// Choose the decoding for a column of type `ty` with type modifier `typmod`.
    pub fn for_column(name: &str, ty: &Type, typmod: i32) -> Result<Self> {
        let kind = match *ty {
            Type::BOOL => PgKind::Bool,
            Type::INT2 => PgKind::Int2,
            Type::INT4 => PgKind::Int4,
            Type::INT8 => PgKind::Int8,
            Type::FLOAT4 => PgKind::Float4,
            Type::FLOAT8 => PgKind::Float8,
            Type::NUMERIC => numeric_kind(name, typmod)?,
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::UNKNOWN => {
                PgKind::Text { padded: false }
            }
            Type::BPCHAR => PgKind::Text { padded: true },
            Type::JSON => PgKind::Json { jsonb: false },
            Type::JSONB => PgKind::Json { jsonb: true },
            Type::BYTEA => PgKind::Bytea,
            Type::DATE => PgKind::Date,
            Type::TIMESTAMP => PgKind::Timestamp,
            Type::TIMESTAMPTZ => PgKind::Timestamptz,
            Type::TIME => PgKind::Time,
            Type::TIMETZ => PgKind::Timetz,
            _ if ty.oid() == REDSHIFT_SUPER_OID || ty.name() == "super" => {
                PgKind::Json { jsonb: false }
            }
            // VARBYTE reaches PostgreSQL-protocol clients under these names.
            _ if matches!(ty.name(), "varbyte" | "varbinary" | "binary varying") => PgKind::Bytea,
            _ => {
                return Err(Error::UnsupportedType {
                    column: name.to_string(),
                    type_name: ty.name().to_string(),
                    hint: "; cast it in the query (for example `col::text`) or leave it out".into(),
                })
            }
        };
        Ok(kind)
    }

    /// The Arrow field this column decodes into.
    pub fn field(&self, name: &str) -> Field {
        let (data_type, kind) = match *self {
            PgKind::Bool => (DataType::Boolean, None),
            PgKind::Int2 => (DataType::Int16, None),
            PgKind::Int4 => (DataType::Int32, None),
            PgKind::Int8 => (DataType::Int64, None),
            PgKind::Float4 => (DataType::Float32, None),
            PgKind::Float8 => (DataType::Float64, None),
            PgKind::Numeric { precision, scale } => (DataType::Decimal128(precision, scale), None),
            PgKind::Text { padded } => (DataType::Utf8, padded.then_some(FieldKind::Char)),
            PgKind::Json { .. } => (DataType::Utf8, Some(FieldKind::Json)),
            PgKind::Bytea => (DataType::Binary, None),
            PgKind::Date => (DataType::Date32, None),
            PgKind::Timestamp => (DataType::Timestamp(TimeUnit::Microsecond, None), None),
            PgKind::Timestamptz => (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                None,
            ),
            PgKind::Time | PgKind::Timetz => (DataType::Time64(TimeUnit::Microsecond), None),
        };
        let field = Field::new(name, data_type, true);
        match kind {
            Some(k) => k.mark(field),
            None => field,
        }
    }
}

fn numeric_kind(name: &str, typmod: i32) -> Result<PgKind> {
    if typmod < 4 {
        return Err(Error::UnsupportedType {
            column: name.to_string(),
            type_name: "numeric without precision and scale".into(),
            hint: "; cast it in the query to the precision you need, e.g. `col::numeric(38,10)`"
                .into(),
        });
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    // PostgreSQL 15 allows a negative scale, stored as 11-bit two's complement.
    let scale_bits = t & 0x7ff;
    let scale = if scale_bits & 0x400 != 0 {
        scale_bits - 0x800
    } else {
        scale_bits
    };
    if !(1..=38).contains(&precision) || !(-38..=38).contains(&scale) {
        return Err(Error::UnsupportedType {
            column: name.to_string(),
            type_name: format!("numeric({precision},{scale})"),
            hint: "; at most 38 digits fit a Decimal128, cast it to a smaller numeric or to text"
                .into(),
        });
    }
    Ok(PgKind::Numeric {
        precision: precision as u8,
        scale: scale as i8,
    })
}

/// Builds one result column from wire values, row by row.
///
/// The wire reader hands each value's bytes (or `None` for NULL) straight
/// from the `DataRow` message; nothing is copied per row except into the
/// Arrow buffers.
pub struct ColumnBuilder {
    pub name: String,
    kind: PgKind,
    inner: Builder,
}

enum Builder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
}

impl ColumnBuilder {
    pub fn new(name: &str, kind: PgKind, rows: usize) -> Self {
        let inner = match kind {
            PgKind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            PgKind::Int2 => Builder::Int16(Int16Builder::with_capacity(rows)),
            PgKind::Int4 => Builder::Int32(Int32Builder::with_capacity(rows)),
            PgKind::Int8 => Builder::Int64(Int64Builder::with_capacity(rows)),
            PgKind::Float4 => Builder::Float32(Float32Builder::with_capacity(rows)),
            PgKind::Float8 => Builder::Float64(Float64Builder::with_capacity(rows)),
            PgKind::Numeric { precision, scale } => Builder::Decimal(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(precision, scale)
                    .expect("precision and scale checked by numeric_kind"),
                precision,
                scale,
            ),
            PgKind::Text { .. } | PgKind::Json { .. } => {
                Builder::Text(StringBuilder::with_capacity(rows, rows * 16))
            }
            PgKind::Bytea => Builder::Binary(BinaryBuilder::with_capacity(rows, rows * 16)),
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
        };
        ColumnBuilder {
            name: name.to_string(),
            kind,
            inner,
        }
    }

    /// Append one value in PostgreSQL's binary format, or a NULL.
    #[inline]
    pub fn append(&mut self, value: Option<&[u8]>) -> std::result::Result<(), String> {
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
            Builder::Decimal(b, precision, scale) => {
                let x = numeric_to_i128(v, *scale).map_err(|e| e.to_string())?;
                if x.unsigned_abs() >= 10u128.pow(*precision as u32) {
                    return Err(format!("value does not fit numeric({precision},{scale})"));
                }
                b.append_value(x);
            }
            Builder::Text(b) => {
                let text = match self.kind {
                    PgKind::Json { jsonb: true } => match v.split_first() {
                        Some((1, rest)) => rest,
                        _ => return Err("malformed value from the server (jsonb version)".into()),
                    },
                    _ => v,
                };
                b.append_value(utf8(text)?);
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
            Builder::Decimal(b, _, _) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
        }
    }

    /// The column so far as an array; the builder starts over, empty.
    pub fn finish(&mut self) -> ArrayRef {
        match &mut self.inner {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int16(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Decimal(b, _, _) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        }
    }
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
fn fixed<const N: usize>(v: &[u8]) -> std::result::Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| "malformed value from the server (unexpected length)".to_string())
}

#[inline]
fn utf8(v: &[u8]) -> std::result::Result<&str, String> {
    simdutf8::basic::from_utf8(v).map_err(|_| "text is not valid UTF-8".to_string())
}

/// Why a NUMERIC cannot become an Arrow Decimal128 at the column's scale.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumericError {
    #[error("NaN cannot be stored as a decimal")]
    NaN,
    #[error("{0}Infinity cannot be stored as a decimal")]
    Infinity(&'static str),
    #[error("value has more digits than 38")]
    Overflow,
    #[error("value has more fractional digits than the column's scale")]
    Inexact,
    #[error("malformed numeric from the server")]
    Malformed,
}

/// Decode PostgreSQL's binary NUMERIC into an unscaled i128 at `scale`.
///
/// The wire form is `ndigits, weight, sign, dscale` (i16 each) and `ndigits`
/// base-10000 digit groups, most significant first; the value is
/// `Σ digit[i] · 10000^(weight − i)`. Leading and trailing zero groups are
/// stripped, so the scale is derived from `weight` and `ndigits`, never from
/// `dscale`. Zero has no groups.
pub fn numeric_to_i128(v: &[u8], scale: i8) -> std::result::Result<i128, NumericError> {
    if v.len() < 8 {
        return Err(NumericError::Malformed);
    }
    let ndigits = i16::from_be_bytes([v[0], v[1]]) as i32;
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err(NumericError::NaN),
        0xD000 => return Err(NumericError::Infinity("+")),
        0xF000 => return Err(NumericError::Infinity("-")),
        _ => return Err(NumericError::Malformed),
    }
    if ndigits < 0 || v.len() != 8 + 2 * ndigits as usize {
        return Err(NumericError::Malformed);
    }
    // Each group i is worth d · 10^(4·(weight − i)) · 10^scale in the
    // unscaled integer; a group below the scale must contribute only zeros.
    let mut acc: i128 = 0;
    for (i, g) in v[8..].chunks_exact(2).enumerate() {
        let d = i16::from_be_bytes([g[0], g[1]]);
        if !(0..10_000).contains(&d) {
            return Err(NumericError::Malformed);
        }
        let e = 4 * (weight - i as i32) + scale as i32;
        let term = if e >= 0 {
            10i128
                .checked_pow(e as u32)
                .and_then(|p| p.checked_mul(d as i128))
                .ok_or(NumericError::Overflow)?
        } else if e > -4 {
            let p = 10i16.pow((-e) as u32);
            if d % p != 0 {
                return Err(NumericError::Inexact);
            }
            (d / p) as i128
        } else if d != 0 {
            return Err(NumericError::Inexact);
        } else {
            0
        };
        acc = acc.checked_add(term).ok_or(NumericError::Overflow)?;
    }
    Ok(if sign == 0x4000 { -acc } else { acc })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, negative: bool, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(if negative { 0x4000u16 } else { 0 }.to_be_bytes());
        v.extend(0u16.to_be_bytes()); // dscale is ignored on purpose
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_groups_and_scale() {
        // 12345.678 = [1, 2345, 6780] weight 1
        assert_eq!(
            numeric_to_i128(&numeric(1, false, &[1, 2345, 6780]), 4),
            Ok(123_456_780)
        );
        // -0.0001 = [1] weight -1
        assert_eq!(numeric_to_i128(&numeric(-1, true, &[1]), 4), Ok(-1));
        // 10^8 = [1] weight 2 (trailing zero groups stripped)
        assert_eq!(
            numeric_to_i128(&numeric(2, false, &[1]), 2),
            Ok(10_000_000_000)
        );
        // zero has no groups
        assert_eq!(numeric_to_i128(&numeric(0, false, &[]), 10), Ok(0));
        // more fractional digits than the scale
        assert_eq!(
            numeric_to_i128(&numeric(-1, false, &[5]), 2),
            Err(NumericError::Inexact)
        );
        let mut nan = numeric(0, false, &[]);
        nan[4..6].copy_from_slice(&0xC000u16.to_be_bytes());
        assert_eq!(numeric_to_i128(&nan, 2), Err(NumericError::NaN));
        // 38 digits whose last group carries trailing zeros beyond the scale:
        // -9999999999999999999999999999.9999999999 at scale 10.
        let mut groups = vec![9999i16; 10];
        groups[9] = 9900;
        assert_eq!(
            numeric_to_i128(&numeric(6, true, &groups), 10),
            Ok(-99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
    }

    #[test]
    fn numeric_typmod() {
        let typmod = ((38 << 16) | 10) + 4;
        assert_eq!(
            numeric_kind("x", typmod).unwrap(),
            PgKind::Numeric {
                precision: 38,
                scale: 10
            }
        );
        assert!(numeric_kind("x", -1).is_err());
        // numeric(5,-2) in PostgreSQL 15
        let typmod = ((5 << 16) | (0x800 - 2)) + 4;
        assert_eq!(
            numeric_kind("x", typmod).unwrap(),
            PgKind::Numeric {
                precision: 5,
                scale: -2
            }
        );
    }

    #[test]
    fn redshift_super_is_json_text() {
        let ty = Type::new(
            "super".into(),
            REDSHIFT_SUPER_OID,
            tokio_postgres::types::Kind::Simple,
            "pg_catalog".into(),
        );
        assert_eq!(
            PgKind::for_column("s", &ty, -1).unwrap(),
            PgKind::Json { jsonb: false }
        );
    }

    #[test]
    fn unknown_type_names_column_and_type() {
        let err = PgKind::for_column("span", &Type::INTERVAL, -1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`span`") && err.contains("interval"), "{err}");
    }
}
