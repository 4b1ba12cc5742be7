//! The pipeline without servers: a source of generated key ranges that
//! fails on demand, a sink that remembers every key it stored, and the
//! in-memory checkpoint store. Partitions, retries, splits, failures and
//! cancellation go through the same `execute` as a real run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;

use super::{execute, Outcome, Prepared, RunOptions, RunSummary};
use crate::checkpoint::{
    Begin, CheckpointStore, Claim, JobStatus, MemoryStore, PartitionState, PartitionStats, Window,
};
use crate::config::JobConfig;
use crate::deadletter::Reject;
use crate::error::{Class, Error, Result};
use crate::memory::{BatchPermit, Budget, ByteSize};
use crate::plan::{Planned, Range};
use crate::sink::{PartitionSink, Sink, WriteStats};
use crate::source::{BatchStream, Preview, Source, SourceBatch};

const ROWS: i64 = 1_000;

/// Keys `0..ROWS` in `parts` equal ranges; `faults[lo]` lists the errors
/// the next attempts at the range starting at `lo` meet (mid-stream, after
/// one batch), in order.
struct TestSource {
    parts: i64,
    faults: Mutex<HashMap<i64, Vec<Class>>>,
    /// Attempts that block until cancelled (to test signals).
    hang: Mutex<Vec<i64>>,
    /// A pause before each batch after the first.
    pause: Duration,
    budget: Budget,
    opened: Mutex<Vec<Range>>,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

impl TestSource {
    fn new(parts: i64) -> Self {
        TestSource {
            parts,
            faults: Mutex::default(),
            hang: Mutex::default(),
            pause: Duration::ZERO,
            budget: Budget::new(ByteSize(64 << 20), 1),
            opened: Mutex::default(),
        }
    }

    fn fail(self, lo: i64, classes: &[Class]) -> Self {
        self.faults.lock().unwrap().insert(lo, classes.to_vec());
        self
    }
}

#[async_trait]
impl Source for TestSource {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    async fn plan(&self) -> Result<Vec<Planned>> {
        let width = ROWS / self.parts;
        Ok((0..self.parts)
            .map(|i| {
                let hi = if i + 1 == self.parts {
                    ROWS
                } else {
                    (i + 1) * width
                };
                Planned::range(Range {
                    lo: i * width,
                    hi,
                    null: false,
                })
            })
            .collect())
    }

    async fn preview(&self) -> Result<Preview> {
        unreachable!("not planned in these tests")
    }

    async fn open(&self, work: &Planned) -> Result<Box<dyn BatchStream>> {
        let r = work.range;
        self.opened.lock().unwrap().push(r);
        let fault = {
            let mut faults = self.faults.lock().unwrap();
            faults
                .get_mut(&r.lo)
                .and_then(|f| (!f.is_empty()).then(|| f.remove(0)))
        };
        let hang = self.hang.lock().unwrap().contains(&r.lo);
        Ok(Box::new(TestStream {
            next: r.lo,
            hi: r.hi,
            fault,
            hang,
            pause: self.pause,
            budget: self.budget.clone(),
            seen: 0,
        }))
    }

    async fn split(&self, work: &Planned) -> Result<Option<(Range, Range)>> {
        Ok(work.range.split(0, ROWS - 1))
    }

    async fn cleanup(&self, _done: &[Planned]) -> Result<()> {
        Ok(())
    }

    fn describe(&self, work: &Planned) -> String {
        work.range.describe(None)
    }
}

/// Batches of up to 64 keys; the fault (if any) comes after the first.
struct TestStream {
    next: i64,
    hi: i64,
    fault: Option<Class>,
    hang: bool,
    pause: Duration,
    budget: Budget,
    seen: u64,
}

fn error_of(class: Class) -> Error {
    Error::Query {
        system: "test",
        message: format!("injected {class:?}"),
        code: None,
        class,
    }
}

#[async_trait]
impl BatchStream for TestStream {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        if self.seen > 0 {
            if let Some(class) = self.fault.take() {
                return Some(Err(error_of(class)));
            }
            if self.hang {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(self.pause).await;
        }
        if self.next >= self.hi {
            return None;
        }
        let end = (self.next + 64).min(self.hi);
        let keys = Int64Array::from_iter_values(self.next..end);
        self.next = end;
        self.seen += keys.len() as u64;
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(keys)]).unwrap();
        let permit = self.budget.acquire(batch.get_array_memory_size()).await;
        Some(Ok(SourceBatch {
            batch,
            permit,
            rejects: Vec::new(),
        }))
    }

    fn rows_seen(&self) -> u64 {
        self.seen
    }
}

/// Stores keys; a key stored twice counts as already present, as a
/// MongoDB `_id` would.
#[derive(Default)]
struct TestSink {
    stored: Arc<Mutex<Vec<i64>>>,
}

#[async_trait]
impl Sink for TestSink {
    async fn open(&self, _partition: &str, _schema: SchemaRef) -> Result<Box<dyn PartitionSink>> {
        Ok(Box::new(TestWriter {
            stored: self.stored.clone(),
            stats: WriteStats::default(),
        }))
    }

    fn idempotent(&self) -> bool {
        true
    }
}

struct TestWriter {
    stored: Arc<Mutex<Vec<i64>>>,
    stats: WriteStats,
}

#[async_trait]
impl PartitionSink for TestWriter {
    async fn write(
        &mut self,
        batch: RecordBatch,
        _permit: BatchPermit,
        _rejects: Vec<(usize, Reject)>,
    ) -> Result<u64> {
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let mut stored = self.stored.lock().unwrap();
        for k in keys.values() {
            if stored.contains(k) {
                self.stats.already_present += 1;
            } else {
                stored.push(*k);
                self.stats.inserted += 1;
            }
        }
        self.stats.bytes += 8 * keys.len() as u64;
        Ok(8 * keys.len() as u64)
    }

    async fn finish(&mut self, _complete: bool) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> WriteStats {
        self.stats
    }
}

struct Harness {
    source: Arc<TestSource>,
    sink: Arc<TestSink>,
    store: Arc<MemoryStore>,
    prepared: Prepared,
}

fn harness(source: TestSource, parallel: usize) -> Harness {
    let job = JobConfig::parse(
        &format!(
            r#"
            name = "t"
            [source]
            url = "postgresql://u@127.0.0.1/db"
            query = "SELECT id FROM t"
            [target]
            uri = "mongodb://127.0.0.1"
            database = "d"
            collection = "c"
            [mapping]
            id = ["id"]
            [partition]
            column = "id"
            parallel = {parallel}
            [retry]
            max_attempts = 3
            initial_delay_ms = 1
            max_delay_ms = 5
            "#
        ),
        std::path::Path::new("t.toml"),
    )
    .expect("a valid job");
    let source = Arc::new(source);
    let sink = Arc::new(TestSink::default());
    let prepared = Prepared {
        name: "t".into(),
        fingerprint: "f".into(),
        budget: source.budget.clone(),
        source: source.clone(),
        sink: Some(sink.clone()),
        job,
        stable_ids: true,
        dead_letter: None,
        target: None,
    };
    Harness {
        source,
        sink,
        store: Arc::new(MemoryStore::new("t", "w1", Duration::from_secs(30))),
        prepared,
    }
}

impl Harness {
    async fn run(&self, options: RunOptions) -> Result<RunSummary> {
        let store: Arc<dyn CheckpointStore> = self.store.clone();
        execute(&self.prepared, store, options, Instant::now()).await
    }

    async fn run_as(&self, worker: &str, options: RunOptions) -> Result<RunSummary> {
        let store: Arc<dyn CheckpointStore> = Arc::new(self.store.worker(worker));
        execute(&self.prepared, store, options, Instant::now()).await
    }

    fn stored(&self) -> Vec<i64> {
        let mut keys = self.sink.stored.lock().unwrap().clone();
        keys.sort_unstable();
        keys
    }
}

fn all_keys() -> Vec<i64> {
    (0..ROWS).collect()
}

#[tokio::test]
async fn every_partition_is_transferred_once() {
    let h = harness(TestSource::new(4), 2);
    let s = h.run(RunOptions::default()).await.unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    assert_eq!((s.partitions_total, s.partitions_done), (4, 4));
    assert_eq!(s.rows_read, ROWS as u64);
    assert_eq!(s.writes.inserted, ROWS as u64);
    assert_eq!(h.stored(), all_keys());
    // The next run is a new generation: a fresh copy, every key again.
    let again = h.run(RunOptions::default()).await.unwrap();
    assert_eq!(again.generation, s.generation + 1);
    assert_eq!(again.writes.already_present, ROWS as u64);
    // Each complete generation is in the history once, newest first, with
    // the totals of its partitions.
    let status = h.store.status().await.unwrap().unwrap();
    let runs: Vec<String> = status.history.iter().map(|e| e.to_string()).collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let rows = crate::thousands(ROWS as u64);
    assert!(
        runs[0].contains(&format!(
            "run 2, full load: {rows} rows read (0 inserted, {rows} already present)"
        )),
        "{runs:?}"
    );
    assert!(
        runs[1].contains(&format!(
            "run 1, full load: {rows} rows read ({rows} inserted, 0 already present)"
        )),
        "{runs:?}"
    );
}

#[tokio::test]
async fn transient_errors_are_retried_and_lose_nothing() {
    let source = TestSource::new(4).fail(250, &[Class::Transient, Class::Transient]);
    let h = harness(source, 1);
    let s = h.run(RunOptions::default()).await.unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    assert_eq!(s.retries, 2);
    assert_eq!(h.stored(), all_keys());
    // The rows the failed attempts wrote are found present by the last.
    assert_eq!(s.writes.already_present, 64);
    assert_eq!(s.writes.inserted + s.writes.already_present, ROWS as u64);
}

#[tokio::test]
async fn a_partition_cancelled_for_time_twice_is_split() {
    let source = TestSource::new(2).fail(0, &[Class::Timeout, Class::Timeout]);
    let h = harness(source, 1);
    let s = h.run(RunOptions::default()).await.unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    assert_eq!(s.partitions_total, 3, "one partition became two");
    let opened = h.source.opened.lock().unwrap().clone();
    assert!(
        opened.contains(&Range {
            lo: 0,
            hi: 250,
            null: false
        }) && opened.contains(&Range {
            lo: 250,
            hi: 500,
            null: false
        }),
        "{opened:?}"
    );
    assert_eq!(h.stored(), all_keys());
}

#[tokio::test]
async fn retries_run_out_into_a_failed_partition_and_the_rest_goes_on() {
    let source = TestSource::new(4).fail(500, &[Class::Transient; 3]);
    let h = harness(source, 2);
    let s = h.run(RunOptions::default()).await.unwrap();
    assert_eq!(s.outcome, Outcome::PartitionsFailed);
    assert_eq!((s.partitions_done, s.partitions_failed), (3, 1));
    assert!(
        s.failures[0].contains("injected Transient"),
        "{:?}",
        s.failures
    );
    let stored = h.stored();
    assert!((0..500).chain(750..ROWS).all(|k| stored.contains(&k)));
    // The next run (a new process: another worker) takes the failed
    // partition up again and completes.
    let again = h.run_as("w2", RunOptions::default()).await.unwrap();
    assert_eq!(again.outcome, Outcome::Complete);
    assert_eq!(
        again.generation, s.generation,
        "the same generation, resumed"
    );
    assert_eq!(h.stored(), all_keys());
}

#[tokio::test]
async fn a_data_error_fails_its_partition_at_once() {
    let source = TestSource::new(2).fail(500, &[Class::Data]);
    let h = harness(source, 1);
    let s = h.run(RunOptions::default()).await.unwrap();
    assert_eq!(s.outcome, Outcome::PartitionsFailed);
    assert_eq!(s.retries, 0);
    let status = h.store.status().await.unwrap().unwrap();
    assert_eq!(status.count(PartitionState::Failed), 1);
}

#[tokio::test]
async fn a_fatal_error_stops_the_run_and_gives_the_partition_back() {
    let source = TestSource::new(2).fail(0, &[Class::Fatal]);
    let h = harness(source, 1);
    let e = h.run(RunOptions::default()).await.unwrap_err();
    assert_eq!(e.class(), Class::Fatal);
    let status = h.store.status().await.unwrap().unwrap();
    assert_eq!(status.count(PartitionState::Done), 0);
    assert_eq!(status.count(PartitionState::Pending), 2);
}

#[tokio::test]
async fn a_cancelled_run_gives_back_its_partition_and_the_next_resumes() {
    let source = TestSource::new(2);
    source.hang.lock().unwrap().push(500);
    let h = harness(source, 1);
    let options = RunOptions::default();
    let cancel = options.cancel.clone();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let s = h.run(options).await.unwrap();
    stopper.await.unwrap();
    assert_eq!(s.outcome, Outcome::Interrupted);
    let status = h.store.status().await.unwrap().unwrap();
    assert_eq!(status.count(PartitionState::Done), 1);
    assert_eq!(
        status.count(PartitionState::Pending),
        1,
        "given back, not lost"
    );
    h.source.hang.lock().unwrap().clear();
    let again = h.run_as("w2", RunOptions::default()).await.unwrap();
    assert_eq!(again.outcome, Outcome::Complete);
    assert_eq!(again.generation, s.generation);
    assert_eq!(h.stored(), all_keys());
}

/// A store whose heartbeats take a while, and which notes any two calls
/// about one claim that overlap: a MongoDB-compatible server may apply an
/// update as read-then-write (FerretDB does), so an overlapping heartbeat
/// could write a released or finished partition back to `running`.
struct Watched {
    inner: MemoryStore,
    busy: Mutex<Vec<String>>,
    overlaps: Mutex<Vec<String>>,
}

impl Watched {
    async fn on<T>(&self, claim: &Claim, op: &str, f: impl std::future::Future<Output = T>) -> T {
        {
            let mut busy = self.busy.lock().unwrap();
            if busy.contains(&claim.id) {
                self.overlaps
                    .lock()
                    .unwrap()
                    .push(format!("{op} {}", claim.id));
            }
            busy.push(claim.id.clone());
        }
        if op == "heartbeat" {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let r = f.await;
        self.busy.lock().unwrap().retain(|c| *c != claim.id);
        r
    }
}

#[async_trait]
impl CheckpointStore for Watched {
    async fn begin(&self, fingerprint: &str, restart: bool) -> Result<Begin> {
        self.inner.begin(fingerprint, restart).await
    }
    async fn commit_plan(
        &self,
        f: &str,
        previous: i64,
        parts: &[Planned],
        window: Option<&Window>,
    ) -> Result<i64> {
        self.inner.commit_plan(f, previous, parts, window).await
    }
    async fn renew_plan(&self, previous: i64) -> Result<bool> {
        self.inner.renew_plan(previous).await
    }
    async fn abandon_plan(&self, previous: i64) {
        self.inner.abandon_plan(previous).await
    }
    async fn claim(&self, generation: i64) -> Result<Option<Claim>> {
        self.inner.claim(generation).await
    }
    async fn heartbeat(&self, c: &Claim) -> Result<bool> {
        self.on(c, "heartbeat", self.inner.heartbeat(c)).await
    }
    async fn retrying(&self, c: &Claim, error: &str, timeout: bool) -> Result<()> {
        self.on(c, "retrying", self.inner.retrying(c, error, timeout))
            .await
    }
    async fn done(&self, c: &Claim, stats: &PartitionStats) -> Result<()> {
        self.on(c, "done", self.inner.done(c, stats)).await
    }
    async fn failed(&self, c: &Claim, error: &str) -> Result<()> {
        self.on(c, "failed", self.inner.failed(c, error)).await
    }
    async fn release(&self, c: &Claim) -> Result<()> {
        self.on(c, "release", self.inner.release(c)).await
    }
    async fn split(&self, c: &Claim, halves: (Range, Range)) -> Result<()> {
        self.on(c, "split", self.inner.split(c, halves)).await
    }
    async fn complete_if_done(&self, generation: i64) -> Result<bool> {
        self.inner.complete_if_done(generation).await
    }
    async fn status(&self) -> Result<Option<JobStatus>> {
        self.inner.status().await
    }
    async fn record(&self, entry: &crate::checkpoint::history::Entry) -> Result<()> {
        self.inner.record(entry).await
    }
}

#[tokio::test]
async fn a_heartbeat_never_overlaps_another_change_of_its_partition() {
    let mut source = TestSource::new(2).fail(500, &[Class::Transient]);
    source.pause = Duration::from_millis(100);
    let mut h = harness(source, 2);
    // The first heartbeat 333 ms after the claim, taking 1.5 s: partitions
    // that take about 700 ms end while it is in flight.
    h.prepared.job.checkpoint.lease_seconds = 1;
    let store = Arc::new(Watched {
        inner: MemoryStore::new("t", "w1", Duration::from_secs(30)),
        busy: Mutex::default(),
        overlaps: Mutex::default(),
    });
    let s = execute(
        &h.prepared,
        store.clone(),
        RunOptions::default(),
        Instant::now(),
    )
    .await
    .unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    assert_eq!(h.stored(), all_keys());
    assert_eq!(*store.overlaps.lock().unwrap(), Vec::<String>::new());
    let status = store.status().await.unwrap().unwrap();
    assert_eq!(status.count(PartitionState::Done), 2);
}
