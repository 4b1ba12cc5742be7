//! Keeps secrets out of logs and error messages.
//!
//! Two layers: [`uri`] masks the password of every connection URL in a text,
//! reading a PostgreSQL/Redshift URL with the same parser that connects
//! ([`crate::conninfo`]); [`scrub`] also removes every registered secret
//! from any text (servers and drivers sometimes echo what they were given).
//! [`Stderr`] is the log writer: every log line, human or JSON, goes
//! through [`scrub`].

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use crate::conninfo::{self, ConnInfo};

const MASK: &str = "***";

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remember a secret so that [`scrub`] masks it wherever it appears, in
/// its JSON-escaped form too.
pub fn register_secret(secret: &str) {
    // Secrets of one to three characters would mask ordinary words in free
    // text; inside a URL they are masked by [`uri`] all the same.
    if secret.chars().count() < 4 {
        return;
    }
    let json = serde_json::to_string(secret).expect("a string serialises");
    let json = &json[1..json.len() - 1];
    let mut list = secrets().lock().unwrap_or_else(|e| e.into_inner());
    for s in [secret, json] {
        if !list.iter().any(|known| known == s) {
            list.push(s.to_string());
        }
    }
    // Longest first, so that a secret holding another is masked whole.
    list.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Register the password of a connection URL or `key=value` string: as
/// the parser reads it, as written, and as any looser reading of the text
/// would take it (an unencoded `@` or `/` in a password).
pub fn register_uri(text: &str) {
    if let Ok(info) = ConnInfo::parse(text) {
        if let Some(pw) = &info.password {
            register_secret(pw);
        }
    }
    if let Some(span) = password_span(text, true) {
        let written = &text[span];
        register_secret(written);
        if let Some(decoded) = conninfo::decode(written) {
            register_secret(&decoded);
        }
    }
    for (_, value) in password_pairs(text) {
        register_secret(value.trim_matches('\''));
    }
}

/// Mask every registered secret in `text`, and the password of any URL.
pub fn scrub(text: &str) -> String {
    let mut out = uri(text);
    let list = secrets().lock().unwrap_or_else(|e| e.into_inner());
    for s in list.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// Mask the password of every `scheme://user:password@host…` in `text`,
/// and every `password=…` value.
pub fn uri(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(span) = password_span(rest, false) {
        out.push_str(&rest[..span.start]);
        out.push_str(MASK);
        rest = &rest[span.end..];
    }
    out.push_str(rest);
    mask_password_pairs(&out)
}

/// The byte range of the first URL password in `text` (and where its URL
/// starts). A PostgreSQL/Redshift URL that parses is read as the parser
/// reads it (the user part ends at the first `@` or `/`). Any other URL —
/// MongoDB's, or one that does not parse — is masked generously: from the
/// first `:` after `://` to the last `@` before the next space.
/// With `whole`, `text` is one URL (a configured value), spaces and
/// quotes included.
fn password_span(text: &str, whole: bool) -> Option<std::ops::Range<usize>> {
    let mut from = 0;
    loop {
        let sep = from + text[from..].find("://")?;
        let start = text[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |i| i + 1);
        let body = sep + 3;
        let end = match whole {
            true => text.len(),
            false => text[body..]
                .find(|c: char| c.is_whitespace() || "\"'<>`".contains(c))
                .map_or(text.len(), |i| body + i),
        };
        let token = &text[start..end];
        let parsed = conninfo::split_scheme(token).is_some() && ConnInfo::parse(token).is_ok();
        let authority_end = match parsed {
            // The parser's own rule.
            true => text[body..end].find(['@', '/']).map(|i| body + i),
            false => text[body..end].rfind('@').map(|i| body + i),
        }
        .filter(|&i| text.as_bytes()[i] == b'@');
        if let Some(at) = authority_end {
            if let Some(colon) = text[body..at].find(':') {
                let span = body + colon + 1..at;
                if !span.is_empty() {
                    return Some(span);
                }
            }
        }
        from = end;
    }
}

/// `password=value` pairs (key=value strings, URL parameters), the value
/// up to a space, `&` or `;`, or a whole single-quoted value.
fn password_pairs(text: &str) -> Vec<(usize, &str)> {
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut search = 0;
    while let Some(rel) = lower[search..].find("password") {
        let mut i = search + rel + "password".len();
        search = i;
        let before_ok = search - "password".len() == 0
            || !text.as_bytes()[search - "password".len() - 1].is_ascii_alphanumeric();
        while text[i..].starts_with(' ') {
            i += 1;
        }
        if !before_ok || !text[i..].starts_with('=') {
            continue;
        }
        i += 1;
        while text[i..].starts_with(' ') {
            i += 1;
        }
        let end = if text[i..].starts_with('\'') {
            let mut j = i + 1;
            let bytes = text.as_bytes();
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(text.len())
        } else {
            text[i..]
                .find(|c: char| c.is_whitespace() || c == '&' || c == ';')
                .map_or(text.len(), |e| i + e)
        };
        out.push((i, &text[i..end]));
        search = end;
    }
    out
}

fn mask_password_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, value) in password_pairs(text) {
        out.push_str(&text[last..start]);
        out.push_str(MASK);
        last = start + value.len();
    }
    out.push_str(&text[last..]);
    out
}

/// The log writer: standard error, every write scrubbed of secrets.
/// tracing's formatter hands over one whole event per write.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = scrub(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_uri_passwords() {
        assert_eq!(
            uri("postgresql://bob:s3cr%40t@db.example.com:5439/dev?sslmode=require"),
            "postgresql://bob:***@db.example.com:5439/dev?sslmode=require"
        );
        assert_eq!(
            uri("mongodb://u:p@a:1,b:2/?tls=true and postgres://x@h/d"),
            "mongodb://u:***@a:1,b:2/?tls=true and postgres://x@h/d"
        );
        assert_eq!(
            uri("host=h password=hunter22 user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(
            uri("host=h password = 'a b\\' c' user=u"),
            "host=h password = *** user=u"
        );
    }

    #[test]
    fn short_and_hostile_passwords_are_masked_in_urls() {
        // A one-character password.
        assert_eq!(uri("postgresql://u:x@h/d"), "postgresql://u:***@h/d");
        // An unencoded '/', '#' and '@': the URL does not parse, and the
        // whole span up to the last '@' is masked.
        assert_eq!(
            uri("postgresql://shiftload:S3cr3t/Pw#1@host/db?sslmode=verify-full"),
            "postgresql://shiftload:***@host/db?sslmode=verify-full"
        );
        assert_eq!(
            uri("postgresql://u:p@ss@h/db and more"),
            "postgresql://u:***@h/db and more"
        );
        // A valid URL with '@' in a parameter: the parser's reading.
        assert_eq!(
            uri("postgresql://u:pw@h/db?application_name=a@b"),
            "postgresql://u:***@h/db?application_name=a@b"
        );
    }

    #[test]
    fn scrub_masks_registered_secrets_anywhere() {
        register_uri("postgresql://bob:Tr0ub4dor%26x@h/d");
        let s = scrub("driver said: bad password Tr0ub4dor&x for bob");
        assert!(!s.contains("Tr0ub4dor"), "{s}");
        register_uri("postgresql://shiftload:Qu0te\"d/Pw#1@host/db");
        let s = scrub(r#"{"message":"login Qu0te\"d/Pw#1 refused"}"#);
        assert!(!s.contains("Qu0te"), "{s}");
    }
}
