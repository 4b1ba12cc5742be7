//! What a generation of an incremental job reads, and the watermark a
//! complete generation leaves for the next.

use bson::{doc, Bson, Document};

use crate::plan::KeyType;
use crate::sql::quote_ident;

/// The rows a generation reads: those whose `column` is above `since`
/// (every row when `None`: a full load). `upto` is the column's maximum
/// when the generation was planned: the watermark it leaves once complete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub column: String,
    pub kind: KeyType,
    pub since: Option<i64>,
    pub upto: Option<i64>,
}

/// The watermark of the last complete run: every row whose column was at
/// most `value` when it was planned has been written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    pub column: String,
    pub kind: KeyType,
    pub value: i64,
}

fn kind_name(k: KeyType) -> &'static str {
    match k {
        KeyType::Int => "int",
        KeyType::Date => "date",
        KeyType::Timestamp { tz: false } => "timestamp",
        KeyType::Timestamp { tz: true } => "timestamptz",
    }
}

fn kind_of(name: &str) -> Option<KeyType> {
    Some(match name {
        "int" => KeyType::Int,
        "date" => KeyType::Date,
        "timestamp" => KeyType::Timestamp { tz: false },
        "timestamptz" => KeyType::Timestamp { tz: true },
        _ => return None,
    })
}

fn opt(v: Option<i64>) -> Bson {
    v.map_or(Bson::Null, Bson::Int64)
}

impl Window {
    /// A full load, or the rows above `since`.
    pub fn is_full(&self) -> bool {
        self.since.is_none()
    }

    /// The SQL predicate that keeps the window's rows; `None` for a full
    /// load.
    pub fn predicate(&self) -> Option<String> {
        self.since
            .map(|s| format!("{} > {}", quote_ident(&self.column), self.kind.literal(s)))
    }

    /// The watermark the generation leaves when complete.
    pub fn watermark(&self) -> Option<Watermark> {
        self.upto.map(|value| Watermark {
            column: self.column.clone(),
            kind: self.kind,
            value,
        })
    }

    pub fn to_doc(&self) -> Document {
        doc! {"column": &self.column, "kind": kind_name(self.kind),
        "since": opt(self.since), "upto": opt(self.upto)}
    }

    pub fn from_doc(d: &Document) -> Option<Window> {
        Some(Window {
            column: d.get_str("column").ok()?.to_string(),
            kind: kind_of(d.get_str("kind").ok()?)?,
            since: d.get_i64("since").ok(),
            upto: d.get_i64("upto").ok(),
        })
    }
}

impl Watermark {
    /// The value as a person reads it.
    pub fn display(&self) -> String {
        self.kind.display(self.value)
    }

    pub fn to_doc(&self) -> Document {
        doc! {"column": &self.column, "kind": kind_name(self.kind), "value": self.value,
        "text": self.display()}
    }

    pub fn from_doc(d: &Document) -> Option<Watermark> {
        Some(Watermark {
            column: d.get_str("column").ok()?.to_string(),
            kind: kind_of(d.get_str("kind").ok()?)?,
            value: d.get_i64("value").ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_survives_the_checkpoint_and_reads_above_since() {
        let w = Window {
            column: "updated at".into(),
            kind: KeyType::Timestamp { tz: false },
            since: Some(1_000_000),
            upto: Some(7_200_000_000),
        };
        assert_eq!(Window::from_doc(&w.to_doc()), Some(w.clone()));
        assert_eq!(
            w.predicate().unwrap(),
            "\"updated at\" > TIMESTAMP '1970-01-01 00:00:01.000000'"
        );
        let m = w.watermark().unwrap();
        assert_eq!(m.display(), "1970-01-01 02:00:00.000000");
        assert_eq!(Watermark::from_doc(&m.to_doc()), Some(m));
        let full = Window {
            since: None,
            upto: None,
            kind: KeyType::Int,
            ..w
        };
        assert!(full.is_full() && full.predicate().is_none() && full.watermark().is_none());
        assert_eq!(Window::from_doc(&full.to_doc()), Some(full));
    }
}
