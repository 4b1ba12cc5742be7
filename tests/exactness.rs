//! A run that says complete is complete: the ways a run could exit 0 with
//! rows missing, each tried on the real servers.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use bson::{doc, Document};

/// A table of `rows` rows whose `s` column costs 30 ms on every tenth row,
/// so that a partition of a 20-way split takes a visible moment.
async fn slow_table(rows: u32) -> String {
    slow_every(rows, 10).await
}

/// A table of `rows` rows whose `s` column costs 30 ms on every `every`th
/// row.
async fn slow_every(rows: u32, every: u32) -> String {
    let table = unique("slow");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, 'row ' || g AS s FROM generate_series(1, {rows}) g;
         CREATE FUNCTION {table}_slow(i int, t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
         BEGIN IF i % {every} = 0 THEN PERFORM pg_sleep(0.03); END IF; RETURN t; END $$;"
    ))
    .await;
    table
}

/// Partition documents of `db`'s checkpoint in state `state`.
async fn partitions_in(db: &str, state: &str) -> u64 {
    mongo()
        .await
        .database(db)
        .collection::<Document>("shiftload_checkpoints")
        .count_documents(doc! {"kind": "partition", "state": state})
        .await
        .unwrap_or(0)
}

/// Wait (at most a minute) until `n` partitions of `db`'s checkpoint are
/// done.
async fn until_done(db: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while partitions_in(db, "done").await < n {
        assert!(Instant::now() < deadline, "no partition finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_checkpoint_dropped_mid_run_is_an_error_not_a_completion() {
    let table = slow_table(200).await;
    let db = unique("exact");
    let (_dir, path) = job(&format!(
        r#"[source]
url = "{{PG}}"
query = "SELECT id, {table}_slow(id, s) AS s FROM {table}"
[target]
uri = "{{MONGO}}"
database = "{db}"
collection = "rows"
[mapping]
id = ["id"]
[partition]
column = "id"
count = 20
"#
    ));
    let child = spawn_run(&path);
    // Once a few partitions are done, the checkpoint disappears under the run.
    until_done(&db, 2).await;
    mongo()
        .await
        .database(&db)
        .collection::<Document>("shiftload_checkpoints")
        .drop()
        .await
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let written = mongo_count(&db, "rows").await;
    assert!(
        !out.status.success(),
        "exit 0 with {written} of 200 documents written:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        !stdout(&out).contains("transfer complete"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("checkpoint"), "{}", stderr(&out));
    drop_db(&db).await;
}

/// `--restart` while a worker of the previous run still works: the new run
/// owns the job from then on; the old worker stops with an error and never
/// touches the new run's partitions.
#[tokio::test]
async fn a_restart_fences_off_a_worker_of_the_previous_run() {
    let table = slow_every(200, 1).await;
    let db = unique("fence");
    // Fixed boundaries: the new run plans at once, while the old one works.
    let boundaries: Vec<String> = (1..20).map(|i| (i * 10 + 1).to_string()).collect();
    let boundaries = boundaries.join(", ");
    let job_text = |collection: &str| {
        format!(
            r#"[source]
url = "{{PG}}"
query = "SELECT id, {table}_slow(id, s) AS s FROM {table}"
[target]
uri = "{{MONGO}}"
database = "{db}"
collection = "{collection}"
[mapping]
id = ["id"]
[partition]
column = "id"
boundaries = [{boundaries}]
"#
        )
    };
    let (_dir, path) = job(&job_text("old"));
    let old = spawn_run(&path);
    until_done(&db, 2).await;
    // The job changes (a new target) and is restarted from scratch.
    let (_dir2, new_path) = job(&job_text("new"));
    std::fs::copy(&new_path, &path).unwrap();
    let new = shiftload(&["run", "--no-progress", "--restart", path.to_str().unwrap()]);
    let old = old.wait_with_output().unwrap();
    let text = assert_ok(&new);
    assert!(text.contains("transfer complete"), "{text}");
    let docs = mongo_docs(&db, "new").await;
    assert_eq!(
        docs.len(),
        200,
        "the new target holds {} of 200 rows; the old worker said:\n{}{}",
        docs.len(),
        stdout(&old),
        stderr(&old)
    );
    for (i, d) in docs.iter().enumerate() {
        let id = i as i32 + 1;
        assert_eq!(d, &doc! {"_id": id, "id": id, "s": format!("row {id}")});
    }
    assert!(
        !old.status.success() && !stdout(&old).contains("transfer complete"),
        "the old worker exited {:?}:\n{}{}",
        old.status.code(),
        stdout(&old),
        stderr(&old)
    );
    assert!(stderr(&old).contains("checkpoint"), "{}", stderr(&old));
    drop_db(&db).await;
}

/// Rows set aside are rows missing from the copy: cron must hear of them,
/// also with `--quiet`.
#[tokio::test]
async fn rows_set_aside_are_reported_even_when_quiet() {
    let table = unique("aside");
    let db = unique("aside");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int, amount numeric(10,2));
         INSERT INTO {table} SELECT i, i FROM generate_series(1, 50) i;
         INSERT INTO {table} VALUES (51, 'NaN');"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("rejected.jsonl");
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [mapping]\nid = [\"id\"]\ndecimal = \"string\"\n\
         [dead_letter]\npath = \"{}\"\n",
        dl.display()
    ));
    let out = shiftload(&["run", "--quiet", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("1 row set aside"), "{text}");
    assert!(text.contains("set aside     1 rows"), "{text}");
    assert_eq!(mongo_count(&db, "c").await, 50);
    assert_eq!(std::fs::read_to_string(&dl).unwrap().lines().count(), 1);
    drop_db(&db).await;
}

/// A reader that dies (here: a panic on purpose, after its first batch) is
/// a failed partition, not the end of the data.
#[tokio::test]
async fn a_reader_panic_is_a_failure_not_the_end_of_the_data() {
    let table = unique("panic");
    let db = unique("panic");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id FROM generate_series(1, 5000) g"
    ))
    .await;
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT id FROM {table}\"\nfetch_rows = 1000\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [mapping]\nid = [\"id\"]\n[retry]\nmax_attempts = 2\ninitial_delay_ms = 10\n"
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(["run", "--no-progress", path.to_str().unwrap()])
        .env("SHIFTLOAD_FAILPOINTS", "reader-panic")
        .output()
        .unwrap();
    let written = mongo_count(&db, "c").await;
    assert!(
        !out.status.success(),
        "exit 0 with {written} of 5000 documents:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("panicked"), "{}", stdout(&out));
    // Without the failpoint the next run resumes the failed partition.
    let again = assert_ok(&run_job(&path));
    assert!(again.contains("transfer complete"), "{again}");
    assert_eq!(mongo_count(&db, "c").await, 5000);
    drop_db(&db).await;
}

/// A query ending in a `-- comment` is partitioned and planned like any
/// other: the comment cannot swallow the SQL shiftload wraps around it.
#[tokio::test]
async fn a_query_ending_in_a_comment_is_partitioned() {
    let table = unique("comment");
    let db = unique("comment");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id FROM generate_series(1, 300) g"
    ))
    .await;
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT id FROM {table} -- every row\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [mapping]\nid = [\"id\"]\n[partition]\ncolumn = \"id\"\ncount = 3\n"
    ));
    let out = assert_ok(&run_job(&path));
    assert!(out.contains("300 inserted"), "{out}");
    assert_eq!(mongo_count(&db, "c").await, 300);
    drop_db(&db).await;
}

/// A job without `mapping.id` writes fresh ObjectIds: an attempt that
/// wrote some of them and then broke (here: its backend terminated) is not
/// retried, or every row it wrote would be written twice.
#[tokio::test]
async fn a_job_writing_object_ids_is_not_retried_after_a_partial_write() {
    let table = slow_every(3000, 50).await;
    let db = unique("oid");
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT id, {table}_slow(id, s) AS s FROM {table}\"\n\
         fetch_rows = 100\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [retry]\nmax_attempts = 5\ninitial_delay_ms = 10\n"
    ));
    let child = spawn_run(&path);
    // Once documents are written, the reading backend is terminated.
    let deadline = Instant::now() + Duration::from_secs(60);
    while mongo_count(&db, "c").await == 0 {
        assert!(Instant::now() < deadline, "nothing written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = pg()
        .await
        .simple_query(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'shiftload' AND query LIKE '%{table}_slow%'"
        ))
        .await
        .unwrap()
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)));
    assert!(killed, "the reading backend was not found");
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let ids: Vec<i32> = mongo_docs(&db, "c")
        .await
        .iter()
        .map(|d| d.get_i32("id").unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<i32> = ids.iter().copied().collect();
    assert_eq!(ids.len(), distinct.len(), "rows written twice:\n{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("mapping.id"), "{text}");
    drop_db(&db).await;
}
