//! Secrets on the real servers: a user and password full of URL
//! delimiters through every command, both log formats and the checkpoint
//! collection; a password rotated between an interrupted run and its
//! resumption; the dead-letter file's permissions.

use std::process::Output;

use crate::common::*;
use bson::{doc, Document};
use futures_util::TryStreamExt;

/// In every password below and nowhere else.
const MARK: &str = "Kq7Z";

/// Percent-encode everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn pg_port_db() -> (u16, String) {
    let pg: tokio_postgres::Config = pg_url().parse().unwrap();
    (pg.get_ports()[0], pg.get_dbname().unwrap().to_string())
}

/// A login role `name` with `password` that can read `table`.
async fn role(name: &str, password: &str, table: &str) {
    pg_exec(&format!(
        "CREATE ROLE \"{name}\" LOGIN PASSWORD '{}';
         GRANT SELECT ON {table} TO \"{name}\";",
        password.replace('\'', "''")
    ))
    .await;
}

async fn drop_role(name: &str) {
    pg_exec(&format!("DROP OWNED BY \"{name}\"; DROP ROLE \"{name}\"")).await;
}

/// `shiftload ARGS` with debug logs in `format`; stdout and stderr.
fn shiftload_logged(args: &[&str], json: bool) -> (Output, String) {
    let format = if json { "json" } else { "human" };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(["--log-format", format])
        .args(args)
        .env("SHIFTLOAD_LOG", "debug")
        .output()
        .expect("run shiftload");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    if json {
        for line in stderr(&out).lines().filter(|l| l.starts_with('{')) {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("a JSON log line that does not parse ({e}): {line}"));
        }
    }
    (out, text)
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(MARK),
        "{what}: the password shows in the output:\n{text}"
    );
}

fn job_file(
    url: &str,
    mongo: &str,
    table: &str,
    db: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    job(&format!(
        r#"[source]
url = "{}"
query = "SELECT id, name FROM {table}"
[target]
uri = "{mongo}"
database = "{db}"
collection = "rows"
[mapping]
id = ["id"]
[partition]
column = "id"
count = 3
"#,
        url.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

#[tokio::test]
async fn hostile_urls_never_appear_in_any_output_or_checkpoint() {
    let table = unique("hostile");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, 'n' || g AS name FROM generate_series(1, 300) g"
    ))
    .await;
    let user = &format!("ho/st?i#l@e%u:{}", unique("r"));
    let password = format!("pa/ss?w#o@r%d:'\"{MARK} sp");
    role(user, &password, &table).await;
    let (port, pgdb) = pg_port_db();
    let url_at = |host: &str| {
        format!(
            "postgresql://{}:{}@{host}:{port}/{pgdb}?sslmode=require",
            enc(user),
            enc(&password)
        )
    };
    let url = url_at("127.0.0.1");
    let db = unique("hostile");
    every_command(&url, &table, &db, &[false, true]);
    // The same over IPv6 and a Unix socket (where TLS is not used).
    let socket = std::env::var("SHIFTLOAD_PG_SOCKET_DIR").unwrap();
    every_command(&url_at("[::1]"), &table, &db, &[true]);
    every_command(&url_at(&enc(&socket)), &table, &db, &[false]);
    assert_eq!(mongo_count(&db, "rows").await, 300);
    let checkpoints: Vec<Document> = mongo()
        .await
        .database(&db)
        .collection::<Document>("shiftload_checkpoints")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(!checkpoints.is_empty());
    assert_clean("checkpoint documents", &format!("{checkpoints:?}"));

    // A wrong password, the URL written without encoding (libpq would read
    // part of the password as the port), a malformed escape, and a MongoDB
    // URI with a password: each fails, none shows.
    let wrong = url.replace(&enc(&password), &enc(&format!("wrong{MARK}pw")));
    let unencoded = format!(
        "postgresql://{}:{password}@127.0.0.1:{port}/{pgdb}",
        enc(user)
    );
    let bad_escape = format!("postgresql://u:{MARK}%zz@127.0.0.1:{port}/{pgdb}");
    let mongo_pw = format!("mongodb://app:M0ngo{MARK}pw@127.0.0.1:1/?serverSelectionTimeoutMS=300");
    for (source, target) in [
        (wrong.as_str(), mongo_uri()),
        (unencoded.as_str(), mongo_uri()),
        (bad_escape.as_str(), mongo_uri()),
        (url.as_str(), mongo_pw),
    ] {
        let (_d, path) = job_file(source, &target, &table, &unique("hostile"));
        let p = path.to_str().unwrap();
        for json in [false, true] {
            for args in [vec!["validate", p], vec!["run", "--no-progress", p]] {
                let (out, text) = shiftload_logged(&args, json);
                let what = format!("{args:?} with {}", redact_for_message(source));
                assert_clean(&what, &text);
                if args[0] == "run" {
                    assert!(!out.status.success(), "{what}: {text}");
                }
            }
        }
    }
    drop_role(user).await;
    drop_db(&db).await;
}

/// Every command that reads a job, in the log `formats` given (JSON or
/// not), on a job reading `table` through `url` into `db.rows`.
fn every_command(url: &str, table: &str, db: &str, formats: &[bool]) {
    let (_dir, path) = job_file(url, &mongo_uri(), table, db);
    let p = path.to_str().unwrap();
    for &json in formats {
        for args in [
            vec!["validate", p],
            vec!["plan", p],
            vec!["run", "--no-progress", p],
            vec!["status", p],
            vec!["verify", p],
            vec!["bench", "--stage", "source", p],
            vec!["bench", "--stage", "encode", p],
        ] {
            let (out, text) = shiftload_logged(&args, json);
            assert!(out.status.success(), "{args:?}: {text}");
            assert_clean(&format!("{args:?} json={json}"), &text);
        }
    }
}

/// What a failing assertion may print about a URL: not the password.
fn redact_for_message(url: &str) -> String {
    url.replace(MARK, "****")
}

/// The fingerprint that ties a resumed run to its job holds no secret: a
/// password rotated between an interrupted run and the next resumes it.
#[tokio::test]
async fn a_rotated_password_resumes_the_interrupted_run() {
    let table = seed_reference(60_000).await;
    let user = unique("rot");
    role(&user, "first-pw-1", &table).await;
    let (port, pgdb) = pg_port_db();
    let db = unique("rotate");
    let job_for = |pw: &str| {
        job(&format!(
            r#"[source]
url = "postgresql://{user}:{pw}@127.0.0.1:{port}/{pgdb}?sslmode=disable"
query = "SELECT * FROM {table}"
fetch_rows = 2000
[target]
uri = "{{MONGO}}"
database = "{db}"
collection = "orders"
[mapping]
id = ["order_id"]
decimal = "string"
[partition]
column = "order_id"
count = 10
"#
        ))
    };
    let (_d1, first) = job_for("first-pw-1");
    // Interrupted with SIGTERM part way (exit 130, progress kept).
    let child = spawn_run(&first);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let checkpoints = mongo()
        .await
        .database(&db)
        .collection::<Document>("shiftload_checkpoints");
    let job_doc = checkpoints
        .find_one(doc! {"kind": "job"})
        .await
        .unwrap()
        .unwrap();
    let generation = job_doc.get_i64("generation").unwrap();
    let done_first: Vec<String> = checkpoints
        .find(doc! {"kind": "partition", "generation": generation, "state": "done"})
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .iter()
        .map(|p| p.get_str("_id").unwrap().to_string())
        .collect();
    assert!(done_first.len() < 11, "interrupted before the end");

    pg_exec(&format!("ALTER ROLE \"{user}\" PASSWORD 'second-pw-2'")).await;
    // The old password no longer logs in; the new one resumes the run.
    let out = run_job(&first);
    assert!(
        stderr(&out).contains("password authentication failed"),
        "{}",
        stderr(&out)
    );
    let (_d2, second) = job_for("second-pw-2");
    let out = run_job(&second);
    assert_ok(&out);
    let job_doc = checkpoints
        .find_one(doc! {"kind": "job"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        job_doc.get_i64("generation").unwrap(),
        generation,
        "resumed, not restarted"
    );
    for id in &done_first {
        let p = checkpoints
            .find_one(doc! {"_id": id})
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.get_i32("attempts").unwrap(), 1, "not redone: {p:?}");
    }
    assert_reference_copy(&table, &mongo_uri(), &db).await;
    drop_role(&user).await;
    drop_db(&db).await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_dead_letter_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let table = unique("dl");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int, name text); INSERT INTO {table} VALUES (1, 'kept'), (NULL, 'private value')"
    ))
    .await;
    let db = unique("dl");
    let (dir, path) = simple_job(
        &format!("SELECT id, name FROM {table}"),
        &db,
        "rows",
        "id = [\"id\"]",
    );
    let dead = dir.path().join("rejects.jsonl");
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!("[dead_letter]\npath = \"{}\"\n", dead.display());
    std::fs::write(&path, text).unwrap();
    let out = run_job(&path);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let mode = std::fs::metadata(&dead).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "dead-letter file mode {mode:o}");
    let lines = std::fs::read_to_string(&dead).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(lines.contains("\"column\":\"id\""), "{lines}");
    let docs = mongo_docs(&db, "rows").await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].get_str("name").unwrap(), "kept");
    drop_db(&db).await;
}

/// S3 credentials are read from the environment or the AWS credential
/// chain, never from the job file: a key written there is refused by name,
/// and its value is not repeated.
#[test]
fn s3_keys_in_the_job_file_are_refused() {
    for key in [
        "aws_secret_access_key",
        "access_key_id",
        "secret_access_key",
    ] {
        let (_dir, path) = job(&format!(
            r#"[source]
url = "{{PG}}"
query = "SELECT 1 AS a"
[source.staging]
location = "s3://bucket/prefix/"
{key} = "wJalr{MARK}EXAMPLEKEY"
[target]
uri = "{{MONGO}}"
database = "d"
collection = "c"
"#
        ));
        let out = shiftload(&["validate", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{key}: {}", stderr(&out));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(text.contains(key), "{text}");
        assert_clean(key, &text);
    }
}
