//! One run, wired: plan → claim partitions → [source → sink] → checkpoint.
//!
//! ```text
//!            checkpoint store (generation, partitions, leases)
//!                  ▲ claim / heartbeat / done             │ plan (one worker)
//!                  │                                      ▼
//! partition: source stream ──(1 batch + permit)──► sink (encode, ≤ writers in flight)
//! ```
//!
//! - [`prepare`]: the source described and narrowed, the sink checked,
//!   computed once and shared by [`run`], [`plan`] and [`drain`];
//! - `worker`: the loop that claims partitions and waits for the others;
//! - `partition`: one partition's attempts and the transfer itself, with
//!   the retry/split decision of [`crate::retry::decide`];
//! - [`report`]: summaries and status as text.
//!
//! Every hand-off is bounded: a source decodes at most one batch ahead,
//! the sink accepts a batch only when a writer is free, and every batch
//! holds its share of the memory budget until written. A partition is
//! marked done only after all its writes are acknowledged.

mod export;
mod incremental;
pub mod json;
pub mod monitor;
pub mod observe;
mod partition;
pub mod prepare;
pub mod reconcile;
pub mod report;
pub mod signals;
pub mod verify;
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, CheckpointStore, JobStatus, MongoStore, Watermark, Window};
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::memory::ByteSize;
use crate::retry::patient;
use crate::sink::{Target, WriteStats};
use crate::source::Preview;
pub use export::export;
pub use monitor::{Progress, ProgressFn};
use partition::{Context, Counters};
pub use prepare::{budget_for, prepare, Prepared};
pub use reconcile::{reconcile, ReconcileOptions, Reconciled};
pub use verify::{verify, Verdict};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every partition is done.
    Complete,
    /// Some partitions failed after their retries; the others are done.
    PartitionsFailed,
    /// Stopped by a signal; the next run resumes.
    Interrupted,
}

/// The outcome of a run (of this worker).
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// `db.collection`, or the export's location.
    pub namespace: String,
    /// Written as Parquet parts (`shiftload export`), not documents.
    pub export: bool,
    pub job: String,
    pub generation: i64,
    pub outcome: Outcome,
    pub rows_read: u64,
    pub batches: u64,
    pub writes: WriteStats,
    pub partitions_total: usize,
    pub partitions_done: usize,
    pub partitions_failed: usize,
    /// Partitions this worker transferred.
    pub partitions_here: u64,
    /// Attempts that were retried (this worker).
    pub retries: u64,
    /// The first error of each failed partition (this worker).
    pub failures: Vec<String>,
    /// Rows set aside in the dead-letter file (this worker), and the file.
    pub rejected: u64,
    pub dead_letter_path: Option<std::path::PathBuf>,
    pub elapsed: Duration,
    pub peak_rss_bytes: Option<u64>,
    pub memory_budget: ByteSize,
    /// What the generation read, for an incremental job.
    pub window: Option<Window>,
    /// The job's watermark after the run (advanced only when complete).
    pub watermark: Option<Watermark>,
    /// `[reconcile] after_run`: what it deleted, or why it did not.
    pub reconciled: Option<std::result::Result<Reconciled, String>>,
}

impl RunSummary {
    pub fn rows_per_second(&self) -> f64 {
        self.rows_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Options of a run that are not part of the job.
#[derive(Clone)]
pub struct RunOptions {
    /// Discard the checkpoint of an unfinished run and start over.
    pub restart: bool,
    /// For an incremental job: load every row again (discarding an
    /// unfinished run), and leave a new watermark.
    pub full_refresh: bool,
    /// Write the job's `[export]` (Parquet parts) rather than its target.
    pub export: bool,
    /// Cancelled on SIGINT/SIGTERM: stop taking partitions, finish or give
    /// back the running ones.
    pub cancel: CancellationToken,
    pub on_progress: ProgressFn,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            restart: false,
            full_refresh: false,
            export: false,
            cancel: CancellationToken::new(),
            on_progress: Arc::new(|_| {}),
        }
    }
}

/// This worker's name in the checkpoint: host, process, and a nonce.
fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{host}:{}:{nonce:x}", std::process::id())
}

/// The job's checkpoint store in the target database.
fn mongo_store(job: &JobConfig, target: &Target, name: &str, owner: &str) -> MongoStore {
    MongoStore::new(
        &target.database,
        &job.checkpoint.collection,
        name,
        owner,
        Duration::from_secs(job.checkpoint.lease_seconds),
    )
}

/// Transfer the job's result into its collection, partition by partition,
/// resuming an unfinished run of the same job.
pub async fn run(job: &JobConfig, options: RunOptions) -> Result<RunSummary> {
    if options.export {
        return export(job, options).await;
    }
    if job.export_only() {
        return Err(Error::config(
            "target",
            "the job has an [export] and no [target]: run it with `shiftload export`",
        ));
    }
    let started = Instant::now();
    let prepared = prepare(job, true).await?;
    let target = prepared.target.clone().expect("prepared to write");
    let store = mongo_store(job, &target, &prepared.name, &worker_name());
    let mut summary = execute(&prepared, Arc::new(store), options, started).await?;
    if job.reconcile.after_run && summary.outcome == Outcome::Complete {
        let done = reconcile(job, ReconcileOptions::default()).await;
        summary.reconciled = Some(done.map_err(|e| crate::redact::scrub(&e.to_string())));
        summary.elapsed = started.elapsed();
    }
    Ok(summary)
}

/// Run a prepared job against `store`: join or plan a generation, work on
/// its partitions, and tell how it ended.
pub async fn execute(
    prepared: &Prepared,
    store: Arc<dyn CheckpointStore>,
    options: RunOptions,
    started: Instant,
) -> Result<RunSummary> {
    let job = &prepared.job;
    let full_refresh = options.full_refresh && job.incremental.is_some();
    let (generation, resumed) = checkpoint::begin(
        store.as_ref(),
        &prepared.fingerprint,
        options.restart || full_refresh,
        Duration::from_secs(job.checkpoint.lease_seconds),
        || async {
            let window = incremental::next_window(prepared, store.as_ref(), full_refresh).await?;
            let source = incremental::windowed(prepared, window.as_ref())?;
            Ok((source.plan().await?, window))
        },
    )
    .await?;
    // The generation's own window, as its planner stored it.
    let window = match job.incremental {
        Some(_) => patient(|| store.status())
            .await?
            .filter(|s| s.generation == generation)
            .and_then(|s| s.window),
        None => None,
    };
    let source = incremental::windowed(prepared, window.as_ref())?;
    refuse_unstable_resume(prepared, resumed)?;
    let ctx = Arc::new(Context {
        source: source.clone(),
        sink: prepared.sink.clone().expect("prepared to write"),
        store: store.clone(),
        retry: job.retry.clone(),
        lease: Duration::from_secs(job.checkpoint.lease_seconds),
        cancel: options.cancel.clone(),
        counters: Counters::default(),
    });
    tracing::info!(job = %prepared.name, generation, resumed, "run started");
    let parallel = job.partition.as_ref().map_or(1, |p| p.parallel);
    let monitor = Arc::new(monitor::Monitor {
        ctx: ctx.clone(),
        budget: prepared.budget.clone(),
        generation,
        on_progress: options.on_progress.clone(),
    });
    let ticking = partition::AbortOnDrop(monitor.clone().spawn(started));
    let tally = worker::work(ctx.clone(), generation, parallel).await?;
    drop(ticking);
    if let Some(e) = tally.stop {
        return Err(e);
    }
    let complete = patient(|| store.complete_if_done(generation)).await?;
    let status = patient(|| store.status()).await?;
    monitor.last(status.as_ref(), started);
    if complete {
        clean_up(source.as_ref(), status.as_ref()).await;
    }
    let mut summary = summary(
        prepared,
        &ctx,
        status.as_ref(),
        tally,
        complete,
        generation,
        started,
    );
    summary.window = window;
    summary.watermark = status.and_then(|s| s.watermark);
    Ok(summary)
}

/// Resuming a job whose documents have no stable `_id` would write some
/// twice: refuse it.
fn refuse_unstable_resume(prepared: &Prepared, resumed: bool) -> Result<()> {
    match resumed && !prepared.stable_ids {
        true => Err(Error::config(
            "mapping.id",
            format!(
                "the job `{}` has an unfinished run, and without mapping.id its documents have no \
                 stable _id: resuming would write some twice. Empty the collection and run with \
                 --restart, or set mapping.id",
                prepared.name
            ),
        )),
        false => Ok(()),
    }
}

/// Remove what the source staged for a complete generation.
async fn clean_up(source: &dyn crate::source::Source, status: Option<&JobStatus>) {
    let done: Vec<_> = status
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| p.work.clone())
        .collect();
    if let Err(e) = source.cleanup(&done).await {
        tracing::warn!(error = %e, "the staged parts could not all be deleted");
    }
}

fn summary(
    prepared: &Prepared,
    ctx: &Context,
    status: Option<&JobStatus>,
    tally: worker::Tally,
    complete: bool,
    generation: i64,
    started: Instant,
) -> RunSummary {
    let outcome = match (complete, tally.interrupted) {
        (true, _) => Outcome::Complete,
        (false, true) => Outcome::Interrupted,
        (false, false) => Outcome::PartitionsFailed,
    };
    let target = &prepared.job.target;
    use crate::checkpoint::PartitionState::{Done, Failed};
    let counted = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let counters = &ctx.counters;
    let dead_letter = prepared.dead_letter.as_ref();
    RunSummary {
        namespace: format!("{}.{}", target.database, target.collection),
        export: false,
        job: prepared.name.clone(),
        generation,
        outcome,
        rows_read: counted(&counters.rows),
        batches: counted(&counters.batches),
        writes: tally.writes,
        partitions_total: status.map_or(0, |s| s.partitions.len()),
        partitions_done: status.map_or(0, |s| s.count(Done)),
        partitions_failed: status.map_or(0, |s| s.count(Failed)),
        partitions_here: counted(&counters.partitions),
        retries: counted(&counters.retries),
        failures: tally.failures,
        rejected: dead_letter.map_or(0, |d| d.count()),
        dead_letter_path: dead_letter.map(|d| d.path().to_path_buf()),
        elapsed: started.elapsed(),
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        memory_budget: prepared.budget.total(),
        window: None,
        watermark: None,
        reconciled: None,
    }
}

/// A plan: the partitions and what each reads, without writing anything.
pub struct Plan {
    pub preview: Preview,
    pub memory_budget: ByteSize,
}

/// Ask the source for its plan, without side effects.
pub async fn plan(job: &JobConfig) -> Result<Plan> {
    let prepared = prepare(job, false).await?;
    Ok(Plan {
        preview: prepared.source.preview().await?,
        memory_budget: prepared.budget.total(),
    })
}

/// Where a job stands, as its checkpoint says.
pub struct Status {
    pub job: String,
    pub status: Option<JobStatus>,
    /// Staged parts are shown as parts, key ranges as ranges.
    pub staged: bool,
}

/// Read the job's checkpoint.
pub async fn status(job: &JobConfig) -> Result<Status> {
    let name = prepare::job_name(job);
    let store: Box<dyn CheckpointStore> = match job.export_only() {
        true => Box::new(export::store(job, &name, "status")?),
        false => {
            let target = Target::connect(&job.target).await?;
            Box::new(mongo_store(job, &target, &name, "status"))
        }
    };
    Ok(Status {
        status: store.status().await?,
        job: name,
        staged: job.source.staging.is_some(),
    })
}

/// How far [`drain`] takes the data before dropping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Fetch and decode into Arrow record batches.
    Source,
    /// Also encode into BSON documents.
    Encode,
}

impl Stage {
    /// `encode` → [`Stage::Encode`]; anything else [`Stage::Source`].
    pub fn named(name: &str) -> Stage {
        match name {
            "encode" => Stage::Encode,
            _ => Stage::Source,
        }
    }
}

/// What [`drain`] measured.
#[derive(Debug, Clone)]
pub struct DrainSummary {
    pub stage: Stage,
    pub rows: u64,
    pub batches: u64,
    pub arrow_bytes: u64,
    pub bson_bytes: u64,
    pub elapsed: Duration,
    pub peak_rss_bytes: Option<u64>,
}

/// Run the job's query through the first stages only and drop the result:
/// per-stage throughput for benchmarks, without touching the target.
pub async fn drain(job: &JobConfig, stage: Stage) -> Result<DrainSummary> {
    let started = Instant::now();
    if job.source.staging.is_some() {
        return Err(Error::config(
            "source.staging",
            "`shiftload bench` measures the query path; remove [source.staging] to measure it",
        ));
    }
    let prepared = prepare(job, false).await?;
    let all = crate::plan::Planned::range(crate::plan::Range::ALL);
    let unpartitioned = crate::source::query::QuerySource::new(
        &JobConfig {
            partition: None,
            ..prepared.job.clone()
        },
        prepared.source.schema(),
        &prepared.budget,
        false,
    )?;
    let mut stream = crate::source::Source::open(&unpartitioned, &all).await?;
    let encoder = match stage {
        Stage::Encode => Some(Arc::new(crate::encode::Encoder::new(
            &stream.schema(),
            &prepared.job.mapping,
        )?)),
        Stage::Source => None,
    };
    let mut s = DrainSummary {
        stage,
        rows: 0,
        batches: 0,
        arrow_bytes: 0,
        bson_bytes: 0,
        elapsed: Duration::ZERO,
        peak_rss_bytes: None,
    };
    while let Some(next) = stream.next_batch().await {
        let batch = next?.batch;
        s.arrow_bytes += batch.get_array_memory_size() as u64;
        if let Some(e) = encoder.clone() {
            let first_row = s.rows;
            s.bson_bytes += tokio::task::spawn_blocking(move || {
                e.encode(&batch, first_row).map(|b| b.bytes as u64)
            })
            .await
            .map_err(|e| Error::Internal(format!("encoder task: {e}")))??;
        }
        s.rows = stream.rows_seen();
        s.batches += 1;
    }
    s.elapsed = started.elapsed();
    s.peak_rss_bytes = crate::memory::peak_rss_bytes();
    Ok(s)
}

#[cfg(test)]
mod tests;
