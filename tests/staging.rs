//! Staged Parquet parts are found wherever they are, and a part list that
//! does not add up is an error, never a complete copy of less.

use crate::common::s3::*;
use crate::common::*;
use bson::doc;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

/// `rows` rows in a table, staged as two parts under `dir` (a key prefix,
/// as written) of a fresh bucket; the table, the bucket and the parts.
async fn staged(dir: &str, rows: u32) -> (String, String, Vec<(String, u64)>) {
    let table = unique("staged");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, 'row ' || g AS s FROM generate_series(1, {rows}) g"
    ))
    .await;
    let bucket = unique("staged").replace('_', "-");
    create_bucket(&bucket);
    let s = store(&bucket);
    let mut parts = Vec::new();
    for k in 0..2 {
        let key = format!("{dir}/000{k}_part_00.parquet");
        let sql = format!("SELECT * FROM {table} WHERE id % 2 = {k}");
        let n = stage_part(&s, &key, &sql).await;
        parts.push((key, n));
    }
    (table, bucket, parts)
}

fn staged_job(bucket: &str, dir: &str, db: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    job(&format!(
        "[source]\n[source.staging]\nlocation = \"s3://{bucket}/{dir}/\"\nmode = \"existing\"\n\
         endpoint = \"${{SHIFTLOAD_S3_ENDPOINT}}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [mapping]\nid = [\"id\"]\n"
    ))
}

#[tokio::test]
async fn parts_under_a_name_with_odd_characters_are_all_read() {
    let dir = "exports/orders[v2]~{a}^";
    let (_table, bucket, parts) = staged(dir, 300).await;
    let db = unique("odd");
    let (_d, path) = staged_job(&bucket, dir, &db);
    let out = assert_ok(&run_job(&path));
    assert!(out.contains("2 of 2 done"), "{out}");
    assert!(out.contains("300 inserted"), "{out}");
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(docs.len(), 300);
    assert_eq!(docs[41], doc! {"_id": 42, "id": 42, "s": "row 42"});
    // With a manifest that agrees, the same.
    store(&bucket)
        .put(
            &ObjectPath::parse(format!("{dir}/manifest")).unwrap(),
            PutPayload::from(manifest(&bucket, &parts, 300)),
        )
        .await
        .unwrap();
    let out = shiftload(&["run", "--no-progress", "--restart", path.to_str().unwrap()]);
    let text = assert_ok(&out);
    assert!(text.contains("300 already present"), "{text}");
    drop_db(&db).await;
}

#[tokio::test]
async fn an_empty_location_is_an_error_not_a_complete_copy() {
    let bucket = unique("empty").replace('_', "-");
    create_bucket(&bucket);
    let db = unique("empty");
    let (_d, path) = staged_job(&bucket, "nothing/here", &db);
    let out = run_job(&path);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("transfer complete"), "{text}");
    assert!(text.contains("no Parquet part"), "{text}");
}

#[tokio::test]
async fn parts_that_do_not_add_up_to_the_manifest_are_an_error() {
    let dir = "unload/run1";
    let (_table, bucket, parts) = staged(dir, 100).await;
    // The manifest promises a third part (the listing lost it).
    let mut promised = parts.clone();
    promised.push((format!("{dir}/0002_part_00.parquet"), 10));
    store(&bucket)
        .put(
            &ObjectPath::parse(format!("{dir}/manifest")).unwrap(),
            PutPayload::from(manifest(&bucket, &promised, 110)),
        )
        .await
        .unwrap();
    let db = unique("short");
    let (_d, path) = staged_job(&bucket, dir, &db);
    let out = run_job(&path);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("0002_part_00.parquet, which is not there"),
        "{text}"
    );
    assert_eq!(mongo_count(&db, "c").await, 0);
}

#[tokio::test]
async fn staged_batches_follow_a_small_budget_whatever_the_row_count() {
    // 3,000 rows of ~2 KiB in one part; an 8 MiB budget cuts batches at
    // 512 KiB: about 250 rows each, so a dozen batches, not a floor of
    // 1,024 rows (6 MiB of Arrow) whatever the budget.
    let table = unique("staged_wide");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, repeat(md5(g::text), 64) AS s \
         FROM generate_series(1, 3000) g"
    ))
    .await;
    let bucket = unique("wide").replace('_', "-");
    create_bucket(&bucket);
    let n = stage_part(
        &store(&bucket),
        "wide/0000_part_00.parquet",
        &format!("SELECT * FROM {table}"),
    )
    .await;
    assert_eq!(n, 3000);
    let db = unique("staged_wide");
    let (_d, path) = staged_job(&bucket, "wide", &db);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("memory_limit = \"8MiB\"\n{text}")).unwrap();
    let out = assert_ok(&run_job(&path));
    assert!(out.contains("3,000 inserted"), "{out}");
    let batches: u64 = out
        .split(" BSON in ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no batch count: {out}"));
    assert!(batches >= 10, "{batches} batches: {out}");
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(docs.len(), 3000);
    assert_eq!(docs[2999].get_str("s").unwrap().len(), 2048);
    drop_db(&db).await;
}
