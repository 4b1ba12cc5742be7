//! The memory budget: batch sizes follow the budget and the width of the
//! rows, and a transfer under a tiny budget still completes exactly.

use crate::common::*;

/// `in N batches` from a run summary.
fn batches(summary: &str) -> u64 {
    let tail = &summary[summary
        .find(" BSON in ")
        .expect("summary has a volume line")
        + 9..];
    tail.split_whitespace().next().unwrap().parse().unwrap()
}

async fn wide_table(rows: u64) -> String {
    let table = unique("wide");
    pg_exec(&format!(
        "CREATE TABLE {table} AS
         SELECT i AS id, repeat(md5(i::text), 64) AS body
         FROM generate_series(1, {rows}) i"
    ))
    .await;
    table
}

async fn narrow_table(rows: u64) -> String {
    let table = unique("narrow");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT i AS id, i * 2 AS twice FROM generate_series(1, {rows}) i"
    ))
    .await;
    table
}

fn budget_job(table: &str, db: &str, limit: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    job(&format!(
        "memory_limit = \"{limit}\"\n[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table} ORDER BY id\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n[mapping]\nid = [\"id\"]\n"
    ))
}

#[tokio::test]
async fn batch_size_follows_the_budget_and_the_row_width() {
    let (wide, narrow) = (wide_table(4_000).await, narrow_table(20_000).await);
    let db = unique("m_size");
    // 32 MiB: a batch is cut at 2 MiB of rows. Wide rows (~2 KiB) need
    // several batches; 20,000 narrow rows (~40 bytes) fit one.
    let (_d, path) = budget_job(&wide, &db, "32MiB");
    let wide_32 = batches(&assert_ok(&run_job(&path)));
    assert!(
        (4..=8).contains(&wide_32),
        "wide, 32 MiB: {wide_32} batches"
    );
    // Another table, other documents under the same keys: another target.
    let narrow_db = format!("{db}_n");
    let (_d, path) = budget_job(&narrow, &narrow_db, "32MiB");
    let narrow_32 = batches(&assert_ok(&run_job(&path)));
    assert_eq!(narrow_32, 1, "narrow, 32 MiB");
    drop_db(&narrow_db).await;
    // A larger budget takes the wide rows in fewer, larger batches.
    let (_d, path) = budget_job(&wide, &db, "256MiB");
    let wide_256 = batches(&assert_ok(&run_job(&path)));
    assert_eq!(wide_256, 1, "wide, 256 MiB");
    drop_db(&db).await;
}

#[tokio::test]
async fn tiny_budget_still_transfers_everything_exactly() {
    let table = wide_table(3_000).await;
    let db = unique("m_tiny");
    let (_d, path) = budget_job(&table, &db, "8MiB");
    let out = assert_ok(&run_job(&path));
    assert!(out.contains("3,000 inserted"), "{out}");
    assert!(out.contains("memory budget 8.0 MiB"), "{out}");
    assert!(batches(&out) >= 10, "{out}");
    let want = pg_text_rows(&format!("SELECT id, body FROM {table} ORDER BY id")).await;
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(docs.len(), want.len());
    for (d, w) in docs.iter().zip(&want) {
        assert_eq!(
            d.get_i32("_id").unwrap().to_string(),
            *w["id"].as_ref().unwrap()
        );
        assert_eq!(d.get_str("body").unwrap(), w["body"].as_ref().unwrap());
    }
    drop_db(&db).await;
}

#[test]
fn budget_flag_overrides_and_bad_sizes_are_named() {
    let (_d, path) = job(
        "memory_limit = \"12 parsecs\"\n[source]\nurl = \"{PG}\"\nquery = \"select 1\"\n\
         [target]\nuri = \"{MONGO}\"\ndatabase = \"d\"\ncollection = \"c\"\n",
    );
    let out = shiftload(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("memory_limit") && stderr(&out).contains("parsecs"),
        "{}",
        stderr(&out)
    );
}
