//! A job file's TOML errors, told without echoing what may be a secret.

/// A TOML error by line and column, without the source line TOML would
/// quote, and with the password of any connection string in the file
/// masked should the message quote it.
pub(super) fn describe(text: &str, e: &toml::de::Error) -> String {
    for line in text.lines() {
        if let Some((_, value)) = line.split_once('=') {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if value.contains("://") || value.to_ascii_lowercase().contains("password") {
                crate::redact::register_uri(value);
            }
        }
    }
    let message = crate::redact::scrub(e.message().trim_end());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            match key_at(text, line) {
                Some(key) => format!("`{key}` (line {line}, column {column}): {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message,
    }
}

/// The dotted key set on line `n` (from 1): its table and its name.
fn key_at(text: &str, n: usize) -> Option<String> {
    let mut table = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            table = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        }
        if i + 1 == n {
            let (key, _) = line.split_once('=')?;
            let key = key.trim();
            return Some(match table.is_empty() {
                true => key.to_string(),
                false => format!("{table}.{key}"),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn position_without_the_line_or_quoted_values() {
        let text = "a = 1\nurl = \"postgresql://u:Hunter2pw@h/d\"\nfetch_rows = \"Hunter2pw\"\n";
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: u32,
            url: String,
            fetch_rows: u32,
        }
        let e = toml::from_str::<T>(text).unwrap_err();
        assert!(e.to_string().contains("Hunter2pw"), "toml itself quotes it");
        let told = super::describe(text, &e);
        assert!(
            told.starts_with("`fetch_rows` (line 3, column 14): "),
            "{told}"
        );
        assert!(!told.contains("Hunter2pw"), "{told}");
    }
}
