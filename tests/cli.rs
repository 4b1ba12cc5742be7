//! Bad input through the real binary: each case checks the exit code and
//! that the message names what to fix, and that nothing leaks a password.

use crate::common::*;

const PG_SECRET: &str = "pg-Secret-4711";
const MONGO_SECRET: &str = "mongo-Secret-0815";

fn assert_no_secret(text: &str) {
    for s in [PG_SECRET, MONGO_SECRET, "shiftload-local-pw"] {
        assert!(!text.contains(s), "secret {s:?} leaked: {text}");
    }
}

#[test]
fn unknown_key_is_named() {
    let (_d, path) = job(
        "[source]\nurl = \"{PG}\"\nqurey = \"select 1\"\n[target]\nuri = \"{MONGO}\"\ndatabase = \"d\"\ncollection = \"c\"\n",
    );
    for cmd in ["validate", "run"] {
        let out = shiftload(&[cmd, path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = stderr(&out);
        assert!(
            err.contains("unknown field `qurey`") && err.contains("line 3"),
            "{cmd}: {err}"
        );
        assert_no_secret(&err);
    }
}

#[test]
fn missing_key_is_named() {
    let (_d, path) = job("[source]\nurl = \"{PG}\"\nquery = \"select 1\"\n[target]\nuri = \"{MONGO}\"\ndatabase = \"d\"\n");
    let out = shiftload(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("missing field `collection`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_accepts_a_good_job_without_touching_servers() {
    let (_d, path) = job(
        "[source]\nurl = \"postgresql://u:p@127.0.0.1:1/d\"\nquery = \"select 1\"\n\
         [target]\nuri = \"mongodb://127.0.0.1:1/\"\ndatabase = \"d\"\ncollection = \"c\"\n",
    );
    let out = shiftload(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).ends_with(": ok\n"));
}

#[test]
fn validate_refuses_a_filter_that_cannot_go_into_the_sql() {
    // A backslash in a literal means two things to Redshift and PostgreSQL:
    // `plan` and `run` refuse it, so `validate` must too.
    let (_d, path) = job(
        "[source]\nurl = \"postgresql://u:p@127.0.0.1:1/d\"\nquery = \"select 1\"\n\
         filter = \"note = 'a\\\\b'\"\n\
         [target]\nuri = \"mongodb://127.0.0.1:1/\"\ndatabase = \"d\"\ncollection = \"c\"\n",
    );
    let out = shiftload(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("source.filter"), "{}", stderr(&out));
    assert!(stderr(&out).contains("backslash"), "{}", stderr(&out));
}

#[test]
fn unreachable_postgres_names_host_and_hides_password() {
    let db = unique("cli_pg");
    let (_d, path) = job(&format!(
        "[source]\nurl = \"postgresql://bob:{PG_SECRET}@127.0.0.1:1/nowhere?sslmode=disable\"\nquery = \"select 1\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n"
    ));
    let out = run_job(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to PostgreSQL/Redshift at 127.0.0.1:1/nowhere as user bob"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    assert_no_secret(&err);
}

#[test]
fn wrong_postgres_password_is_reported_without_echoing_it() {
    let url = pg_url().replace("shiftload-local-pw", PG_SECRET);
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{url}\"\nquery = \"select 1\"\n[target]\nuri = \"{{MONGO}}\"\ndatabase = \"d\"\ncollection = \"c\"\n"
    ));
    let out = run_job(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("password authentication failed"), "{err}");
    assert_no_secret(&err);
}

#[test]
fn unreachable_mongodb_names_host_and_hides_password() {
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"select 1\"\n\
         [target]\nuri = \"mongodb://alice:{MONGO_SECRET}@127.0.0.1:1/?serverSelectionTimeoutMS=1500\"\n\
         database = \"d\"\ncollection = \"c\"\n"
    ));
    let out = run_job(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to MongoDB at mongodb://alice:***@127.0.0.1:1/"),
        "{err}"
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn sql_error_surfaces_the_server_message() {
    let db = unique("cli_sql");
    let (_d, path) = simple_job("SELECT * FROM no_such_table_here", &db, "c", "");
    let out = run_job(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("42P01") && err.contains("relation \"no_such_table_here\" does not exist"),
        "{err}"
    );
    assert_eq!(mongo_count(&db, "c").await, 0);
}

#[tokio::test]
async fn unmappable_type_names_column_and_type() {
    let db = unique("cli_type");
    let (_d, path) = simple_job("SELECT 1 AS id, point '(1,2)' AS span", &db, "c", "");
    let out = run_job(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("column `span` has type point"), "{err}");
    assert!(err.contains("cast it in the query"), "{err}");
    assert_eq!(mongo_count(&db, "c").await, 0);
}

#[tokio::test]
async fn mapping_naming_a_missing_column_is_a_config_error() {
    let db = unique("cli_map");
    let (_d, path) = simple_job(
        "SELECT 1 AS id, 'x' AS name",
        &db,
        "c",
        "id = [\"order_id\"]",
    );
    let out = run_job(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("mapping.id")
            && err.contains("`order_id`")
            && err.contains("columns: id, name"),
        "{err}"
    );
}

#[tokio::test]
async fn empty_result_is_a_clean_run_that_writes_nothing() {
    let db = unique("cli_empty");
    let (_d, path) = simple_job("SELECT 1 AS id WHERE false", &db, "c", "id = [\"id\"]");
    let out = assert_ok(&run_job(&path));
    assert!(out.contains("rows read     0"), "{out}");
    assert!(out.contains("0 inserted"), "{out}");
    assert_eq!(mongo_count(&db, "c").await, 0);
}

#[tokio::test]
async fn bad_value_names_column_and_row_key_and_keeps_earlier_writes() {
    let table = unique("cli_nan");
    let db = unique("cli_nan");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int, amount numeric(10,2));
         INSERT INTO {table} SELECT i, i FROM generate_series(1, 50) i;
         INSERT INTO {table} VALUES (51, 'NaN');"
    ))
    .await;
    // Ten rows per batch: the 50 good rows are written before the bad one.
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table} ORDER BY id\"\nfetch_rows = 10\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nwriters = 1\n\
         [mapping]\nid = [\"id\"]\ndecimal = \"string\"\n"
    ));
    // The partition fails (exit 3), the summary says why, and what was
    // written before stays written.
    let out = run_job(&path);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("column `amount`") && report.contains("row 51") && report.contains("NaN"),
        "{report}"
    );
    assert!(report.contains("0 of 1 done, 1 failed"), "{report}");
    assert_eq!(mongo_count(&db, "c").await, 50);
    drop_db(&db).await;
}

#[test]
fn committed_json_schema_matches_the_config_types() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/job.schema.json"
    ))
    .unwrap();
    let out = shiftload(&["schema"]);
    assert!(
        stdout(&out) == committed,
        "schemas/job.schema.json is stale: regenerate it with `shiftload schema > schemas/job.schema.json`"
    );
    for of in ["summary", "status"] {
        let path = format!("{}/schemas/{of}.schema.json", env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            stdout(&shiftload(&["schema", of])) == committed,
            "schemas/{of}.schema.json is stale: regenerate it with \
             `shiftload schema {of} > schemas/{of}.schema.json`"
        );
    }
}

/// Both send paths name the documents the server rejects.
#[tokio::test]
async fn dead_letter_sets_bad_rows_aside_and_writes_the_rest() {
    for send in ["insert_many", "command"] {
        dead_letter_case(send).await;
    }
}

async fn dead_letter_case(send: &str) {
    let table = unique("dl");
    let db = unique("dl");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int, amount numeric(10,2), x float8, j jsonb);
         INSERT INTO {table} SELECT i, i, i FROM generate_series(1, 100) i;
         INSERT INTO {table} VALUES (101, 'NaN', 1, NULL), (NULL, 5, 1, NULL), (103, 1, 'NaN', NULL), (104, 1, 1, '[[1, 2]]');"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("rejected.jsonl");
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nsend = \"{send}\"\n\
         [mapping]\nid = [\"id\"]\ndecimal = \"string\"\n\
         [dead_letter]\npath = \"{}\"\n",
        dl.display()
    ));
    // Complete but for the rows set aside: exit 4, not 0.
    let run = run_job(&path);
    assert_eq!(
        run.status.code(),
        Some(4),
        "{}{}",
        stdout(&run),
        stderr(&run)
    );
    let out = stdout(&run);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| lines.iter().find(|l| pred(l)).cloned();
    // Set aside by the reader: a NaN NUMERIC, with its row key.
    let nan = find(&|l| l["column"] == "amount").expect("NaN numeric set aside");
    assert_eq!(nan["key"], "id=101");
    assert!(nan["reason"].as_str().unwrap().contains("NaN"), "{nan}");
    assert_eq!(nan["job"], "job");
    // Set aside by the encoder: a NULL key.
    let null_key = find(&|l| l["column"] == "id").expect("NULL key set aside");
    assert!(
        null_key["reason"].as_str().unwrap().contains("NULL"),
        "{null_key}"
    );
    // A NaN double and an array inside an array: stored by MongoDB; FerretDB
    // v1 cannot store them: the first is set aside before sending, the
    // second when the server rejects the document.
    let mongodb = mongo_has_decimal128().await;
    let expected_docs = if mongodb { 102 } else { 100 };
    if !mongodb {
        let nan = find(&|l| l["column"] == "x").expect("NaN double set aside");
        assert_eq!(nan["key"], "id=103");
        assert!(nan["reason"].as_str().unwrap().contains("NaN"), "{nan}");
        let refused = find(&|l| l["key"] == "_id: 104").expect("refused document set aside");
        assert!(
            refused["reason"]
                .as_str()
                .unwrap()
                .contains("rejected by the server"),
            "{refused}"
        );
    }
    assert_eq!(lines.len() as u64, 104 - expected_docs, "{lines:?}");
    assert!(
        out.contains(&format!("set aside     {} rows", 104 - expected_docs)),
        "{out}"
    );
    assert_eq!(mongo_count(&db, "c").await, expected_docs);
    drop_db(&db).await;
}

#[tokio::test]
async fn plan_shows_partitions_and_status_shows_progress() {
    let table = unique("plan");
    let db = unique("plan");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT i AS id, (DATE '2024-01-01' + i) AS day FROM generate_series(1, 1000) i;
         INSERT INTO {table} VALUES (NULL, NULL);"
    ))
    .await;
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [mapping]\nid = [\"day\"]\n[partition]\ncolumn = \"day\"\ncount = 4\n"
    ));
    let out = shiftload(&["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("partition key  day"), "{text}");
    assert!(text.contains("1,001 rows"), "{text}");
    assert!(text.contains("partitions     5"), "{text}");
    assert!(text.contains("WHERE \"day\" < DATE '2024-09-08'"), "{text}");
    assert!(text.contains("WHERE \"day\" IS NULL"), "{text}");
    // The plan wrote nothing.
    let out = shiftload(&["status", path.to_str().unwrap()]);
    assert_eq!(stdout(&out), "job job: never run\n");

    // A NULL key cannot make an _id: that row fails its (NULL) partition;
    // the other four are done.
    let out = run_job(&path);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = shiftload(&["status", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(
        text.contains("5 partitions: 4 done, 0 running, 0 pending, 1 failed"),
        "{text}"
    );
    assert!(
        text.contains("key IS NULL") && text.contains("NULL"),
        "{text}"
    );
    assert_eq!(mongo_count(&db, "c").await, 1000);
    drop_db(&db).await;
}

#[tokio::test]
async fn quantile_split_balances_skewed_keys() {
    let table = unique("skew");
    let db = unique("skew");
    // 900 keys packed in 1..900, 100 spread up to 1,000,000.
    pg_exec(&format!(
        "CREATE TABLE {table} AS
           SELECT i AS id FROM generate_series(1, 900) i
           UNION ALL SELECT i * 10000 FROM generate_series(1, 100) i;"
    ))
    .await;
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [mapping]\nid = [\"id\"]\n[partition]\ncolumn = \"id\"\ncount = 4\nsplit = \"quantiles\"\n"
    ));
    assert_ok(&run_job(&path));
    assert_eq!(mongo_count(&db, "c").await, 1000);
    let parts: Vec<bson::Document> = {
        use futures_util::TryStreamExt;
        mongo()
            .await
            .database(&db)
            .collection::<bson::Document>("shiftload_checkpoints")
            .find(bson::doc! {"kind": "partition", "null": false})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    let rows: Vec<i64> = parts.iter().map(|p| p.get_i64("rows").unwrap()).collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    // Equal key ranges would put 900 rows in the first partition.
    assert!(rows.iter().all(|&r| (200..=300).contains(&r)), "{rows:?}");
    drop_db(&db).await;
}

/// `shiftload status job.toml | head`: a reader that closes the pipe early
/// is no error (it was a panic, exit 101).
#[test]
fn a_closed_stdout_is_not_an_error() {
    let (_d, path) = simple_job("SELECT 1 AS id", &unique("pipe"), "c", "");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(["status", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
