//! A job file's TOML errors, told without echoing what may be a secret.

/// A TOML error by line and column, without the source line TOML would
/// quote (it may hold a password) and with quoted values left out.
pub(super) fn describe(text: &str, e: &toml::de::Error) -> String {
    let mut message = String::new();
    let mut quoted = false;
    for c in e.message().chars() {
        match c {
            '"' if quoted => {
                message.push_str("…\"");
                quoted = false;
            }
            '"' => {
                message.push('"');
                quoted = true;
            }
            c if !quoted => message.push(c),
            _ => {}
        }
    }
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", message.trim_end())
        }
        None => message.trim_end().to_string(),
    }
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
        assert!(told.starts_with("line 3, column 14: "), "{told}");
        assert!(!told.contains("Hunter2pw"), "{told}");
    }
}
