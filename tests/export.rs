//! `shiftload export`: the result as Parquet parts and an UNLOAD-style
//! manifest, read back by the staged source and by pyarrow, and resumed
//! after a SIGKILL with no partial part ever listed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::s3::*;
use crate::common::*;
use bson::Document;
use parquet::file::reader::{FileReader, SerializedFileReader};

/// A table of the types an export must keep, `rows` rows with NULLs.
async fn typed_table(rows: u32) -> String {
    let table = unique("exp");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, \
           (CASE WHEN g % 7 = 0 THEN NULL ELSE g * 1.25 - 5000 END)::numeric(12,2) AS amount, \
           TIMESTAMPTZ '2024-03-10 01:30:00+05' + g * INTERVAL '61 minutes' AS at, \
           DATE '2023-12-31' + g AS day, \
           CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ' || g END AS note, \
           CASE WHEN g % 3 = 0 THEN NULL ELSE decode(lpad(to_hex(g), 8, '0'), 'hex') END AS raw, \
           ('{{\"g\": ' || g || ', \"tags\": [\"a\", \"b\"]}}')::jsonb AS doc \
         FROM generate_series(1, {rows}) g"
    ))
    .await;
    table
}

fn export_job(table: &str, location: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\nfetch_rows = 500\n\n\
         [partition]\ncolumn = \"id\"\ncount = 4\nparallel = 2\n\n\
         [mapping]\nid = [\"id\"]\n\n\
         [export]\nlocation = \"{location}\"\nendpoint = \"${{SHIFTLOAD_S3_ENDPOINT}}\"\n{extra}\n"
    ))
}

fn export(path: &Path) -> std::process::Output {
    shiftload(&["export", "--no-progress", path.to_str().unwrap()])
}

/// Every `.parquet` object directly under `dir` (what a listing shows).
fn listed_parts(dir: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    parts.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
    parts.sort();
    parts
}

/// The ids of a Parquet file, read whole with the `parquet` crate; panics
/// on a part that is not a complete Parquet file.
fn part_ids(path: &Path) -> Vec<i64> {
    let file = std::fs::File::open(path).unwrap();
    let reader = SerializedFileReader::new(file)
        .unwrap_or_else(|e| panic!("{} is not a whole Parquet file: {e}", path.display()));
    let mut ids = Vec::new();
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let (_, id) = row.get_column_iter().find(|(n, _)| *n == "id").unwrap();
        ids.push(id.to_string().parse().unwrap());
    }
    ids
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest")).unwrap()).unwrap()
}

fn load_job(location: &str, db: &str) -> (tempfile::TempDir, PathBuf) {
    job(&format!(
        "[source]\n[source.staging]\nlocation = \"{location}\"\nmode = \"existing\"\n\
         endpoint = \"${{SHIFTLOAD_S3_ENDPOINT}}\"\n\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\n\
         [mapping]\nid = [\"id\"]\ndecimal = \"string\"\n"
    ))
}

async fn sorted_docs(db: &str) -> Vec<Document> {
    let mut docs = mongo_docs(db, "c").await;
    docs.sort_by_key(|d| d.get_i32("_id").unwrap());
    docs
}

#[tokio::test]
async fn an_export_to_s3_loads_back_equal_to_a_direct_load() {
    let rows = 3_000;
    let table = typed_table(rows).await;
    let bucket = unique("export").replace('_', "-");
    create_bucket(&bucket);
    let location = format!("s3://{bucket}/out/{table}/");
    let (_d, path) = export_job(&table, &location, "max_file_size = \"1MiB\"");
    let out = assert_ok(&export(&path));
    assert!(out.contains("transfer complete"), "{out}");
    assert!(out.contains("3,000 rows in"), "{out}");
    // The manifest: every part once, counts adding up to the rows.
    let s3 = store(&bucket);
    let key = object_store::path::Path::parse(format!("out/{table}/manifest")).unwrap();
    let bytes = object_store::ObjectStoreExt::get(&s3, &key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["meta"]["record_count"], rows);
    let entries = m["entries"].as_array().unwrap();
    let sum: u64 = entries
        .iter()
        .map(|e| e["meta"]["record_count"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, rows as u64);
    let urls: BTreeSet<_> = entries.iter().map(|e| e["url"].as_str().unwrap()).collect();
    assert_eq!(urls.len(), entries.len(), "a part listed twice");
    assert!(urls.iter().all(|u| u.starts_with(&location)), "{urls:?}");
    let types: Vec<_> = m["schema"]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"]["base"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "integer",
            "numeric",
            "timestamp with time zone",
            "date",
            "character varying",
            "varbyte",
            "super"
        ]
    );

    // Loaded back from S3, and loaded directly: the same documents.
    let (staged_db, direct_db) = (unique("exp_staged"), unique("exp_direct"));
    let (_l, load) = load_job(&location, &staged_db);
    let out = assert_ok(&run_job(&load));
    assert!(out.contains("3,000 inserted"), "{out}");
    let (_j, direct) = simple_job(
        &format!("SELECT * FROM {table}"),
        &direct_db,
        "c",
        "id = [\"id\"]\ndecimal = \"string\"",
    );
    assert_ok(&run_job(&direct));
    let (staged, direct) = (sorted_docs(&staged_db).await, sorted_docs(&direct_db).await);
    assert_eq!(staged.len(), rows as usize);
    for (s, d) in staged.iter().zip(&direct) {
        assert_eq!(s, d);
    }
    // Spot checks that the comparison is of real values.
    let d = &direct[21];
    assert_eq!(d.get_i32("id").unwrap(), 22);
    assert_eq!(d.get_str("amount").unwrap(), "-4972.50");
    assert!(d.get_document("doc").is_ok(), "{d:?}");
    assert!(
        direct[6].get("amount").is_none() || direct[6].get("amount") == Some(&bson::Bson::Null)
    );
    drop_db(&staged_db).await;
    drop_db(&direct_db).await;
}

#[tokio::test]
async fn pyarrow_reads_the_export_value_for_value() {
    let rows = 2_000;
    let table = typed_table(rows).await;
    let dir = tempfile::tempdir().unwrap();
    let location = format!("file://{}/", dir.path().display());
    let (_d, path) = export_job(&table, &location, "compression = \"snappy\"");
    assert_ok(&export(&path));
    // What PostgreSQL holds, in forms pyarrow's values can be compared to.
    let expected = pg_text_rows(&format!(
        "SELECT id, amount::text AS amount, \
           (extract(epoch FROM at) * 1000000)::bigint::text AS at_us, day::text AS day, note, \
           encode(raw, 'hex') AS raw, doc::text AS doc FROM {table} ORDER BY id"
    ))
    .await;
    let want = dir.path().join("expected.json");
    std::fs::write(&want, serde_json::to_vec(&expected).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-export.py");
    let out = std::process::Command::new("python3")
        .args([script, dir.path().to_str().unwrap(), want.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{rows} rows equal")),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn a_killed_export_resumes_and_never_lists_a_partial_part() {
    let rows = 60_000;
    let table = unique("exp_kill");
    // Every 400th row takes 20 ms: the export lasts long enough to be
    // killed in the middle of a partition. Three partitions of about 1.3
    // MiB of Parquet each, in parts of 1 MiB: the third is written alone,
    // a part of it closed (under its temporary name) while the first two
    // are committed.
    pg_exec(&format!(
        "CREATE FUNCTION {table}_slow(x int) RETURNS int AS \
           'SELECT CASE WHEN x % 400 = 0 THEN (SELECT x FROM pg_sleep(0.02)) ELSE x END' \
           LANGUAGE sql VOLATILE; \
         CREATE TABLE {table} AS SELECT g AS id, \
           md5('a' || g) || md5('b' || g) || md5('c' || g) || md5('d' || g) AS pad \
           FROM generate_series(1, {rows}) g"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let location = format!("file://{}/", dir.path().display());
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT {table}_slow(id) AS id, pad FROM {table}\"\n\
         fetch_rows = 200\n\n[partition]\ncolumn = \"id\"\ncount = 3\nparallel = 2\n\n\
         [mapping]\nid = [\"id\"]\n\n[export]\nlocation = \"{location}\"\nmax_file_size = \"1MiB\"\n\
         row_group_rows = 1000\n[checkpoint]\nlease_seconds = 2\n"
    ));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(["export", "--no-progress", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a part is being written and some are committed.
    let tmp = dir.path().join("_shiftload/job/tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let writing = std::fs::read_dir(&tmp)
            .map(|d| d.count() > 0)
            .unwrap_or(false);
        if writing && !listed_parts(dir.path()).is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the export never got going"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What is listed is whole: every part a complete Parquet file.
    let before = listed_parts(dir.path());
    assert!(!before.is_empty());
    for p in &before {
        assert!(!part_ids(p).is_empty(), "{}", p.display());
    }
    assert!(
        !dir.path().join("manifest").exists(),
        "a manifest before the export was done"
    );
    // `status` reads the checkpoint from beside the parts.
    let status = status_json(&path);
    let condition = status["condition"].as_str().unwrap();
    assert!(["running", "unfinished"].contains(&condition), "{status}");
    std::thread::sleep(std::time::Duration::from_secs(3)); // the lease runs out
    let out = assert_ok(&export(&path));
    assert!(out.contains("transfer complete"), "{out}");
    // The manifest lists each part once, and the parts are what is listed.
    let m = manifest(dir.path());
    let urls: Vec<String> = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap().to_string())
        .collect();
    let listed: Vec<String> = listed_parts(dir.path())
        .iter()
        .map(|p| format!("file://{}", p.display()))
        .collect();
    assert_eq!(urls, listed);
    assert_eq!(m["meta"]["record_count"], rows);
    // Every row exactly once.
    let mut ids: Vec<i64> = listed_parts(dir.path())
        .iter()
        .flat_map(|p| part_ids(p))
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=rows as i64).collect::<Vec<_>>());
    assert!(
        std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0,
        "temporary parts left"
    );
    assert_eq!(status_json(&path)["condition"], "complete");
}

fn status_json(path: &Path) -> serde_json::Value {
    let out = shiftload(&["status", "--json", path.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(&out)))
}

#[tokio::test]
async fn an_export_job_needs_no_target_and_run_says_what_to_do() {
    let table = typed_table(10).await;
    let dir = tempfile::tempdir().unwrap();
    let location = format!("file://{}/", dir.path().display());
    let (_d, path) = export_job(&table, &location, "");
    assert_ok(&shiftload(&["validate", path.to_str().unwrap()]));
    let out = run_job(&path);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("shiftload export"),
        "{}",
        stderr(&out)
    );
    let (_e, bad) = export_job(&table, "gs://b/p/", "");
    let out = shiftload(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("export.location"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_partition_that_fails_midway_publishes_none_of_its_parts() {
    let table = unique("exp_fail");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, repeat(md5(g::text), 4) AS pad \
           FROM generate_series(1, 30000) g"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let location = format!("file://{}/", dir.path().display());
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\nfetch_rows = 10000\n\n\
         [mapping]\nid = [\"id\"]\n\n[retry]\nmax_attempts = 2\n\n\
         [export]\nlocation = \"{location}\"\nmax_file_size = \"1MiB\"\n"
    ));
    // The reader dies after its first batch, which filled a whole part.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(["export", "--no-progress", path.to_str().unwrap()])
        .env("SHIFTLOAD_FAILPOINTS", "reader-panic")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("1 partition(s) failed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(listed_parts(dir.path()), Vec::<PathBuf>::new());
    assert!(!dir.path().join("manifest").exists());
    // Without the fault the same export completes, every row once.
    let out = assert_ok(&export(&path));
    assert!(out.contains("30,000 rows in"), "{out}");
    let mut ids: Vec<i64> = listed_parts(dir.path())
        .iter()
        .flat_map(|p| part_ids(p))
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=30_000).collect::<Vec<_>>());
}
