//! `${NAME}` references in job values.

/// Expand `${NAME}` from the environment; `$$` is a literal `$`.
pub(super) fn expand(value: &str, key: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or_else(|| {
                format!("`{key}`: unterminated `${{` (write `$$` for a literal `$`)")
            })?;
            let name = &tail[..end];
            let var = std::env::var(name).map_err(|_| {
                format!("`{key}` refers to environment variable {name}, which is not set")
            })?;
            out.push_str(&var);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}
