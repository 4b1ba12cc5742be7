//! JSON text (JSON, JSONB, SUPER) into BSON, value for value.
//!
//! `serde_json` checks and splits the text; the values are taken from the
//! raw text of each member ([`RawValue`]), so that:
//! - object keys keep the order of the text;
//! - a key repeated in one object keeps its first place and its last value
//!   (what `JSON.parse` and PostgreSQL's `jsonb` do);
//! - integers keep every digit: int32 or int64 when they fit, otherwise
//!   `mapping.decimal` decides (Decimal128, a string, or — only when asked
//!   for — a double); numbers with a fraction or an exponent are doubles.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::bson::{self as b, cstring_key, put_element, put_str};
use crate::config::{DecimalPolicy, OverflowPolicy};

/// What to do with integers beyond 64 bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BigInts {
    pub decimal: DecimalPolicy,
    pub overflow: OverflowPolicy,
    /// Whether the target stores Decimal128 (FerretDB v1 does not).
    pub decimal128: bool,
}

/// Write the JSON `text` as the BSON element `key` (a cstring).
pub fn write_json(out: &mut Vec<u8>, key: &[u8], text: &str, big: BigInts) -> Result<(), String> {
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    write_value(out, key, raw.get(), big)
}

fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
}

fn write_value(out: &mut Vec<u8>, key: &[u8], text: &str, big: BigInts) -> Result<(), String> {
    match text.as_bytes().first() {
        Some(b'{') => {
            let Members(members) = parse(text)?;
            put_element(out, b::DOCUMENT, key);
            let at = b::begin_doc(out);
            for (k, v) in members {
                if k.contains('\0') {
                    return Err(format!("JSON key {k:?} contains NUL"));
                }
                write_value(out, &cstring_key(&k), v.get(), big)?;
            }
            b::end_doc(out, at);
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = parse(text)?;
            put_element(out, b::ARRAY, key);
            let at = b::begin_doc(out);
            let mut k = Vec::with_capacity(8);
            for (i, item) in items.iter().enumerate() {
                k.clear();
                k.extend_from_slice(i.to_string().as_bytes());
                k.push(0);
                write_value(out, &k, item.get(), big)?;
            }
            b::end_doc(out, at);
        }
        Some(b'"') => {
            let s: String = parse(text)?;
            put_element(out, b::STRING, key);
            put_str(out, s.as_bytes());
        }
        Some(b't' | b'f') => {
            put_element(out, b::BOOLEAN, key);
            out.push(parse::<bool>(text)? as u8);
        }
        Some(b'n') => put_element(out, b::NULL, key),
        _ => write_number(out, key, text, big)?,
    }
    Ok(())
}

/// A JSON number's text (checked by the parser) as int32, int64, a big
/// integer under `big`, or a double.
fn write_number(out: &mut Vec<u8>, key: &[u8], text: &str, big: BigInts) -> Result<(), String> {
    let integer = !text.contains(['.', 'e', 'E']);
    if integer {
        if let Ok(i) = text.parse::<i64>() {
            if let Ok(i) = i32::try_from(i) {
                put_element(out, b::INT32, key);
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                put_element(out, b::INT64, key);
                out.extend_from_slice(&i.to_le_bytes());
            }
            return Ok(());
        }
        return write_big_integer(out, key, text, big);
    }
    let f: f64 = text
        .parse()
        .map_err(|e| format!("JSON number {text}: {e}"))?;
    if !f.is_finite() {
        return Err(format!(
            "JSON number {text} is out of the range of a double"
        ));
    }
    put_element(out, b::DOUBLE, key);
    out.extend_from_slice(&f.to_le_bytes());
    Ok(())
}

fn write_big_integer(
    out: &mut Vec<u8>,
    key: &[u8],
    text: &str,
    big: BigInts,
) -> Result<(), String> {
    let as_string = |out: &mut Vec<u8>| {
        put_element(out, b::STRING, key);
        put_str(out, text.as_bytes());
    };
    match big.decimal {
        DecimalPolicy::String => as_string(out),
        DecimalPolicy::Double => {
            let f: f64 = text
                .parse()
                .map_err(|e| format!("JSON number {text}: {e}"))?;
            put_element(out, b::DOUBLE, key);
            out.extend_from_slice(&f.to_le_bytes());
        }
        DecimalPolicy::Decimal128 if !big.decimal128 => {
            return Err(format!(
                "JSON integer {text} is beyond 64 bits and would be a BSON Decimal128, which the \
                 target server cannot store; set mapping.decimal = \"string\" (exact)"
            ))
        }
        DecimalPolicy::Decimal128 => {
            match text.parse::<i128>().ok().and_then(|v| b::decimal128(v, 0)) {
                Some(bytes) => {
                    put_element(out, b::DECIMAL128, key);
                    out.extend_from_slice(&bytes);
                }
                None if big.overflow == OverflowPolicy::String => as_string(out),
                None => {
                    return Err(format!(
                        "JSON integer {text} has more than 34 significant digits, which BSON \
                         Decimal128 cannot hold exactly; set mapping.decimal_overflow = \"string\" \
                         or mapping.decimal = \"string\""
                    ))
                }
            }
        }
    }
    Ok(())
}

/// An object's members in the order of the text; a repeated key keeps its
/// first place and takes the last value.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'de>, M::Error> {
                let mut members: Vec<(String, &'de RawValue)> = Vec::new();
                let mut seen: HashMap<String, usize> = HashMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: &'de RawValue = map.next_value()?;
                    match seen.get(&k) {
                        Some(&i) => members[i].1 = v,
                        None => {
                            seen.insert(k.clone(), members.len());
                            members.push((k, v));
                        }
                    }
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, Bson, Document, RawDocumentBuf};

    fn doc_of(text: &str, decimal: DecimalPolicy) -> Result<Document, String> {
        let mut out = Vec::new();
        let at = b::begin_doc(&mut out);
        let big = BigInts {
            decimal,
            overflow: OverflowPolicy::Error,
            decimal128: true,
        };
        write_json(&mut out, b"j\0", text, big)?;
        b::end_doc(&mut out, at);
        Ok(Document::try_from(RawDocumentBuf::from_bytes(out).unwrap()).unwrap())
    }

    #[test]
    fn key_order_is_the_texts() {
        let d = doc_of(
            r#"{"z": 1, "a": {"y": 2, "b": 3}, "m": [1, "x"]}"#,
            DecimalPolicy::String,
        )
        .unwrap();
        let j = d.get_document("j").unwrap();
        assert_eq!(j.keys().collect::<Vec<_>>(), ["z", "a", "m"]);
        assert_eq!(
            j.get_document("a").unwrap().keys().collect::<Vec<_>>(),
            ["y", "b"]
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        let d = doc_of(r#"{"a": 1, "b": 2, "a": 3}"#, DecimalPolicy::String).unwrap();
        assert_eq!(d, doc! {"j": {"a": 3, "b": 2}});
    }

    #[test]
    fn integers_keep_every_digit() {
        let d = doc_of(
            r#"[2147483647, 2147483648, -9223372036854775808, 18446744073709551615, 1.5, 1e3]"#,
            DecimalPolicy::String,
        )
        .unwrap();
        assert_eq!(
            d,
            doc! {"j": [2147483647i32, 2147483648i64, i64::MIN, "18446744073709551615", 1.5, 1000.0]}
        );
        let d = doc_of("18446744073709551615", DecimalPolicy::Decimal128).unwrap();
        assert_eq!(
            d.get("j"),
            Some(&Bson::Decimal128(
                "18446744073709551615".parse::<bson::Decimal128>().unwrap()
            ))
        );
        assert!(doc_of(
            "1234567890123456789012345678901234567",
            DecimalPolicy::Decimal128
        )
        .unwrap_err()
        .contains("34 significant digits"));
    }

    #[test]
    fn bad_json_and_out_of_range_numbers_are_errors() {
        assert!(doc_of("{\"a\": }", DecimalPolicy::String)
            .unwrap_err()
            .contains("invalid JSON"));
        assert!(doc_of("1e400", DecimalPolicy::String).is_err());
        assert_eq!(
            doc_of(r#""a\u0000b\n""#, DecimalPolicy::String).unwrap(),
            doc! {"j": "a\u{0}b\n"}
        );
    }
}
