//! Which server this is, what to ask it for at startup, and its
//! RowDescription (which Redshift extends from protocol version 1).
//!
//! **`client_protocol_version`.** Redshift returns NUMERIC in binary as an
//! 8/16-byte unscaled integer, and VARBYTE raw, only to clients that ask for
//! protocol 2 at startup; below it NUMERIC must be read as text. PostgreSQL
//! refuses an unknown startup parameter (FATAL), so it is sent only where
//! the server is known to be Redshift before connecting: a Redshift endpoint
//! host name, or an address where an earlier connection of this process met
//! Redshift (the planning connection teaches the partitions' ones). Anything
//! else speaks plain protocol and is recognised at login from its
//! ParameterStatus set: correct either way, faster with 2. Version 2 and not
//! 3: 3 only adds a case-sensitivity flag this reader does not use.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use super::connection::{protocol, Column};
use crate::error::Result;
use crate::source::pgtypes::Dialect;

/// The protocol version asked of a Redshift server.
pub(super) const REDSHIFT_PROTOCOL: u8 = 2;

fn learned() -> &'static Mutex<HashSet<(String, u16)>> {
    static LEARNED: OnceLock<Mutex<HashSet<(String, u16)>>> = OnceLock::new();
    LEARNED.get_or_init(Default::default)
}

/// The `client_protocol_version` to send to `host:port`, if any.
pub(super) fn startup_protocol(host: &str, port: u16) -> Option<u8> {
    let host = host.to_ascii_lowercase();
    let endpoint = [
        ".redshift.amazonaws.com",
        ".redshift-serverless.amazonaws.com",
        ".redshift.amazonaws.com.cn",
        ".redshift-serverless.amazonaws.com.cn",
    ]
    .iter()
    .any(|s| host.ends_with(s));
    let met = learned()
        .lock()
        .map(|l| l.contains(&(host, port)))
        .unwrap_or(false);
    (endpoint || met).then_some(REDSHIFT_PROTOCOL)
}

/// Remember that `host:port` is Redshift.
pub(super) fn learn(host: &str, port: u16) {
    if let Ok(mut l) = learned().lock() {
        l.insert((host.to_ascii_lowercase(), port));
    }
}

/// The dialect a server's startup ParameterStatus set reveals: Redshift
/// reports `padb_version` and `server_version` 8.0.2, and confirms a
/// protocol version with `server_protocol_version` (0 when absent).
pub(super) fn detect(parameters: &HashMap<String, String>) -> Dialect {
    let redshift = parameters.contains_key("padb_version")
        || parameters.get("server_version").map(String::as_str) == Some("8.0.2");
    if !redshift {
        return Dialect::POSTGRES;
    }
    let protocol = parameters
        .get("server_protocol_version")
        .and_then(|v| v.trim().parse::<u8>().ok())
        .unwrap_or(0);
    Dialect::redshift(protocol)
}

/// The columns of a RowDescription body (after the 5-byte header). From
/// protocol 1, Redshift follows each field with schema, table, column and
/// catalog names and an int16 of flags.
pub(super) fn row_description(body: &[u8], extended: bool) -> Result<Vec<Column>> {
    let mut r = Reader(body);
    let count = r.u16()?;
    let mut columns = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name = r.cstr()?;
        let _table = r.take(4)?;
        let _attnum = r.take(2)?;
        let type_oid = r.u32()?;
        let _typlen = r.take(2)?;
        let typmod = r.u32()? as i32;
        let _format = r.take(2)?;
        if extended {
            for _ in 0..4 {
                r.cstr()?;
            }
            let _flags = r.take(2)?;
        }
        columns.push(Column {
            name,
            type_oid,
            typmod,
        });
    }
    if !r.0.is_empty() {
        return Err(protocol(
            "RowDescription longer than its fields (extended metadata not announced?)",
        ));
    }
    Ok(columns)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or_else(|| protocol("short RowDescription"))?;
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn cstr(&mut self) -> Result<String> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| protocol("unterminated name in RowDescription"))?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, name: &str, oid: u32, typmod: i32, extended: bool) {
        out.extend(name.as_bytes());
        out.push(0);
        out.extend(0u32.to_be_bytes());
        out.extend(0u16.to_be_bytes());
        out.extend(oid.to_be_bytes());
        out.extend((-1i16).to_be_bytes());
        out.extend(typmod.to_be_bytes());
        out.extend(0u16.to_be_bytes());
        if extended {
            for s in ["public", "t", name, "dev"] {
                out.extend(s.as_bytes());
                out.push(0);
            }
            out.extend(1u16.to_be_bytes());
        }
    }

    #[test]
    fn extended_row_description() {
        for extended in [false, true] {
            let mut body = 2u16.to_be_bytes().to_vec();
            field(&mut body, "id", 23, -1, extended);
            field(&mut body, "amount", 1700, (8 << 16 | 2) + 4, extended);
            let cols = row_description(&body, extended).unwrap();
            assert_eq!(cols.len(), 2);
            assert_eq!(
                (cols[1].name.as_str(), cols[1].type_oid, cols[1].typmod),
                ("amount", 1700, (8 << 16 | 2) + 4)
            );
            // Read with the wrong expectation, it is an error, not garbage.
            assert!(row_description(&body, !extended).is_err());
        }
    }

    #[test]
    fn redshift_is_recognised_from_its_parameters() {
        let mut p = HashMap::new();
        p.insert("server_version".to_string(), "15.4".to_string());
        assert_eq!(detect(&p), Dialect::POSTGRES);
        p.insert("server_version".to_string(), "8.0.2".to_string());
        assert_eq!(detect(&p), Dialect::redshift(0));
        p.insert("server_protocol_version".to_string(), "2".to_string());
        assert_eq!(detect(&p), Dialect::redshift(2));
    }

    #[test]
    fn protocol_asked_of_redshift_endpoints_only() {
        assert_eq!(
            startup_protocol("ex.abc.us-east-1.redshift.amazonaws.com", 5439),
            Some(2)
        );
        assert_eq!(
            startup_protocol("wg.123.eu-west-1.redshift-serverless.amazonaws.com", 5439),
            Some(2)
        );
        assert_eq!(startup_protocol("db.example.com", 5439), None);
        learn("10.1.2.3", 5439);
        assert_eq!(startup_protocol("10.1.2.3", 5439), Some(2));
        assert_eq!(startup_protocol("10.1.2.3", 5432), None);
    }
}
