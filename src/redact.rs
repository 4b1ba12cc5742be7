//! Keeps secrets out of logs and error messages.
//!
//! Two layers: [`uri`] masks the password in a connection string before it is
//! shown, and [`scrub`] removes every registered secret from any text (driver
//! errors sometimes echo the URI they were given).

use std::sync::{Mutex, OnceLock};

const MASK: &str = "***";

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remember a secret so that [`scrub`] masks it wherever it appears.
pub fn register_secret(secret: &str) {
    // Very short secrets would mask ordinary words; they are still masked in
    // URIs by [`uri`].
    if secret.len() < 4 {
        return;
    }
    let mut list = secrets().lock().unwrap_or_else(|e| e.into_inner());
    if !list.iter().any(|s| s == secret) {
        list.push(secret.to_string());
    }
}

/// Register the password found in a connection URI or key=value string.
pub fn register_uri(text: &str) {
    if let Some(pw) = uri_password(text) {
        register_secret(&pw);
        if let Ok(decoded) = url::form_urlencoded::parse(format!("p={pw}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or(())
        {
            register_secret(&decoded);
        }
    }
    for (key, value) in key_values(text) {
        if key.eq_ignore_ascii_case("password") {
            register_secret(value);
        }
    }
}

/// Mask every registered secret in `text`, and the password part of any URI.
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

/// Mask passwords in every `scheme://user:password@host` and every
/// `password=...` found in `text`.
pub fn uri(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    mask_password_pairs(&out)
}

fn mask_password_pairs(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut search = 0;
    while let Some(rel) = lower[search..].find("password=") {
        let start = search + rel + "password=".len();
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || c == '&' || c == ';')
            .map_or(text.len(), |e| start + e);
        out.push_str(&text[last..start]);
        out.push_str(MASK);
        last = end;
        search = end;
    }
    out.push_str(&text[last..]);
    out
}

fn uri_password(text: &str) -> Option<String> {
    let after = &text[text.find("://")? + 3..];
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..end];
    let userinfo = &authority[..authority.rfind('@')?];
    let pw = &userinfo[userinfo.find(':')? + 1..];
    (!pw.is_empty()).then(|| pw.to_string())
}

fn key_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(|c: char| c.is_whitespace() || c == '&' || c == '?')
        .filter_map(|pair| pair.split_once('='))
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
    }

    #[test]
    fn scrub_masks_registered_secrets_anywhere() {
        register_uri("postgresql://bob:Tr0ub4dor%26x@h/d");
        let s = scrub("driver said: bad password Tr0ub4dor&x for bob");
        assert!(!s.contains("Tr0ub4dor"), "{s}");
    }
}
