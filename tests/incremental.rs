//! `[incremental]` on the real servers: a full load, then runs that read
//! only what changed since the watermark (less the lookback), upserted;
//! late rows, `--full-refresh`, and a killed run that leaves the
//! watermark where it was.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;
use bson::{doc, Bson, Document};

/// `rows` rows, `updated_at` one minute apart from 2026-01-01 00:01.
async fn seed(rows: u32) -> String {
    let table = unique("inc");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, name text, qty int, updated_at timestamp);
         INSERT INTO {table} SELECT i, 'name ' || i, i % 7,
             TIMESTAMP '2026-01-01' + i * INTERVAL '1 minute' FROM generate_series(1, {rows}) i;"
    ))
    .await;
    table
}

fn incremental_job(table: &str, db: &str, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    job(&format!(
        r#"[source]
url = "{{PG}}"
query = "SELECT id, name, qty, updated_at FROM {table}"
fetch_rows = 500
[target]
uri = "{{MONGO}}"
database = "{db}"
collection = "items"
[mapping]
id = ["id"]
[incremental]
column = "updated_at"
lookback = "30m"
{extra}
"#
    ))
}

/// The collection, by `_id`, as (name, qty, updated_at in ms).
async fn collection(db: &str) -> BTreeMap<i32, (String, i32, i64)> {
    mongo_docs(db, "items")
        .await
        .iter()
        .map(|d: &Document| {
            let when = match d.get("updated_at") {
                Some(Bson::DateTime(t)) => t.timestamp_millis(),
                other => panic!("updated_at is {other:?}"),
            };
            let id = d.get_i32("_id").unwrap();
            (
                id,
                (
                    d.get_str("name").unwrap().to_string(),
                    d.get_i32("qty").unwrap(),
                    when,
                ),
            )
        })
        .collect()
}

/// The table, as `collection` shows the collection.
async fn source(table: &str) -> BTreeMap<i32, (String, i32, i64)> {
    pg_text_rows(&format!(
        "SELECT id, name, qty, (extract(epoch FROM updated_at) * 1000)::bigint AS ms FROM {table}"
    ))
    .await
    .into_iter()
    .map(|r| {
        let get = |k: &str| r[k].clone().unwrap();
        let id = get("id").parse().unwrap();
        (
            id,
            (
                get("name"),
                get("qty").parse().unwrap(),
                get("ms").parse().unwrap(),
            ),
        )
    })
    .collect()
}

/// The summary line labelled `label`.
fn summary_line(out: &str, label: &str) -> String {
    out.lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"))
        .trim()
        .to_string()
}

/// The job document's watermark text, if any.
async fn watermark(db: &str) -> Option<String> {
    let job = mongo()
        .await
        .database(db)
        .collection::<Document>("shiftload_checkpoints")
        .find_one(doc! {"kind": "job"})
        .await
        .unwrap()
        .expect("job document");
    job.get_document("watermark")
        .ok()
        .map(|w| w.get_str("text").unwrap().to_string())
}

#[tokio::test]
async fn an_incremental_run_upserts_what_changed_and_the_lookback_overlap() {
    let table = seed(1000).await;
    let db = unique("inc");
    let (_dir, path) = incremental_job(&table, &db, "");
    let first = assert_ok(&run_job(&path));
    assert!(
        summary_line(&first, "mode").contains("full load"),
        "{first}"
    );
    assert_eq!(summary_line(&first, "rows read"), "rows read     1,000");
    assert_eq!(
        watermark(&db).await.as_deref(),
        Some("2026-01-01 16:40:00.000000"),
        "the maximum read, not the clock"
    );

    // 10 updates (moved past the watermark), 5 inserts, nothing else.
    pg_exec(&format!(
        "UPDATE {table} SET name = 'changed ' || id, updated_at = TIMESTAMP '2026-01-02'
             WHERE id BETWEEN 100 AND 109;
         INSERT INTO {table} SELECT i, 'new ' || i, 1, TIMESTAMP '2026-01-02 00:05'
             FROM generate_series(1001, 1005) i;"
    ))
    .await;
    let second = assert_ok(&run_job(&path));
    assert!(
        summary_line(&second, "mode").contains("`updated_at` > 2026-01-01 16:10:00"),
        "{second}"
    );
    // The changes, plus the 30 rows of the last 30 minutes before the
    // watermark (16:11 to 16:40), read again and found unchanged.
    assert_eq!(
        summary_line(&second, "rows read"),
        "rows read     45",
        "{second}"
    );
    assert_eq!(
        summary_line(&second, "documents"),
        "documents     5 inserted, 30 already present, 10 replaced",
        "{second}"
    );
    assert_eq!(collection(&db).await, source(&table).await);
    assert_eq!(
        watermark(&db).await.as_deref(),
        Some("2026-01-02 00:05:00.000000")
    );
    let status = assert_ok(&shiftload(&["status", path.to_str().unwrap()]));
    assert!(
        status.contains("watermark: updated_at = 2026-01-02 00:05:00"),
        "{status}"
    );
    // The last runs, newest first, with the totals of their partitions.
    let runs: Vec<&str> = status
        .lines()
        .skip_while(|l| !l.contains("last runs"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    assert_eq!(runs.len(), 2, "{status}");
    assert!(
        runs[0].contains(
            "run 2, incremental: 45 rows read (5 inserted, 30 already present, 10 replaced) in"
        ),
        "{status}"
    );
    assert!(
        runs[1]
            .contains("run 1, full load: 1,000 rows read (1,000 inserted, 0 already present) in"),
        "{status}"
    );
    assert_ok(&shiftload(&["verify", path.to_str().unwrap()]));

    // Nothing changed: only the overlap is read again.
    let third = assert_ok(&run_job(&path));
    assert_eq!(
        summary_line(&third, "rows read"),
        "rows read     15",
        "{third}"
    );
    drop_db(&db).await;
}

#[tokio::test]
async fn a_late_row_inside_the_lookback_is_read_one_outside_waits_for_a_full_refresh() {
    let table = seed(200).await;
    let db = unique("inc_late");
    let (_dir, path) = incremental_job(&table, &db, "");
    assert_ok(&run_job(&path));
    // The watermark is 03:20. Row 5 changes with a time 10 minutes under
    // it (inside the lookback), row 6 with one 2 hours under it (outside).
    pg_exec(&format!(
        "UPDATE {table} SET name = 'late', updated_at = TIMESTAMP '2026-01-01 03:10' WHERE id = 5;
         UPDATE {table} SET name = 'too late', updated_at = TIMESTAMP '2026-01-01 01:20' WHERE id = 6;"
    ))
    .await;
    assert_ok(&run_job(&path));
    let copy = collection(&db).await;
    assert_eq!(copy[&5].0, "late");
    assert_eq!(
        copy[&6].0, "name 6",
        "outside the lookback: missed, as documented"
    );
    assert_ne!(copy, source(&table).await);

    let out = assert_ok(&shiftload(&[
        "run",
        "--no-progress",
        "--full-refresh",
        path.to_str().unwrap(),
    ]));
    assert!(summary_line(&out, "mode").contains("full load"), "{out}");
    assert_eq!(
        summary_line(&out, "rows read"),
        "rows read     200",
        "{out}"
    );
    assert_eq!(collection(&db).await, source(&table).await);
    drop_db(&db).await;
}

#[tokio::test]
async fn a_killed_incremental_run_leaves_the_watermark_and_the_rerun_completes() {
    let table = seed(100).await;
    let db = unique("inc_kill");
    let (_dir, path) = incremental_job(
        &table,
        &db,
        "[partition]\ncolumn = \"id\"\ncount = 8\nparallel = 1\n[checkpoint]\nlease_seconds = 2",
    );
    assert_ok(&run_job(&path));
    let before = watermark(&db).await;
    // 1,000 new rows: a run long enough to be killed in the middle.
    pg_exec(&format!(
        "INSERT INTO {table} SELECT i, 'bulk ' || i, i % 5,
             TIMESTAMP '2026-02-01' + i * INTERVAL '1 second' FROM generate_series(101, 1100) i;"
    ))
    .await;
    let mut child = spawn_run(&path);
    let checkpoints = mongo()
        .await
        .database(&db)
        .collection::<Document>("shiftload_checkpoints");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = checkpoints
            .count_documents(doc! {"kind": "partition", "generation": 2i64, "state": "done"})
            .await
            .unwrap();
        if done >= 1 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let job = checkpoints
        .find_one(doc! {"kind": "job"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        job.get_str("state").unwrap(),
        "running",
        "killed mid-way: {job:?}"
    );
    assert_eq!(watermark(&db).await, before, "not advanced by a killed run");

    let out = assert_ok(&run_job(&path));
    assert!(
        out.contains("`updated_at` > 2026-01-01 01:10:00"),
        "the same window: {out}"
    );
    assert_eq!(collection(&db).await, source(&table).await);
    assert_eq!(
        watermark(&db).await.as_deref(),
        Some("2026-02-01 00:18:20.000000")
    );
    drop_db(&db).await;
}

/// `target.on_conflict = "merge"`: changed rows update only the job's
/// fields (by full path, a NULL unsets its field); fields others added to
/// the documents, also inside a sub-document the mapping builds, are kept,
/// and `verify` compares the job's fields only.
#[tokio::test]
async fn a_merge_updates_the_jobs_fields_and_keeps_the_others() {
    let table = unique("merge");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, name text, city text, zip text, updated_at timestamp);
         INSERT INTO {table} SELECT i, 'name ' || i, 'city ' || i, 'zip ' || i,
             TIMESTAMP '2026-01-01' + i * INTERVAL '1 minute' FROM generate_series(1, 40) i;"
    ))
    .await;
    let db = unique("merge");
    let (_dir, path) = job(&format!(
        r#"[source]
url = "{{PG}}"
query = "SELECT id, name, city, zip, updated_at FROM {table}"
[target]
uri = "{{MONGO}}"
database = "{db}"
collection = "items"
on_conflict = "merge"
[mapping]
id = ["id"]
rename = {{ city = "addr.city", zip = "addr.zip" }}
[incremental]
column = "updated_at"
lookback = "30m"
"#
    ));
    let first = assert_ok(&run_job(&path));
    assert_eq!(
        summary_line(&first, "documents"),
        "documents     40 inserted, 0 already present",
        "{first}"
    );
    // Others enrich documents 1 to 5, at the top and inside `addr`.
    let items = mongo().await.database(&db).collection::<Document>("items");
    items
        .update_many(
            doc! {"_id": {"$lte": 5}},
            doc! {"$set": {"extra": "kept", "addr.note": "kept"}},
        )
        .await
        .unwrap();
    // Rows 1 and 2 change their name and lose their zip; row 41 is new.
    pg_exec(&format!(
        "UPDATE {table} SET name = 'changed ' || id, zip = NULL, updated_at = TIMESTAMP '2026-01-02'
             WHERE id IN (1, 2);
         INSERT INTO {table} VALUES (41, 'new', 'c41', NULL, TIMESTAMP '2026-01-02');"
    ))
    .await;
    let second = assert_ok(&run_job(&path));
    // Read: rows 1, 2, 41 and the 30 of the lookback (11 to 40).
    assert_eq!(summary_line(&second, "rows read"), "rows read     33");
    assert_eq!(
        summary_line(&second, "documents"),
        "documents     1 inserted, 30 already present, 2 merged",
        "{second}"
    );
    let docs: BTreeMap<i32, Document> = mongo_docs(&db, "items")
        .await
        .into_iter()
        .map(|d| (d.get_i32("_id").unwrap(), d))
        .collect();
    assert_eq!(docs.len(), 41);
    for id in [1, 2] {
        let d = &docs[&id];
        assert_eq!(d.get_str("name").unwrap(), format!("changed {id}"));
        assert_eq!(
            d.get_document("addr").unwrap(),
            &doc! {"city": format!("city {id}"), "note": "kept"},
            "zip unset, note kept: {d}"
        );
        assert_eq!(d.get_str("extra").unwrap(), "kept", "{d}");
    }
    let d = &docs[&3];
    assert_eq!(d.get_str("name").unwrap(), "name 3");
    assert_eq!(
        d.get_document("addr").unwrap(),
        &doc! {"city": "city 3", "zip": "zip 3", "note": "kept"}
    );
    let d = &docs[&41];
    assert_eq!(d.get_str("name").unwrap(), "new");
    assert_eq!(d.get_document("addr").unwrap(), &doc! {"city": "c41"});
    assert!(!d.contains_key("extra"));
    // The job's fields equal the table's; the others do not count.
    let verified = assert_ok(&shiftload(&["verify", path.to_str().unwrap()]));
    assert!(verified.contains("equal"), "{verified}");
    // A field of the job changed behind its back is a difference.
    items
        .update_one(doc! {"_id": 3}, doc! {"$set": {"addr.city": "elsewhere"}})
        .await
        .unwrap();
    let differs = shiftload(&["verify", path.to_str().unwrap()]);
    assert!(!differs.status.success());
    assert!(stdout(&differs).contains("_id: 3"), "{}", stdout(&differs));
    drop_db(&db).await;
}
