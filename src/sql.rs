//! SQL text shared by the planner, the filter and the sources: quoting,
//! string literals, and the job's query with work pushed into it.

/// The job's query with a projection (`columns`) and a filter (a SQL
/// predicate) pushed in, so that Redshift reads and sends only those.
/// The query is kept on lines of its own: a trailing `--` comment cannot
/// swallow what follows.
pub fn pushdown_sql(query: &str, columns: Option<&[String]>, predicate: Option<&str>) -> String {
    if columns.is_none() && predicate.is_none() {
        return trim_query(query).to_string();
    }
    let select = columns.map_or("*".to_string(), |cs| {
        cs.iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let mut sql = format!(
        "SELECT {select} FROM (\n{}\n) AS shiftload_src",
        trim_query(query)
    );
    if let Some(p) = predicate {
        sql.push_str(" WHERE ");
        sql.push_str(p);
    }
    sql
}

/// The query as a parenthesised subquery, on lines of its own: a trailing
/// `--` comment in it cannot swallow what follows.
pub fn subquery(q: &str) -> String {
    format!("(\n{}\n)", trim_query(q))
}

/// The query without surrounding blanks and trailing semicolons.
pub fn trim_query(q: &str) -> &str {
    q.trim().trim_end_matches(';').trim_end()
}

/// A double-quoted identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Escape SQL text for a Redshift string literal: quotes and backslashes
/// doubled (Redshift reads a backslash in a literal as an escape).
pub fn redshift_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::pushdown_sql;

    #[test]
    fn pushdown_wraps_the_query() {
        let cols = ["a".to_string(), "B c".to_string()];
        assert_eq!(
            pushdown_sql("SELECT * FROM t;  ", None, None),
            "SELECT * FROM t"
        );
        assert_eq!(
            pushdown_sql("SELECT * FROM t -- all", Some(&cols), Some("\"a\" > 1")),
            "SELECT \"a\", \"B c\" FROM (\nSELECT * FROM t -- all\n) AS shiftload_src WHERE \"a\" > 1"
        );
        assert_eq!(
            pushdown_sql("SELECT 1 AS a", None, Some("\"a\" = 1")),
            "SELECT * FROM (\nSELECT 1 AS a\n) AS shiftload_src WHERE \"a\" = 1"
        );
    }
}
