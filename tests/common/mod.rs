//! Helpers for the integration tests: they run the real `shiftload` binary
//! against the real PostgreSQL and MongoDB-compatible servers that
//! `scripts/services.sh start` brings up (`scripts/test.sh` does it).
#![allow(dead_code)]

pub mod redshift;
pub mod s3;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

use bson::{doc, Bson, Document};
use futures_util::TryStreamExt;
use tokio_postgres::{NoTls, SimpleQueryMessage};

pub fn pg_url() -> String {
    std::env::var("SHIFTLOAD_PG_URL").expect(
        "SHIFTLOAD_PG_URL is not set: run the tests with scripts/test.sh, \
         or `scripts/services.sh start && . \"${TMPDIR:-/tmp}/shiftload-services/env\"` first",
    )
}

pub fn mongo_uri() -> String {
    std::env::var("MONGODB_URI")
        .expect("MONGODB_URI is not set: run the tests with scripts/test.sh")
}

/// A name unique to this test process and call, usable as a table,
/// database or collection name.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn pg() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg_url(), NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client
}

pub async fn pg_exec(sql: &str) {
    pg().await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// Rows of `sql` as text (None for NULL), keyed by column name.
pub async fn pg_text_rows(sql: &str) -> Vec<BTreeMap<String, Option<String>>> {
    let msgs = pg()
        .await
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

pub async fn mongo() -> mongodb::Client {
    mongodb::Client::with_uri_str(mongo_uri())
        .await
        .expect("MongoDB client")
}

/// Every document of a collection, sorted by `_id`.
pub async fn mongo_docs(db: &str, coll: &str) -> Vec<Document> {
    let c = mongo().await.database(db).collection::<Document>(coll);
    c.find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("cursor")
}

pub async fn mongo_count(db: &str, coll: &str) -> u64 {
    mongo()
        .await
        .database(db)
        .collection::<Document>(coll)
        .count_documents(doc! {})
        .await
        .expect("count")
}

/// Whether the target server stores Decimal128 (FerretDB v1 does not).
pub async fn mongo_has_decimal128() -> bool {
    let info = mongo()
        .await
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .expect("buildInfo");
    !info.contains_key("ferretdbVersion")
}

pub async fn drop_db(db: &str) {
    let _ = mongo().await.database(db).drop().await;
}

/// A job file in a fresh temp dir. `{PG}` and `{MONGO}` in `toml` are
/// replaced by the servers' URLs.
pub fn job(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("job.toml");
    let text = toml
        .replace("{PG}", &pg_url())
        .replace("{MONGO}", &mongo_uri());
    std::fs::write(&path, text).expect("write job");
    (dir, path)
}

/// A minimal job reading `query` into `db.coll`, with extra `[mapping]` lines.
pub fn simple_job(
    query: &str,
    db: &str,
    coll: &str,
    mapping: &str,
) -> (tempfile::TempDir, PathBuf) {
    job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"\"\"{query}\"\"\"\nfetch_rows = 1000\n\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\n\n[mapping]\n{mapping}\n"
    ))
}

pub fn shiftload(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(args)
        .env_remove("SHIFTLOAD_LOG")
        .output()
        .expect("run shiftload")
}

/// `shiftload run JOB` in the background, its output captured.
pub fn spawn_run(path: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(["run", "--no-progress", path.to_str().expect("utf-8 path")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shiftload")
}

pub fn run_job(path: &Path) -> Output {
    shiftload(&["run", "--no-progress", path.to_str().expect("utf-8 path")])
}

/// `shiftload ARGS`, killed and failed if it has not finished within
/// `limit`: for a run that could hang on the server.
pub fn shiftload_within(args: &[&str], limit: std::time::Duration) -> Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(args)
        .env_remove("SHIFTLOAD_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shiftload");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("shiftload's output"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
            panic!(
                "`shiftload {}` did not finish within {limit:?}",
                args.join(" ")
            );
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert a successful run and return its stdout.
pub fn assert_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "shiftload failed ({:?}):\n{}{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// A BSON value as JSON, for comparing embedded documents with JSON text.
pub fn bson_to_json(b: &Bson) -> serde_json::Value {
    use serde_json::Value;
    match b {
        Bson::Null => Value::Null,
        Bson::Boolean(v) => Value::Bool(*v),
        Bson::Int32(v) => Value::from(*v),
        Bson::Int64(v) => Value::from(*v),
        Bson::Double(v) => Value::from(*v),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(a) => Value::Array(a.iter().map(bson_to_json).collect()),
        Bson::Document(d) => Value::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), bson_to_json(v)))
                .collect(),
        ),
        other => panic!("no JSON form for {other:?}"),
    }
}

/// The reference table (scripts/seed-demo.sql) with `rows` rows, under a
/// name of its own.
pub async fn seed_reference(rows: u64) -> String {
    let table = unique("orders");
    let sql = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/seed-demo.sql"
    ))
    .unwrap()
    .replace("demo_orders", &table)
    .replace(":rows", &rows.to_string());
    pg_exec(&sql).await;
    table
}

/// `db.orders` equals the reference table `table` (read with
/// `decimal = "string"`): same ids, same values.
pub async fn assert_reference_copy(table: &str, uri: &str, db: &str) {
    let want = pg_text_rows(&format!(
        "SELECT order_id, status, amount, note FROM {table} ORDER BY order_id"
    ))
    .await;
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let mut docs: Vec<Document> = client
        .database(db)
        .collection::<Document>("orders")
        .find(doc! {})
        .batch_size(10_000)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.sort_by_key(|d| d.get_i64("_id").unwrap());
    assert_eq!(docs.len(), want.len(), "document count");
    for (d, w) in docs.iter().zip(&want) {
        assert_eq!(
            d.get_i64("_id").unwrap().to_string(),
            *w["order_id"].as_ref().unwrap()
        );
        assert_eq!(
            d.get_str("status").unwrap(),
            w["status"].as_ref().unwrap().trim_end()
        );
        assert_eq!(d.get_str("amount").unwrap(), w["amount"].as_ref().unwrap());
        assert_eq!(d.get_str("note").ok(), w["note"].as_deref());
    }
}
