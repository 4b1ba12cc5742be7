use super::*;

const MIN: &str = r#"
[source]
url = "postgresql://u:${SHIFTLOAD_TEST_PW}@h/d"
query = "select 1"
[target]
uri = "mongodb://h"
database = "db"
collection = "c"
"#;

#[test]
fn expands_env_and_applies_defaults() {
    std::env::set_var("SHIFTLOAD_TEST_PW", "pa$$word");
    let job = JobConfig::parse(MIN, Path::new("j.toml")).unwrap();
    assert_eq!(job.source.url, "postgresql://u:pa$$word@h/d");
    assert_eq!(job.source.fetch_rows, 65_536);
    assert_eq!(job.target.writers, 4);
    assert_eq!(job.mapping.null, NullPolicy::Omit);
    assert!(job.mapping.trim_char);
}

#[test]
fn missing_env_names_key_and_variable() {
    let text = MIN.replace("SHIFTLOAD_TEST_PW", "SHIFTLOAD_SURELY_UNSET");
    let err = JobConfig::parse(&text, Path::new("j.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("source.url"), "{err}");
    assert!(err.contains("SHIFTLOAD_SURELY_UNSET"), "{err}");
}

#[test]
fn unknown_key_is_named() {
    std::env::set_var("SHIFTLOAD_TEST_PW", "x");
    let text = MIN.replace("query =", "qurey =");
    let err = JobConfig::parse(&text, Path::new("j.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("qurey"), "{err}");
}

#[test]
fn dollar_escape() {
    assert_eq!(expand("a$$b$c", "k").unwrap(), "a$b$c");
}

#[test]
fn rename_paths_are_checked() {
    std::env::set_var("SHIFTLOAD_TEST_PW", "x");
    let text = format!("{MIN}\n[mapping.rename]\ncity = \"address..city\"\n");
    let err = JobConfig::parse(&text, Path::new("j.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mapping.rename.city"), "{err}");
}
