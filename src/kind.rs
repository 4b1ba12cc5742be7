//! How a source typed a column beyond its Arrow type, carried in the Arrow
//! field's metadata so that every later stage (filter, encoder) reads the
//! same fact without knowing the source.

use std::collections::HashMap;

use arrow_schema::Field;

/// Field metadata key under which [`FieldKind`] is stored.
pub const KIND_KEY: &str = "shiftload.kind";

/// A column's meaning at the source, beyond its Arrow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Blank-padded CHAR(n): trailing blanks are padding, not data.
    Char,
    /// JSON, JSONB or Redshift SUPER: text holding a JSON value.
    Json,
    /// Redshift GEOMETRY/GEOGRAPHY: binary holding EWKB.
    Geometry,
}

impl FieldKind {
    fn tag(self) -> &'static str {
        match self {
            FieldKind::Char => "char",
            FieldKind::Json => "json",
            FieldKind::Geometry => "geometry",
        }
    }

    /// The kind recorded on `field`, if any.
    pub fn of(field: &Field) -> Option<FieldKind> {
        match field.metadata().get(KIND_KEY).map(String::as_str) {
            Some("char") => Some(FieldKind::Char),
            Some("json") => Some(FieldKind::Json),
            Some("geometry") => Some(FieldKind::Geometry),
            _ => None,
        }
    }

    /// `field` with this kind recorded in its metadata.
    pub fn mark(self, field: Field) -> Field {
        field.with_metadata(HashMap::from([(
            KIND_KEY.to_string(),
            self.tag().to_string(),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::DataType;

    #[test]
    fn kinds_round_trip_through_metadata() {
        for kind in [FieldKind::Char, FieldKind::Json, FieldKind::Geometry] {
            let f = kind.mark(Field::new("c", DataType::Utf8, true));
            assert_eq!(FieldKind::of(&f), Some(kind));
        }
        assert_eq!(FieldKind::of(&Field::new("c", DataType::Utf8, true)), None);
    }
}
