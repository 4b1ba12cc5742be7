//! PostgreSQL/Redshift types → Arrow types, and each value's wire form →
//! Arrow arrays.
//!
//! The result format of each column is chosen after Describe
//! ([`PgKind::format`]): binary where the server's binary layout is known
//! (PostgreSQL's everywhere on PostgreSQL; on Redshift the integer, float,
//! boolean, date, time and text types, NUMERIC only once the server has
//! confirmed protocol version 2, and its own INTERVAL layout), text where it
//! is not. The decoders in [`ColumnBuilder`] read those bytes straight into
//! Arrow builders. `docs/TYPES.md` is the table a user reads; this is the
//! code behind it.

mod builder;
mod interval;
mod numeric;

use arrow_schema::{DataType, Field, TimeUnit};

pub use builder::{pg_timestamp_to_unix, ColumnBuilder};
pub use interval::write_iso8601;
pub use numeric::{numeric_to_i128, text_to_i128, unscaled_to_i128, NumericError};

use crate::error::{Error, Result};
use crate::kind::FieldKind;

/// Type OIDs the reader knows.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const JSONB: u32 = 3802;
    // Redshift's own.
    pub const INTERVAL_YEAR_TO_MONTH: u32 = 1188;
    pub const INTERVAL_DAY_TO_SECOND: u32 = 1190;
    pub const HLLSKETCH: u32 = 2935;
    pub const GEOMETRY: u32 = 3000;
    pub const GEOGRAPHY: u32 = 3001;
    pub const GEOMETRY_HEX: u32 = 3999;
    pub const SUPER: u32 = 4000;
    pub const VARBYTE: u32 = 6551;
}

/// What the server is, as learned at login: it decides the wire form of
/// the types whose layout differs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dialect {
    /// Amazon Redshift (its ParameterStatus set at login says so).
    pub redshift: bool,
    /// Redshift's `server_protocol_version` (0 when it sent none).
    pub protocol: u8,
}

impl Dialect {
    /// PostgreSQL itself.
    pub const POSTGRES: Dialect = Dialect {
        redshift: false,
        protocol: 0,
    };

    /// Redshift with the protocol version it confirmed.
    pub fn redshift(protocol: u8) -> Dialect {
        Dialect {
            redshift: true,
            protocol,
        }
    }
}

/// Which wire form a NUMERIC column arrives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericWire {
    /// PostgreSQL's binary base-10000 groups.
    Postgres,
    /// Redshift's binary unscaled 8/16-byte integer (protocol ≥ 2).
    Unscaled,
    /// Decimal text (Redshift below protocol 2).
    Text,
}

/// Which wire form an interval column arrives in (binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalWire {
    /// PostgreSQL: int64 µs, int32 days, int32 months.
    Postgres,
    /// Redshift: int64 µs, int32 months.
    Redshift,
    /// Redshift's INTERVAL YEAR TO MONTH: int32 months.
    YearToMonth,
    /// Redshift's INTERVAL DAY TO SECOND: int64 µs.
    DayToSecond,
}

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
        wire: NumericWire,
    },
    /// TEXT/VARCHAR/NAME; `padded` for CHAR(n).
    Text {
        padded: bool,
    },
    /// JSON, JSONB (binary form has a version byte).
    Json {
        jsonb: bool,
    },
    /// Redshift SUPER, asked for as JSON text.
    Super,
    /// Redshift HLLSKETCH, asked for as text (JSON or base64).
    Hllsketch,
    /// Raw bytes: BYTEA, and VARBYTE in binary (protocol ≥ 2).
    Bytea,
    /// Bytes sent as hex text: VARBYTE below protocol 2.
    HexBytes,
    /// GEOMETRY and GEOGRAPHY, sent as hex EWKB text.
    Geometry,
    Date,
    Timestamp,
    Timestamptz,
    Time,
    Timetz,
    Interval(IntervalWire),
}

impl PgKind {
    /// Choose the decoding of a column of type `oid` (`type_name` for the
    /// error), type modifier `typmod`, from a server of `dialect`.
    pub fn for_column(
        name: &str,
        type_oid: u32,
        type_name: &str,
        typmod: i32,
        dialect: Dialect,
    ) -> Result<Self> {
        let numeric_wire = match (dialect.redshift, dialect.protocol >= 2) {
            (false, _) => NumericWire::Postgres,
            (true, true) => NumericWire::Unscaled,
            (true, false) => NumericWire::Text,
        };
        let kind = match type_oid {
            oid::BOOL => PgKind::Bool,
            oid::INT2 => PgKind::Int2,
            oid::INT4 => PgKind::Int4,
            oid::INT8 => PgKind::Int8,
            oid::FLOAT4 => PgKind::Float4,
            oid::FLOAT8 => PgKind::Float8,
            oid::NUMERIC => numeric_kind(name, typmod, numeric_wire)?,
            oid::TEXT | oid::VARCHAR | oid::NAME | oid::UNKNOWN => PgKind::Text { padded: false },
            oid::BPCHAR => PgKind::Text { padded: true },
            oid::JSON => PgKind::Json { jsonb: false },
            oid::JSONB => PgKind::Json { jsonb: true },
            oid::BYTEA => PgKind::Bytea,
            oid::DATE => PgKind::Date,
            oid::TIMESTAMP => PgKind::Timestamp,
            oid::TIMESTAMPTZ => PgKind::Timestamptz,
            oid::TIME => PgKind::Time,
            oid::TIMETZ => PgKind::Timetz,
            oid::INTERVAL if dialect.redshift => PgKind::Interval(IntervalWire::Redshift),
            oid::INTERVAL => PgKind::Interval(IntervalWire::Postgres),
            _ if dialect.redshift => match type_oid {
                oid::INTERVAL_YEAR_TO_MONTH => PgKind::Interval(IntervalWire::YearToMonth),
                oid::INTERVAL_DAY_TO_SECOND => PgKind::Interval(IntervalWire::DayToSecond),
                oid::SUPER => PgKind::Super,
                oid::HLLSKETCH => PgKind::Hllsketch,
                oid::VARBYTE if dialect.protocol >= 2 => PgKind::Bytea,
                oid::VARBYTE => PgKind::HexBytes,
                oid::GEOMETRY | oid::GEOMETRY_HEX | oid::GEOGRAPHY => PgKind::Geometry,
                _ => return Err(unsupported(name, type_name)),
            },
            _ => return Err(unsupported(name, type_name)),
        };
        Ok(kind)
    }

    /// The result format to ask for: 1 (binary) or 0 (text).
    pub fn format(&self) -> i16 {
        match self {
            PgKind::Numeric {
                wire: NumericWire::Text,
                ..
            }
            | PgKind::Super
            | PgKind::Hllsketch
            | PgKind::HexBytes
            | PgKind::Geometry => 0,
            _ => 1,
        }
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
            PgKind::Numeric {
                precision, scale, ..
            } => (DataType::Decimal128(precision, scale), None),
            PgKind::Text { padded } => (DataType::Utf8, padded.then_some(FieldKind::Char)),
            PgKind::Json { .. } | PgKind::Super => (DataType::Utf8, Some(FieldKind::Json)),
            PgKind::Hllsketch | PgKind::Interval(_) => (DataType::Utf8, None),
            PgKind::Bytea | PgKind::HexBytes => (DataType::Binary, None),
            PgKind::Geometry => (DataType::Binary, Some(FieldKind::Geometry)),
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

fn unsupported(column: &str, type_name: &str) -> Error {
    Error::UnsupportedType {
        column: column.to_string(),
        type_name: type_name.to_string(),
        hint: "; cast it in the query (for example `col::text`) or leave it out".into(),
    }
}

fn numeric_kind(name: &str, typmod: i32, wire: NumericWire) -> Result<PgKind> {
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
        wire,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmod() {
        let typmod = ((38 << 16) | 10) + 4;
        let kind = |d| PgKind::for_column("x", oid::NUMERIC, "numeric", typmod, d).unwrap();
        assert_eq!(
            kind(Dialect::POSTGRES),
            PgKind::Numeric {
                precision: 38,
                scale: 10,
                wire: NumericWire::Postgres
            }
        );
        // Redshift: text until the server confirms protocol 2.
        assert_eq!(kind(Dialect::redshift(0)).format(), 0);
        assert_eq!(kind(Dialect::redshift(1)).format(), 0);
        assert_eq!(
            kind(Dialect::redshift(2)),
            PgKind::Numeric {
                precision: 38,
                scale: 10,
                wire: NumericWire::Unscaled
            }
        );
        assert_eq!(kind(Dialect::redshift(2)).format(), 1);
        assert!(numeric_kind("x", -1, NumericWire::Postgres).is_err());
        // numeric(5,-2) in PostgreSQL 15
        let typmod = ((5 << 16) | (0x800 - 2)) + 4;
        assert_eq!(
            numeric_kind("x", typmod, NumericWire::Postgres).unwrap(),
            PgKind::Numeric {
                precision: 5,
                scale: -2,
                wire: NumericWire::Postgres
            }
        );
    }

    #[test]
    fn redshift_types_only_from_redshift() {
        let rs = Dialect::redshift(2);
        let kind = |oid, d| PgKind::for_column("c", oid, "t", -1, d);
        assert_eq!(kind(oid::SUPER, rs).unwrap(), PgKind::Super);
        assert_eq!(kind(oid::SUPER, rs).unwrap().format(), 0);
        assert_eq!(kind(oid::VARBYTE, rs).unwrap(), PgKind::Bytea);
        assert_eq!(
            kind(oid::VARBYTE, Dialect::redshift(0)).unwrap(),
            PgKind::HexBytes
        );
        assert_eq!(kind(oid::GEOMETRY, rs).unwrap().format(), 0);
        assert_eq!(
            kind(oid::INTERVAL, rs).unwrap(),
            PgKind::Interval(IntervalWire::Redshift)
        );
        assert_eq!(
            kind(oid::INTERVAL, Dialect::POSTGRES).unwrap(),
            PgKind::Interval(IntervalWire::Postgres)
        );
        // On PostgreSQL, 4000 is whatever a user defined: refused by name.
        let err = kind(oid::SUPER, Dialect::POSTGRES).unwrap_err().to_string();
        assert!(err.contains("`c`") && err.contains("t"), "{err}");
    }
}
