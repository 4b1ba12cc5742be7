//! The planning turn: one worker plans a generation; others wait while it
//! plans, however long, and take over only from a planner that stopped.

use std::process::Child;
use std::time::{Duration, Instant};

use crate::common::*;
use bson::{doc, Document};

/// A table whose partition key `k` costs 25 ms a row to compute: the plan
/// (the key's range, read by the server) takes about `rows` × 25 ms.
async fn slow_key_table(rows: u32) -> String {
    let table = unique("slowplan");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, 'row ' || g AS s FROM generate_series(1, {rows}) g;
         CREATE FUNCTION {table}_key(i int) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
         BEGIN PERFORM pg_sleep(0.025); RETURN i; END $$;"
    ))
    .await;
    table
}

/// The job: `k` (slow) partitions the table; leases of 2 s.
fn slow_plan_job(table: &str, db: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    job(&format!(
        r#"[source]
url = "{{PG}}"
query = "SELECT {table}_key(id) AS k, s FROM {table}"
[target]
uri = "{{MONGO}}"
database = "{db}"
collection = "rows"
[mapping]
id = ["k"]
[partition]
column = "k"
count = 4
[checkpoint]
lease_seconds = 2
"#
    ))
}

/// The job document of `db`'s checkpoint, once it is in `state`.
async fn until_job_state(db: &str, state: &str) -> Document {
    let deadline = Instant::now() + Duration::from_secs(60);
    let coll = mongo()
        .await
        .database(db)
        .collection::<Document>("shiftload_checkpoints");
    loop {
        if let Ok(Some(d)) = coll.find_one(doc! {"kind": "job", "state": state}).await {
            return d;
        }
        assert!(Instant::now() < deadline, "the job never reached {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait for `child` at most `limit`; kill it and fail past that.
fn wait_at_most(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} still waiting after {limit:?}:\n{}{}",
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// A plan that takes several leases is renewed: a second worker waits for
/// it and joins its generation instead of planning again under it.
#[tokio::test]
async fn a_long_plan_is_not_taken_over() {
    let table = slow_key_table(240).await; // ~6 s of planning, 3 leases
    let db = unique("longplan");
    let (_dir, path) = slow_plan_job(&table, &db);
    let first = spawn_run(&path);
    until_job_state(&db, "planning").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = spawn_run(&path);
    let first = wait_at_most(first, Duration::from_secs(120), "the first worker");
    let second = wait_at_most(second, Duration::from_secs(120), "the second worker");
    let (a, b) = (assert_ok(&first), assert_ok(&second));
    for text in [&a, &b] {
        assert!(text.contains("transfer complete"), "{text}");
        assert!(
            text.contains("run 1)"),
            "one generation, planned once: {text}"
        );
    }
    let docs = mongo_docs(&db, "rows").await;
    assert_eq!(docs.len(), 240);
    for (i, d) in docs.iter().enumerate() {
        let k = i as i32 + 1;
        assert_eq!(d, &doc! {"_id": k, "k": k, "s": format!("row {k}")});
    }
    drop_db(&db).await;
}

/// A planner killed mid-plan stops renewing its turn: the next worker takes
/// the turn over after one lease, not after minutes.
#[tokio::test]
async fn a_dead_planner_is_taken_over_after_one_lease() {
    let table = slow_key_table(120).await;
    let db = unique("deadplan");
    let (_dir, path) = slow_plan_job(&table, &db);
    let mut first = spawn_run(&path);
    until_job_state(&db, "planning").await;
    first.kill().unwrap(); // SIGKILL: nothing given back
    first.wait().unwrap();
    let second = spawn_run(&path);
    let out = wait_at_most(second, Duration::from_secs(90), "the next worker");
    let text = assert_ok(&out);
    assert!(text.contains("transfer complete"), "{text}");
    assert_eq!(mongo_count(&db, "rows").await, 120);
    drop_db(&db).await;
}
