//! Values that do not fit are errors that name the column and the row,
//! never silently changed ones.

use crate::common::*;
use bson::{doc, Bson};

fn values_job(
    query: &str,
    db: &str,
    mapping: &str,
    dead_letter: Option<&std::path::Path>,
) -> String {
    let tail = dead_letter.map_or(String::new(), |p| {
        format!("[dead_letter]\npath = \"{}\"\n", p.display())
    });
    format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"{query}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [mapping]\nid = [\"id\"]\n{mapping}\n[retry]\nmax_attempts = 1\n{tail}"
    )
}

/// PostgreSQL (and Redshift) timestamps reach year 294,276; Unix
/// microseconds in 64 bits end in year 294,247. Past that, a value is a
/// data error naming its column and row, not a date wrapped around to the
/// year −290,000.
#[tokio::test]
async fn a_timestamp_beyond_the_representable_range_is_an_error_not_a_wrap() {
    let table = unique("far");
    let db = unique("far");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int, t timestamp, d date);
         INSERT INTO {table} VALUES (1, '2024-05-06 07:08:09', '2024-05-06'),
                                    (2, '294270-01-01 00:00:00', '2024-05-06'),
                                    (3, '2024-05-06 07:08:09', '294270-01-01');"
    ))
    .await;
    let query = format!("SELECT id, t FROM {table}");
    // Without a dead-letter file: the partition fails, naming column and row.
    let (_d, path) = job(&values_job(&query, &db, "", None));
    let out = run_job(&path);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("`t`"), "{text}");
    assert!(text.contains("out of range"), "{text}");
    let docs = mongo_docs(&db, "c").await;
    for d in &docs {
        let t = d.get_datetime("t").unwrap();
        assert!(
            t.timestamp_millis() > 0,
            "a wrapped timestamp was stored: {d}"
        );
    }
    // With one: the row is set aside, the others are exact.
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("rejected.jsonl");
    let (_d, path) = job(&values_job(&query, &db, "", Some(&dl)));
    let out = shiftload(&["run", "--no-progress", "--restart", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let rejected = std::fs::read_to_string(&dl).unwrap();
    assert_eq!(rejected.lines().count(), 1, "{rejected}");
    assert!(rejected.contains("\"t\""), "{rejected}");
    let want = bson::DateTime::parse_rfc3339_str("2024-05-06T07:08:09Z").unwrap();
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(
        docs,
        vec![
            doc! {"_id": 1, "id": 1, "t": want},
            doc! {"_id": 3, "id": 3, "t": want},
        ]
    );

    // A DATE as microseconds past that year: an error, not i64::MAX.
    let db2 = unique("far");
    let query = format!("SELECT id, d FROM {table}");
    let (_d, path) = job(&values_job(
        &query,
        &db2,
        "timestamp = \"micros\"",
        Some(&dl),
    ));
    std::fs::remove_file(&dl).unwrap();
    let out = run_job(&path);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let rejected = std::fs::read_to_string(&dl).unwrap();
    assert!(rejected.contains("\"d\""), "{rejected}");
    let docs = mongo_docs(&db2, "c").await;
    assert_eq!(docs.len(), 2);
    for d in &docs {
        assert_eq!(d.get("d"), Some(&Bson::Int64(1_714_953_600_000_000)), "{d}");
    }
    drop_db(&db).await;
    drop_db(&db2).await;
}

/// JSON keeps the text's key order, a repeated key keeps its first place
/// and last value, and a 20-digit integer keeps every digit.
#[tokio::test]
async fn json_keeps_key_order_and_big_integers() {
    let table = unique("json");
    let db = unique("json");
    pg_exec(&format!(
        r#"CREATE TABLE {table} (id int, j json, b jsonb);
         INSERT INTO {table} VALUES
           (1, '{{"z": 1, "a": 2, "m": {{"y": true, "b": null}}, "a": 3, "n": 18446744073709551615}}',
               '{{"zz": 1, "a": [1, 2.5, "x"]}}');"#
    ))
    .await;
    let query = format!("SELECT id, j, b FROM {table}");
    let (_d, path) = job(&values_job(&query, &db, "decimal = \"string\"", None));
    let out = assert_ok(&run_job(&path));
    assert!(out.contains("1 inserted"), "{out}");
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(
        docs,
        vec![doc! {
            "_id": 1, "id": 1,
            "j": {"z": 1, "a": 3, "m": {"y": true, "b": Bson::Null}, "n": "18446744073709551615"},
            // jsonb stores its keys in its own order (shorter first): as
            // PostgreSQL gives them.
            "b": {"a": [1, 2.5, "x"], "zz": 1},
        }]
    );
    let keys: Vec<&str> = docs[0]
        .get_document("j")
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, ["z", "a", "m", "n"]);
    drop_db(&db).await;
}
