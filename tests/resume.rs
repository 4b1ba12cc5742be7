//! Never losing progress, on the real servers: SIGKILL and resume, a killed
//! backend and statement timeouts, a MongoDB restart, several workers, and
//! SIGTERM. Every test ends by comparing the collection with the source.

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use bson::{doc, Bson, Document};
use futures_util::TryStreamExt;
use rand::Rng;

/// The reference table with `rows` rows, and a partitioned job over it.
async fn setup(
    rows: u64,
    extra_source: &str,
    extra: &str,
    mongo: &str,
) -> (String, String, tempfile::TempDir, std::path::PathBuf) {
    let table = seed_reference(rows).await;
    let db = unique("resume");
    let (dir, path) = job(&format!(
        r#"[source]
url = "{{PG}}"
query = "SELECT * FROM {table}"
fetch_rows = 2000
{extra_source}
[target]
uri = "{mongo}"
database = "{db}"
collection = "orders"
[mapping]
id = ["order_id"]
decimal = "string"
[partition]
column = "order_id"
count = 10
[checkpoint]
lease_seconds = 3
[retry]
initial_delay_ms = 100
max_delay_ms = 1000
{extra}
"#
    ));
    (table, db, dir, path)
}

fn spawn(path: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(["run", "--no-progress", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shiftload")
}

/// The partition documents of the job's current run.
async fn partitions(uri: &str, db: &str) -> Vec<Document> {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let c = client
        .database(db)
        .collection::<Document>("shiftload_checkpoints");
    let job = c
        .find_one(doc! {"kind": "job"})
        .await
        .unwrap()
        .expect("job document");
    let generation = job.get_i64("generation").unwrap();
    c.find(doc! {"kind": "partition", "generation": generation})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Partitions marked done in `db`'s checkpoint (0 before it exists).
async fn done_count(uri: &str, db: &str) -> u64 {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    client
        .database(db)
        .collection::<Document>("shiftload_checkpoints")
        .count_documents(doc! {"kind": "partition", "state": "done"})
        .await
        .unwrap_or(0)
}

#[tokio::test]
async fn sigkill_at_random_moments_then_resume_exactly() {
    let rows: u64 = std::env::var("SHIFTLOAD_KILL_ROWS").map_or(100_000, |v| v.parse().unwrap());
    let (table, db, _dir, path) = setup(rows, "", "", "{MONGO}").await;
    let uri = mongo_uri();
    let mut rng = rand::rng();
    let mut done_before: HashMap<String, i32> = HashMap::new();
    let mut finished = false;
    for round in 0..3 {
        let mut child = spawn(&path);
        // Kill at a random moment after this round finished a partition (or
        // after a minute), whatever the machine's speed: partitions then
        // finish between kills, and the kill still lands mid-run.
        let started = Instant::now();
        let before = done_count(&uri, &db).await;
        while done_count(&uri, &db).await <= before
            && started.elapsed() < Duration::from_secs(60)
            && child.try_wait().unwrap().is_none()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        let wait = started.elapsed().as_millis();
        if let Some(status) = child.try_wait().unwrap() {
            // This run resumed and finished the job before the kill.
            assert!(status.success());
            finished = true;
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for p in partitions(&uri, &db).await {
            if p.get_str("state").unwrap() == "done" {
                done_before
                    .entry(p.get_str("_id").unwrap().to_string())
                    .or_insert(p.get_i32("attempts").unwrap());
            }
        }
        eprintln!(
            "round {round}: killed after {wait} ms, {} partitions done so far",
            done_before.len()
        );
    }
    // Resume: waits for the killed runs' leases to expire, then finishes
    // (unless a round already did; another run would start a fresh copy).
    if !finished {
        let out = run_job(&path);
        assert_ok(&out);
        assert!(stdout(&out).contains("11 of 11 done"), "{}", stdout(&out));
    }
    assert_reference_copy(&table, &uri, &db).await;
    // Partitions finished before a kill were not redone.
    let after: HashMap<String, Document> = partitions(&uri, &db)
        .await
        .into_iter()
        .map(|p| (p.get_str("_id").unwrap().to_string(), p))
        .collect();
    // Partitions finished before a kill were not redone: their attempts are
    // what they were when first seen done.
    for (id, attempts) in &done_before {
        assert_eq!(
            after[id].get_i32("attempts").unwrap(),
            *attempts,
            "{id} was redone"
        );
        assert_eq!(after[id].get_str("state").unwrap(), "done");
    }
    assert!(
        !done_before.is_empty(),
        "some partitions finished between kills"
    );
    drop_db(&db).await;
}

// Multi-threaded: the killer task runs while the test waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_and_statement_timeouts_are_retried_and_split() {
    let (table, db, _dir, path) = setup(60_000, "statement_timeout_ms = 3000", "", "{MONGO}").await;
    // The partition holding order_id 1 sleeps past the timeout on its first
    // two attempts (a sequence, unlike a table, survives the rollback; its
    // first value goes to the planning query, which reads key 1 too).
    let seq = format!("{table}_slept");
    let func = format!("{table}_slow");
    pg_exec(&format!(
        "CREATE SEQUENCE {seq};
         CREATE FUNCTION {func}(k bigint) RETURNS boolean AS $$
         BEGIN
           IF k = 1 AND nextval('{seq}') IN (2, 3) THEN PERFORM pg_sleep(5); END IF;
           -- Every partition spends a moment in the server, to be caught.
           IF k % 3000 = 0 THEN PERFORM pg_sleep(0.1); END IF;
           RETURN true;
         END $$ LANGUAGE plpgsql;"
    ))
    .await;
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("SELECT * FROM {table}\""),
        &format!("SELECT * FROM {table} WHERE {func}(order_id)\""),
    );
    std::fs::write(&path, text).unwrap();

    // Kill one reading backend (a partition query, not the first) once.
    let killer_table = table.clone();
    let killer = tokio::spawn(async move {
        let client = pg().await;
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            let rows = client
                .simple_query(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = 'shiftload' AND state = 'active'
                       AND query LIKE '%{killer_table} WHERE%shiftload_q WHERE%order_id\" >=%' LIMIT 1"
                ))
                .await
                .unwrap();
            if rows
                .iter()
                .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    });
    let out = run_job(&path);
    let killed = killer.await.unwrap();
    let summary = assert_ok(&out);
    assert!(killed, "no partition query was caught to terminate");
    assert_reference_copy(&table, &mongo_uri(), &db).await;

    let parts = partitions(&mongo_uri(), &db).await;
    // Two timeouts cut the first partition in half: 12 partitions now.
    assert_eq!(parts.len(), 12, "{parts:?}");
    assert!(
        parts.iter().any(|p| p.get_str("split_from").is_ok()),
        "{parts:?}"
    );
    assert!(parts.iter().all(|p| p.get_str("state").unwrap() == "done"));
    let retried: Vec<&Document> = parts
        .iter()
        .filter(|p| p.get_i32("attempts").unwrap() > 1)
        .collect();
    // The terminated backend: its FATAL message, or the reset that follows it.
    let dropped = [
        "terminating connection",
        "closed the connection",
        "Connection reset",
    ];
    assert!(
        retried.iter().any(|p| {
            let e = p.get_str("last_error").unwrap_or("");
            dropped.iter().any(|d| e.contains(d))
        }),
        "the terminated backend's retry is recorded: {retried:?}"
    );
    // The split itself is the evidence of the two statement timeouts: only
    // a second 57014 on the same partition cuts it.
    assert!(summary.contains("retries"), "{summary}");
    let retries: u64 = summary
        .split("transferred here, ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(retries >= 2, "{summary}");
    drop_db(&db).await;
}

/// A FerretDB of this test's own, on a free port, stopped and started at will.
struct OwnFerret {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnFerret {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut f = OwnFerret {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        f.up();
        f
    }
    fn uri(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=2000",
            self.port
        )
    }
    fn up(&mut self) {
        let bin = std::env::var("SHIFTLOAD_FERRETDB_BIN")
            .expect("SHIFTLOAD_FERRETDB_BIN: run scripts/test.sh");
        let child = Command::new(bin)
            .args([
                "-listen-addr",
                &format!("127.0.0.1:{}", self.port),
                "-handler",
                "sqlite",
            ])
            .arg("-sqlite-url")
            .arg(format!("file:{}/", self.dir.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("own FerretDB did not start");
    }
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for OwnFerret {
    fn drop(&mut self) {
        self.down();
    }
}

#[tokio::test]
async fn mongodb_stopped_mid_run_and_started_again() {
    let mut ferret = OwnFerret::start();
    let uri = ferret.uri();
    let (table, db, _dir, path) = setup(80_000, "", "max_attempts = 10", &uri).await;
    let child = spawn(&path);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ferret.down();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ferret.up();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    assert_reference_copy(&table, &uri, &db).await;
    let parts = partitions(&uri, &db).await;
    assert!(parts.iter().all(|p| p.get_str("state").unwrap() == "done"));
}

#[tokio::test]
async fn three_workers_share_one_job_each_partition_once() {
    let (table, db, _dir, path) = setup(60_000, "", "", "{MONGO}").await;
    // No worker is killed here: a long lease, so that a loaded machine's
    // late heartbeat does not hand a partition to a second worker.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("count = 10", "count = 12")
        .replace("lease_seconds = 3", "lease_seconds = 30");
    std::fs::write(&path, text).unwrap();
    let workers: Vec<Child> = (0..3).map(|_| spawn(&path)).collect();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert_ok(&out);
    }
    assert_reference_copy(&table, &mongo_uri(), &db).await;
    let parts = partitions(&mongo_uri(), &db).await;
    assert_eq!(parts.len(), 13);
    let mut owners = BTreeSet::new();
    for p in &parts {
        assert_eq!(p.get_str("state").unwrap(), "done", "{p:?}");
        assert_eq!(
            p.get_i32("attempts").unwrap(),
            1,
            "done exactly once: {p:?}"
        );
        owners.insert(p.get_str("owner").unwrap().to_string());
    }
    assert!(owners.len() >= 2, "work was shared: {owners:?}");
    // Together they inserted every row once.
    drop_db(&db).await;
}

#[tokio::test]
async fn sigterm_gives_exit_130_and_the_next_run_resumes() {
    let (table, db, _dir, path) = setup(100_000, "", "", "{MONGO}").await;
    let child = spawn(&path);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("interrupted; run `shiftload run"),
        "{}",
        stdout(&out)
    );
    let parts = partitions(&mongo_uri(), &db).await;
    assert!(
        parts
            .iter()
            .all(|p| p.get_str("state").unwrap() != "running"),
        "leases released: {parts:?}"
    );
    let done_first: Vec<String> = parts
        .iter()
        .filter(|p| p.get_str("state").unwrap() == "done")
        .map(|p| p.get_str("_id").unwrap().to_string())
        .collect();
    assert!(
        done_first.len() < 11,
        "the run was interrupted before the end"
    );

    let out = run_job(&path);
    assert_ok(&out);
    assert_reference_copy(&table, &mongo_uri(), &db).await;
    let parts = partitions(&mongo_uri(), &db).await;
    for p in parts
        .iter()
        .filter(|p| done_first.contains(&p.get_str("_id").unwrap().to_string()))
    {
        assert_eq!(p.get_i32("attempts").unwrap(), 1, "not redone: {p:?}");
    }
    let bson_ids: Vec<&Bson> = parts.iter().map(|p| p.get("_id").unwrap()).collect();
    assert_eq!(bson_ids.len(), 11);
    drop_db(&db).await;
}
