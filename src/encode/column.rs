//! One encoder per column and batch: the column's values as plain slices,
//! matched once per value through an enum (a jump table, no virtual call),
//! each writing its BSON element straight into the document buffer.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Time64MicrosecondType, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, TimeUnit};

use super::bson as b;
use super::json::{write_json, BigInts};
use super::{check_encodable, Options};
use crate::config::{DecimalPolicy, GeometryPolicy, JsonPolicy, OverflowPolicy, TimestampPolicy};
use crate::error::Result;
use crate::kind::FieldKind;

/// One column bound to one batch: its values as plain slices, its nulls, and
/// its key pre-encoded. The row loop matches on `values` (a jump table, no
/// virtual call) and writes type byte, key and value into the buffer.
pub(super) struct ColumnEncoder<'a> {
    nulls: Option<NullBuffer>,
    /// The elements' head: type byte, key, NUL.
    head: b::Head,
    values: Values<'a>,
    /// Refuse NaN and ±Infinity.
    finite_only: bool,
}

enum Values<'a> {
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Bool(&'a arrow_array::BooleanArray),
    Str {
        offsets: &'a [i32],
        data: &'a [u8],
        trim: bool,
    },
    LargeStr(&'a arrow_array::LargeStringArray),
    Json(JsonText<'a>, BigInts),
    Bin {
        offsets: &'a [i32],
        data: &'a [u8],
    },
    /// EWKB written as a GeoJSON document.
    GeoJson(&'a arrow_array::BinaryArray, BigInts),
    Decimal {
        values: &'a [i128],
        scale: i8,
        policy: DecimalPolicy,
        overflow: OverflowPolicy,
    },
    Date {
        days: &'a [i32],
        policy: TimestampPolicy,
    },
    Timestamp {
        values: &'a [i64],
        /// Multiplier to microseconds (s, ms, µs), or 0 for nanoseconds.
        to_micros: i64,
        utc: bool,
        policy: TimestampPolicy,
    },
    Time {
        micros: &'a [i64],
        policy: TimestampPolicy,
    },
}

impl ColumnEncoder<'_> {
    /// Refuse NaN and ±Infinity (for targets that cannot store them).
    pub(super) fn finite_only(self, on: bool) -> Self {
        ColumnEncoder {
            finite_only: on,
            ..self
        }
    }

    /// Refuse values that would be BSON Decimal128 where the JSON text had
    /// a big integer (for targets that cannot store Decimal128).
    pub(super) fn without_decimal128(mut self, on: bool) -> Self {
        if let Values::Json(_, big) = &mut self.values {
            big.decimal128 = !on;
        }
        self
    }

    /// About how many bytes this column's element takes in a document of
    /// a batch of `rows` rows: what sizes the first batch's buffers, before
    /// any batch was measured.
    pub(super) fn element_bytes(&self, rows: usize) -> usize {
        let mean = |bytes: usize| bytes / rows.max(1);
        let value = match &self.values {
            Values::I16(_) | Values::I32(_) => 4,
            Values::Bool(_) => 1,
            Values::I64(_) | Values::F32(_) | Values::F64(_) => 8,
            Values::Date { .. } | Values::Timestamp { .. } | Values::Time { .. } => 32,
            Values::Decimal { .. } => 24,
            Values::Str { data, .. } | Values::Bin { data, .. } => 5 + mean(data.len()),
            Values::LargeStr(a) => 5 + mean(a.value_data().len()),
            // Arrays and numbers can take more room in BSON than as text.
            Values::Json(JsonText::Utf8(a), _) => 16 + 2 * mean(a.value_data().len()),
            Values::Json(JsonText::LargeUtf8(a), _) => 16 + 2 * mean(a.value_data().len()),
            Values::GeoJson(a, _) => 64 + 3 * mean(a.value_data().len()),
        };
        self.head.key().len() + 1 + value
    }

    /// Append a NULL element.
    #[inline(always)]
    pub(super) fn put_null(&self, out: &mut Vec<u8>) {
        self.head.put(out, b::NULL, []);
    }

    #[inline(always)]
    pub(super) fn is_null(&self, row: usize) -> bool {
        self.nulls.as_ref().is_some_and(|n| n.is_null(row))
    }

    /// Append the element for a non-null `row`.
    #[inline(always)]
    pub(super) fn encode(&self, row: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        match &self.values {
            Values::I16(v) => self.head.put(out, b::INT32, (v[row] as i32).to_le_bytes()),
            Values::I32(v) => self.head.put(out, b::INT32, v[row].to_le_bytes()),
            Values::I64(v) => self.head.put(out, b::INT64, v[row].to_le_bytes()),
            Values::F32(v) => {
                let x = v[row] as f64;
                if self.finite_only && !x.is_finite() {
                    return Err(non_finite(x));
                }
                self.head.put(out, b::DOUBLE, x.to_le_bytes());
            }
            Values::F64(v) => {
                let x = v[row];
                if self.finite_only && !x.is_finite() {
                    return Err(non_finite(x));
                }
                self.head.put(out, b::DOUBLE, x.to_le_bytes());
            }
            Values::Bool(v) => self.head.put(out, b::BOOLEAN, [v.value(row) as u8]),
            Values::Str {
                offsets,
                data,
                trim,
            } => {
                let start = offsets[row] as usize;
                let mut s = &data[start..offsets[row + 1] as usize];
                if *trim {
                    while let [rest @ .., b' '] = s {
                        s = rest;
                    }
                }
                self.head.put_text(out, &data[start..], s.len());
            }
            Values::LargeStr(v) => {
                let s = v.value(row).as_bytes();
                self.head.put_text(out, s, s.len());
            }
            Values::Json(JsonText::Utf8(a), big) => {
                write_json(out, self.head.key(), a.value(row), *big)?
            }
            Values::Json(JsonText::LargeUtf8(a), big) => {
                write_json(out, self.head.key(), a.value(row), *big)?
            }
            Values::GeoJson(a, big) => {
                let text = super::geo::ewkb_to_geojson(a.value(row))?;
                write_json(out, self.head.key(), &text, *big)?
            }
            Values::Bin { offsets, data } => {
                let bytes = &data[offsets[row] as usize..offsets[row + 1] as usize];
                let [l0, l1, l2, l3] = (bytes.len() as i32).to_le_bytes();
                // The length, then the generic binary subtype.
                self.head.put(out, b::BINARY, [l0, l1, l2, l3, 0]);
                out.extend_from_slice(bytes);
            }
            Values::Decimal {
                values,
                scale,
                policy,
                overflow,
            } => {
                let v = values[row];
                // The common cases here; the rest (and every error) out of line.
                match policy {
                    DecimalPolicy::Decimal128 => match b::decimal128(v, *scale) {
                        Some(bytes) => self.head.put(out, b::DECIMAL128, bytes),
                        None => encode_decimal(v, *scale, *policy, *overflow, &self.head, out)?,
                    },
                    DecimalPolicy::String => self.head.put_decimal(out, v, *scale),
                    DecimalPolicy::Double => {
                        encode_decimal(v, *scale, *policy, *overflow, &self.head, out)?
                    }
                }
            }
            Values::Date { .. } | Values::Timestamp { .. } | Values::Time { .. } => {
                self.encode_temporal(row, out)?
            }
        }
        Ok(())
    }

    /// Append a DATE, TIMESTAMP or TIME element for a non-null `row`.
    #[inline(always)]
    fn encode_temporal(&self, row: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        match &self.values {
            Values::Date { days, policy } => {
                let instant = match days[row] {
                    i32::MAX => Instant::Infinity(true),
                    i32::MIN => Instant::Infinity(false),
                    d => Instant::Day(d as i64),
                };
                encode_instant(instant, *policy, true, &self.head, out)?;
            }
            Values::Timestamp {
                values,
                to_micros,
                utc,
                policy,
            } => {
                let v = values[row];
                let instant = match (*to_micros, v) {
                    (1, i64::MAX) => Instant::Infinity(true),
                    (1, i64::MIN) => Instant::Infinity(false),
                    (1, v) => Instant::Micros(v),
                    (0, v) => Instant::Micros(v.div_euclid(1_000)),
                    (m, v) => Instant::Micros(v.checked_mul(m).ok_or_else(out_of_range)?),
                };
                encode_instant(instant, *policy, *utc, &self.head, out)?;
            }
            Values::Time { micros, policy } => {
                let v = micros[row];
                if *policy == TimestampPolicy::Micros {
                    self.head.put(out, b::INT64, v.to_le_bytes());
                } else {
                    let text = crate::time::time_string(v);
                    self.head.put_text(out, text.as_bytes(), text.len());
                }
            }
            _ => unreachable!("called for temporal columns only"),
        }
        Ok(())
    }
}

fn out_of_range() -> String {
    "timestamp out of range: past year 294,246, beyond 64-bit Unix microseconds".into()
}

/// How integers beyond 64 bits in JSON text are written.
fn big_ints(o: Options) -> BigInts {
    BigInts {
        decimal: o.decimal,
        overflow: o.decimal_overflow,
        decimal128: true,
    }
}

pub(super) fn make_encoder<'a>(
    array: &'a ArrayRef,
    field: &Field,
    key: &[u8],
    o: Options,
) -> Result<ColumnEncoder<'a>> {
    let kind = FieldKind::of(field);
    let values = match array.data_type() {
        DataType::Boolean => Values::Bool(array.as_boolean()),
        DataType::Int16 => Values::I16(array.as_primitive::<Int16Type>().values()),
        DataType::Int32 => Values::I32(array.as_primitive::<Int32Type>().values()),
        DataType::Int64 => Values::I64(array.as_primitive::<Int64Type>().values()),
        DataType::Float32 => Values::F32(array.as_primitive::<Float32Type>().values()),
        DataType::Float64 => Values::F64(array.as_primitive::<Float64Type>().values()),
        DataType::Utf8 | DataType::LargeUtf8
            if kind == Some(FieldKind::Json) && o.json == JsonPolicy::Parse =>
        {
            let text = if array.data_type() == &DataType::Utf8 {
                JsonText::Utf8(array.as_string::<i32>())
            } else {
                JsonText::LargeUtf8(array.as_string::<i64>())
            };
            Values::Json(text, big_ints(o))
        }
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            Values::Str {
                offsets: a.value_offsets(),
                data: a.value_data(),
                trim: kind == Some(FieldKind::Char) && o.trim_char,
            }
        }
        DataType::LargeUtf8 => Values::LargeStr(array.as_string::<i64>()),
        DataType::Binary
            if kind == Some(FieldKind::Geometry) && o.geometry == GeometryPolicy::Geojson =>
        {
            Values::GeoJson(array.as_binary::<i32>(), big_ints(o))
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            Values::Bin {
                offsets: a.value_offsets(),
                data: a.value_data(),
            }
        }
        _ => rich_values(array, field, o)?,
    };
    Ok(ColumnEncoder {
        nulls: array.logical_nulls(),
        head: b::Head::new(key),
        values,
        finite_only: false,
    })
}

/// The values of a DECIMAL, DATE, TIMESTAMP or TIME column, whose BSON type
/// depends on the policy.
fn rich_values<'a>(array: &'a ArrayRef, field: &Field, o: Options) -> Result<Values<'a>> {
    Ok(match array.data_type() {
        DataType::Decimal128(_, scale) => Values::Decimal {
            values: array.as_primitive::<Decimal128Type>().values(),
            scale: *scale,
            policy: o.decimal,
            overflow: o.decimal_overflow,
        },
        DataType::Date32 => Values::Date {
            days: array.as_primitive::<Date32Type>().values(),
            policy: o.timestamp,
        },
        DataType::Timestamp(unit, tz) => {
            let (values, to_micros): (&[i64], i64) = match unit {
                TimeUnit::Second => (
                    array.as_primitive::<TimestampSecondType>().values(),
                    1_000_000,
                ),
                TimeUnit::Millisecond => (
                    array.as_primitive::<TimestampMillisecondType>().values(),
                    1_000,
                ),
                TimeUnit::Microsecond => {
                    (array.as_primitive::<TimestampMicrosecondType>().values(), 1)
                }
                TimeUnit::Nanosecond => {
                    (array.as_primitive::<TimestampNanosecondType>().values(), 0)
                }
            };
            Values::Timestamp {
                values,
                to_micros,
                utc: tz.is_some(),
                policy: o.timestamp,
            }
        }
        DataType::Time64(TimeUnit::Microsecond) => Values::Time {
            micros: array.as_primitive::<Time64MicrosecondType>().values(),
            policy: o.timestamp,
        },
        _ => {
            check_encodable(field)?;
            unreachable!("check_encodable accepts only the types matched here and above")
        }
    })
}

fn non_finite(x: f64) -> String {
    format!("{x} cannot be stored by the target server (FerretDB v1 refuses NaN and ±Infinity)")
}

/// JSON text columns, parsed value by value.
enum JsonText<'a> {
    Utf8(&'a arrow_array::StringArray),
    LargeUtf8(&'a arrow_array::LargeStringArray),
}

#[cold]
#[inline(never)]
fn encode_decimal(
    v: i128,
    scale: i8,
    policy: DecimalPolicy,
    overflow: OverflowPolicy,
    head: &b::Head,
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    match policy {
        DecimalPolicy::Decimal128 => match b::decimal128(v, scale) {
            Some(bytes) => head.put(out, b::DECIMAL128, bytes),
            None if overflow == OverflowPolicy::String => {
                head.put_decimal(out, v, scale);
            }
            None => {
                return Err(format!(
                    "{} has more than 34 significant digits, which BSON Decimal128 cannot hold \
                     exactly; set mapping.decimal_overflow = \"string\" or mapping.decimal = \"string\"",
                    b::decimal_string(v, scale)
                ))
            }
        },
        DecimalPolicy::Double => {
            let f: f64 = b::decimal_string(v, scale)
                .parse()
                .map_err(|e| format!("{e}"))?;
            head.put(out, b::DOUBLE, f.to_le_bytes());
        }
        DecimalPolicy::String => {
            head.put_decimal(out, v, scale);
        }
    }
    Ok(())
}

/// A time point in microseconds, a day, or ±infinity.
enum Instant {
    Micros(i64),
    Day(i64),
    Infinity(bool),
}

#[inline(always)]
fn encode_instant(
    instant: Instant,
    policy: TimestampPolicy,
    utc: bool,
    head: &b::Head,
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    match policy {
        TimestampPolicy::Datetime => {
            let ms = match instant {
                // Truncate toward minus infinity: -1 µs is -1 ms.
                Instant::Micros(us) => us.div_euclid(1_000),
                Instant::Day(d) => d * 86_400_000,
                Instant::Infinity(pos) => {
                    if pos {
                        i64::MAX
                    } else {
                        i64::MIN
                    }
                }
            };
            head.put(out, b::DATETIME, ms.to_le_bytes());
        }
        TimestampPolicy::Micros => {
            let us = match instant {
                Instant::Micros(us) => us,
                Instant::Day(d) => d.checked_mul(86_400_000_000).ok_or_else(out_of_range)?,
                Instant::Infinity(pos) => {
                    if pos {
                        i64::MAX
                    } else {
                        i64::MIN
                    }
                }
            };
            head.put(out, b::INT64, us.to_le_bytes());
        }
        TimestampPolicy::String => {
            let text = match instant {
                Instant::Micros(us) => crate::time::timestamp_string(us, utc),
                Instant::Day(d) => crate::time::date_string(d),
                Instant::Infinity(pos) => {
                    if pos {
                        "infinity".into()
                    } else {
                        "-infinity".into()
                    }
                }
            };
            head.put_text(out, text.as_bytes(), text.len());
        }
    }
    Ok(())
}
