//! One run, wired: plan → claim partitions → [source → encode → sink] → checkpoint.
//!
//! ```text
//!            checkpoint collection (generation, partitions, leases)
//!                  ▲ claim / heartbeat / done             │ plan (one worker)
//!                  │                                      ▼
//! partition: wire reader task ──(1 batch)──► encode (blocking pool, rayon) ──► sink: ≤ writers in flight
//! ```
//!
//! Every hand-off is bounded: the reader decodes at most one batch ahead,
//! one batch is encoded at a time, the sink accepts a batch only when a
//! writer is free, and every batch holds its share of the memory budget
//! until written. A partition is marked done only after all its writes are
//! acknowledged; errors are classified ([`crate::retry`]) into retry, split,
//! fail-the-partition or stop-the-run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{patient, CheckpointStore, Claim, PartitionStats, DONE, FAILED};
use crate::config::{fingerprint, JobConfig, StagingMode};
use crate::deadletter::DeadLetter;
use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::filter::Expr;
use crate::memory::{BatchPermit, Budget, ByteSize};
use crate::plan::{self, KeyType, Range};
use crate::retry::{classify, with_retries, Action};
use crate::sink::{MongoSink, Target, WriteStats};
use crate::source::{ParquetSource, PgSource, Source, SourceBatch, Staging};
use arrow_schema::{DataType, SchemaRef};

/// Progress so far, reported after each batch is handed to the sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub rows_read: u64,
    pub bson_bytes: u64,
    pub batches: u64,
    pub partitions_done: u64,
}

/// Called with the progress after each batch.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

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
    pub namespace: String,
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
    /// Cancelled on SIGINT/SIGTERM: stop taking partitions, finish or give
    /// back the running ones.
    pub cancel: CancellationToken,
    pub on_progress: ProgressFn,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            restart: false,
            cancel: CancellationToken::new(),
            on_progress: Arc::new(|_| {}),
        }
    }
}

/// The job's memory budget, or the default share of this machine's memory.
pub fn budget_for(job: &JobConfig) -> Budget {
    Budget::new(
        job.memory_limit
            .unwrap_or_else(crate::memory::default_budget),
        job.target.writers * job.partition.as_ref().map_or(1, |p| p.parallel),
    )
}

/// The job's partition key type, from the query's schema.
fn key_type(job: &JobConfig, schema: &SchemaRef) -> Result<Option<(String, KeyType)>> {
    let Some(p) = &job.partition else {
        return Ok(None);
    };
    let field = schema.field_with_name(&p.column).map_err(|_| {
        Error::config(
            "partition.column",
            format!("column `{}` is not in the query result", p.column),
        )
    })?;
    let key = match field.data_type() {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => KeyType::Int,
        DataType::Date32 => KeyType::Date,
        DataType::Timestamp(_, tz) => KeyType::Timestamp { tz: tz.is_some() },
        other => {
            return Err(Error::config(
                "partition.column",
                format!(
                    "column `{}` is {other}; partition on an integer, DATE or TIMESTAMP column",
                    p.column
                ),
            ))
        }
    };
    Ok(Some((p.column.clone(), key)))
}

/// A plan: the partitions and the SQL of each, without writing anything.
pub struct Plan {
    pub key: Option<(String, KeyType)>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub rows: Option<u64>,
    pub partitions: Vec<(Range, String)>,
    pub memory_budget: ByteSize,
}

/// Ask the source for the key's range and cut the job into partitions.
pub async fn plan(job: &JobConfig) -> Result<Plan> {
    let staging = staging_of(job)?;
    let schema = describe(job, staging.as_ref()).await?;
    Encoder::new(&schema, &job.mapping)?;
    let (job, schema) = &pushed_down(job, &schema)?;
    let key = key_type(job, schema)?;
    let (min, max, rows, partitions) = match (&staging, &job.source.staging) {
        (Some(staging), Some(cfg)) if cfg.mode == StagingMode::Existing => {
            let parts = staging.parts("").await?;
            let partitions = part_ranges(parts.len())
                .into_iter()
                .zip(parts)
                .map(|(r, p)| (r, format!("Parquet part {}", staging.object_url(&p))))
                .collect();
            (None, None, None, partitions)
        }
        (Some(staging), Some(_)) => {
            let sql = unload_statement(job, staging, "<run id>");
            let note = format!(
                "{sql}\n  then each Parquet part under {} is one partition",
                staging.url(&format!("{}/<run id>", job_name(job)))
            );
            (None, None, None, vec![(Range::ALL, note)])
        }
        _ => {
            let (min, max, rows, ranges) = compute_ranges(job, &key).await?;
            let partitions = ranges
                .iter()
                .map(|r| (*r, partition_sql(job, &key, r)))
                .collect();
            (min, max, rows, partitions)
        }
    };
    Ok(Plan {
        key,
        min,
        max,
        rows,
        partitions,
        memory_budget: budget_for(job).total(),
    })
}

fn job_name(job: &JobConfig) -> String {
    job.name.clone().unwrap_or_else(|| "job".into())
}

fn staging_of(job: &JobConfig) -> Result<Option<Staging>> {
    job.source.staging.as_ref().map(Staging::new).transpose()
}

/// One partition per staged part: partition `lo` is the part's index.
fn part_ranges(parts: usize) -> Vec<Range> {
    (0..parts as i64)
        .map(|i| Range {
            lo: i,
            hi: i + 1,
            null: false,
        })
        .collect()
}

fn unload_statement(job: &JobConfig, staging: &Staging, run: &str) -> String {
    let cfg = job.source.staging.as_ref().expect("staging job");
    crate::source::parquet::unload_sql(
        &job.source.query,
        &staging.url(&format!("{}/{run}", job_name(job))),
        cfg.iam_role.as_deref().unwrap_or_default(),
        cfg.max_file_size.0,
    )
}

/// The schema of the job's result: described by Redshift/PostgreSQL, or
/// read from the first staged part's footer. The filter is checked
/// against it.
async fn describe(job: &JobConfig, staging: Option<&Staging>) -> Result<SchemaRef> {
    let schema = match (staging, &job.source.staging) {
        (Some(staging), Some(cfg)) if cfg.mode == StagingMode::Existing => {
            let parts = staging.parts("").await?;
            let Some(first) = parts.first() else {
                return Err(Error::config(
                    "source.staging.location",
                    format!("no Parquet parts under {}", cfg.location),
                ));
            };
            staging.schema(first).await?
        }
        _ => {
            with_retries(&job.retry, "describe the query", || {
                PgSource::describe(&job.source, &job.source.query)
            })
            .await?
        }
    };
    if let Some(f) = &job.source.filter {
        Expr::parse(f)?.bind(&schema)?;
    }
    Ok(schema)
}

/// The job as its source runs it. For a query (and the UNLOAD of one):
/// the filter and the projection (the columns the mapping writes, and the
/// partition key) pushed into the SQL text, so that Redshift reads and
/// sends only those. Staged parts that exist already keep the job's query
/// empty; their reader projects and filters on its own. The mapping is
/// narrowed to the columns fetched, and the returned schema is theirs.
fn pushed_down(job: &JobConfig, schema: &SchemaRef) -> Result<(JobConfig, SchemaRef)> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let used = job.mapping.columns_used(&names);
    let key = job.partition.as_ref().map(|p| p.column.as_str());
    let fetched: Vec<String> = names
        .iter()
        .filter(|n| used.contains(n) || key == Some(n.as_str()))
        .cloned()
        .collect();
    let mut out = job.clone();
    let existing = job
        .source
        .staging
        .as_ref()
        .is_some_and(|s| s.mode == StagingMode::Existing);
    if !existing {
        let predicate = match &job.source.filter {
            Some(f) => Some(Expr::parse(f)?.to_sql()?),
            None => None,
        };
        let projection = (fetched.len() < names.len()).then_some(fetched.as_slice());
        out.source.query = plan::pushdown_sql(&job.source.query, projection, predicate.as_deref());
    }
    out.mapping = job.mapping.narrowed_to(&fetched);
    let indices: Vec<usize> = fetched
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    let projected = schema
        .project(&indices)
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok((out, Arc::new(projected)))
}

type Ranges = (Option<i64>, Option<i64>, Option<u64>, Vec<Range>);

async fn compute_ranges(job: &JobConfig, key: &Option<(String, KeyType)>) -> Result<Ranges> {
    let (Some(p), Some((column, key))) = (&job.partition, key) else {
        return Ok((None, None, None, vec![Range::ALL]));
    };
    let row =
        PgSource::query_row(&job.source, &KeyType::stats_sql(&job.source.query, column)).await?;
    let get = |i: usize| row.get(i).cloned().flatten();
    let min = get(0).and_then(|t| key.parse(&t));
    let max = get(1).and_then(|t| key.parse(&t));
    let rows = get(2).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    let sample = if p.split == plan::SplitMode::Quantiles && p.boundaries.is_empty() {
        let sql = KeyType::sample_sql(&job.source.query, column, rows);
        let keys = PgSource::query_column(&job.source, &sql).await?;
        Some(
            keys.iter()
                .filter_map(|t| key.parse(t))
                .collect::<Vec<i64>>(),
        )
    } else {
        None
    };
    let ranges = plan::ranges(p, *key, min, max, rows, sample.as_deref())?;
    Ok((min, max, Some(rows), ranges))
}

fn partition_sql(job: &JobConfig, key: &Option<(String, KeyType)>, r: &Range) -> String {
    match key {
        Some((column, key)) => plan::partition_sql(&job.source.query, Some(column), *key, r),
        None => plan::partition_sql(&job.source.query, None, KeyType::Int, r),
    }
}

/// What every partition task of a run shares.
struct Context {
    job: JobConfig,
    key: Option<(String, KeyType)>,
    /// Known key bounds, to cut open-ended ranges in half.
    key_bounds: (i64, i64),
    target: Target,
    budget: Budget,
    store: CheckpointStore,
    generation: i64,
    cancel: CancellationToken,
    counters: Counters,
    on_progress: ProgressFn,
    dead_letter: Option<Arc<DeadLetter>>,
    /// The staged parts, when the job reads Parquet parts.
    staging: Option<Staging>,
    parts: Vec<String>,
    /// Columns read from a part, and the filter evaluated on its batches
    /// (staged parts that were not unloaded with the filter pushed in).
    read_columns: Vec<String>,
    read_filter: Option<Expr>,
}

/// What one partition reads.
enum Work {
    Sql(String),
    Part(String),
}

#[derive(Default)]
struct Counters {
    rows: AtomicU64,
    bson: AtomicU64,
    batches: AtomicU64,
    partitions: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Progress {
        Progress {
            rows_read: self.rows.load(Ordering::Relaxed),
            bson_bytes: self.bson.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            partitions_done: self.partitions.load(Ordering::Relaxed),
        }
    }
}

/// How one claimed partition ended.
enum PartitionEnd {
    Done(WriteStats),
    Failed(String),
    /// Cut in half after repeated timeouts; both halves are pending.
    Split,
    /// Given back unfinished (signal).
    Released(WriteStats),
    /// An error that stops the whole run.
    Stop(Error),
}

/// Transfer the job's query result into its collection, partition by
/// partition, resuming an unfinished run of the same job.
pub async fn run(job: &JobConfig, options: RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let budget = budget_for(job);
    // The target first: a bad MongoDB URI should not cost a Redshift query.
    let target = Target::connect(&job.target).await?;
    let staging = staging_of(job)?;
    let schema = describe(job, staging.as_ref()).await?;
    let encoder = Encoder::new(&schema, &job.mapping)?;
    if !target.limits.decimal128 {
        if let Some(column) = encoder.decimal128_column(&schema) {
            return Err(Error::config(
                "mapping.decimal",
                format!(
                    "column `{column}` would be written as BSON Decimal128, which the target server \
                     (FerretDB) cannot store; set mapping.decimal = \"string\" (exact) or \"double\""
                ),
            ));
        }
    }
    let config_hash = fingerprint(job);
    let (job, schema) = &pushed_down(job, &schema)?;
    let key = key_type(job, schema)?;
    let name = job_name(job);
    let mode = job.source.staging.as_ref().map(|s| s.mode);
    let owner = format!(
        "{}:{}:{:x}",
        hostname(),
        std::process::id(),
        started.elapsed().as_nanos()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos())
    );
    let store = CheckpointStore::new(
        &target.database,
        &job.checkpoint.collection,
        &name,
        &owner,
        Duration::from_secs(job.checkpoint.lease_seconds),
    );
    let bounds = Arc::new(std::sync::Mutex::new((i64::MIN, i64::MAX)));
    let planned = bounds.clone();
    let (generation, resumed, parts) = store
        .begin(&config_hash, options.restart, || async {
            if let Some(staging) = &staging {
                let sub = if mode == Some(StagingMode::Unload) {
                    let run = format!("{}", bson::DateTime::now().timestamp_millis());
                    let sql = unload_statement(job, staging, &run);
                    tracing::info!(to = %staging.url(&format!("{name}/{run}")), "unloading");
                    with_retries(&job.retry, "unload the query", || {
                        PgSource::query_row(&job.source, &sql)
                    })
                    .await?;
                    format!("{name}/{run}")
                } else {
                    String::new()
                };
                let parts =
                    with_retries(&job.retry, "list the staged parts", || staging.parts(&sub))
                        .await?;
                return Ok((part_ranges(parts.len()), parts));
            }
            let (min, max, _, ranges) = with_retries(&job.retry, "plan the partitions", || {
                compute_ranges(job, &key)
            })
            .await?;
            *planned.lock().expect("not poisoned") =
                (min.unwrap_or(i64::MIN), max.unwrap_or(i64::MAX));
            Ok((ranges, Vec::new()))
        })
        .await?;
    if resumed && job.mapping.id.is_empty() {
        return Err(Error::config(
            "mapping.id",
            format!(
                "the job `{name}` has an unfinished run, and without mapping.id its documents have no \
                 stable _id: resuming would write some twice. Empty the collection and run with --restart, \
                 or set mapping.id"
            ),
        ));
    }
    let key_bounds = *bounds.lock().expect("not poisoned");
    let dead_letter = match &job.dead_letter {
        Some(cfg) => Some(Arc::new(DeadLetter::open(cfg, &name)?)),
        None => None,
    };
    let ctx = Arc::new(Context {
        job: job.clone(),
        key,
        key_bounds,
        target,
        budget: budget.clone(),
        store: store.clone(),
        generation,
        cancel: options.cancel.clone(),
        counters: Counters::default(),
        on_progress: options.on_progress.clone(),
        dead_letter,
        read_columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        read_filter: match (&job.source.filter, mode) {
            (Some(f), Some(StagingMode::Existing)) => Some(Expr::parse(f)?),
            _ => None,
        },
        staging,
        parts,
    });
    tracing::info!(job = %name, generation, resumed, "run started");

    let parallel = job.partition.as_ref().map_or(1, |p| p.parallel);
    let mut tasks: JoinSet<PartitionEnd> = JoinSet::new();
    let mut writes = WriteStats::default();
    let mut failures = Vec::new();
    let mut stop: Option<Error> = None;
    let mut interrupted = false;
    loop {
        if ctx.cancel.is_cancelled() {
            interrupted |= stop.is_none();
            break;
        }
        while tasks.len() < parallel {
            match store.claim(generation).await {
                Ok(Some(claim)) => {
                    let ctx = ctx.clone();
                    tasks.spawn(async move { run_partition(&ctx, claim).await });
                }
                Ok(None) => break,
                Err(e) if classify(&e) == Action::Retry => {
                    tracing::warn!(error = %e, "checkpoint unavailable, retrying");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if tasks.is_empty() {
            // Nothing to claim: finished, or other workers hold the rest.
            let status = patient(|| store.status()).await?.map(|s| {
                let open = s
                    .partitions
                    .iter()
                    .filter(|p| p.state != DONE && p.state != FAILED)
                    .count();
                (open, s.count(FAILED))
            });
            match status {
                Some((0, _)) | None => break,
                Some(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = ctx.cancel.cancelled() => {}
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            Some(joined) = tasks.join_next() => {
                let end = joined.unwrap_or_else(|e| PartitionEnd::Stop(Error::Internal(format!("partition task: {e}"))));
                record(end, &mut writes, &mut failures, &mut stop, &ctx);
            }
            _ = ctx.cancel.cancelled() => {}
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let end = joined.unwrap_or_else(|e| {
            PartitionEnd::Stop(Error::Internal(format!("partition task: {e}")))
        });
        record(end, &mut writes, &mut failures, &mut stop, &ctx);
    }
    if let Some(e) = stop {
        return Err(e);
    }
    let complete = patient(|| store.complete_if_done(generation)).await?;
    if let (true, Some(staging), Some(cfg)) = (complete, &ctx.staging, &job.source.staging) {
        if cfg.mode == StagingMode::Unload && !cfg.keep {
            if let Err(e) = staging.delete(&ctx.parts).await {
                tracing::warn!(error = %e, "the unloaded parts could not all be deleted");
            }
        }
    }
    let status = patient(|| store.status()).await?;
    let (total, done, failed) = status.as_ref().map_or((0, 0, 0), |s| {
        (s.partitions.len(), s.count(DONE), s.count(FAILED))
    });
    let outcome = if complete {
        Outcome::Complete
    } else if interrupted {
        Outcome::Interrupted
    } else {
        Outcome::PartitionsFailed
    };
    let progress = ctx.counters.snapshot();
    Ok(RunSummary {
        namespace: format!("{}.{}", job.target.database, job.target.collection),
        job: name,
        generation,
        outcome,
        rows_read: progress.rows_read,
        batches: progress.batches,
        writes,
        partitions_total: total,
        partitions_done: done,
        partitions_failed: failed,
        partitions_here: progress.partitions_done,
        retries: ctx.counters.retries.load(Ordering::Relaxed),
        failures,
        rejected: ctx.dead_letter.as_ref().map_or(0, |d| d.count()),
        dead_letter_path: ctx.dead_letter.as_ref().map(|d| d.path().to_path_buf()),
        elapsed: started.elapsed(),
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        memory_budget: budget.total(),
    })
}

fn record(
    end: PartitionEnd,
    writes: &mut WriteStats,
    failures: &mut Vec<String>,
    stop: &mut Option<Error>,
    ctx: &Context,
) {
    match end {
        PartitionEnd::Done(w) | PartitionEnd::Released(w) => writes.add(w),
        PartitionEnd::Failed(e) => failures.push(e),
        PartitionEnd::Split => {}
        PartitionEnd::Stop(e) => {
            // Stop taking partitions; the running ones give theirs back.
            ctx.cancel.cancel();
            stop.get_or_insert(e);
        }
    }
}

/// Transfer one claimed partition, with retries.
async fn run_partition(ctx: &Context, claim: Claim) -> PartitionEnd {
    let work = match &ctx.staging {
        Some(_) => match ctx.parts.get(claim.range.lo as usize) {
            Some(part) => Work::Part(part.clone()),
            None => {
                return PartitionEnd::Stop(Error::Internal(format!(
                    "partition {} names no staged part",
                    claim.id
                )))
            }
        },
        None => Work::Sql(partition_sql(&ctx.job, &ctx.key, &claim.range)),
    };
    let mut delays = ctx.job.retry.delays();
    let mut timeouts = claim.timeouts;
    let heartbeat = {
        let store = ctx.store.clone();
        let id = claim.id.clone();
        let every = Duration::from_secs(ctx.job.checkpoint.lease_seconds).div_f64(3.0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.heartbeat(&id).await {
                    Ok(true) => {}
                    // Another worker took it over after our lease expired:
                    // both finish it; the writes are idempotent.
                    Ok(false) => tracing::warn!(partition = %id, "lease lost to another worker"),
                    Err(e) => tracing::warn!(error = %e, partition = %id, "heartbeat failed"),
                }
            }
        })
    };
    let _stop_heartbeat = AbortOnDrop(heartbeat);
    loop {
        let started = Instant::now();
        let (result, writes) = transfer(ctx, &work, &claim.id).await;
        let outcome = match result {
            Ok(rows) if !ctx.cancel.is_cancelled() => {
                let stats = PartitionStats {
                    rows,
                    inserted: writes.inserted,
                    already_present: writes.already_present,
                    bytes: writes.bytes,
                    duration: started.elapsed(),
                };
                ctx.counters.partitions.fetch_add(1, Ordering::Relaxed);
                patient(|| ctx.store.done(&claim.id, &stats))
                    .await
                    .map(|_| PartitionEnd::Done(writes))
            }
            Ok(_) => patient(|| ctx.store.release(&claim.id))
                .await
                .map(|_| PartitionEnd::Released(writes)),
            Err(e) => {
                let message = e.to_string();
                match classify(&e) {
                    Action::Stop => {
                        let _ = patient(|| ctx.store.release(&claim.id)).await;
                        return PartitionEnd::Stop(e);
                    }
                    Action::FailPartition => patient(|| ctx.store.failed(&claim.id, &message))
                        .await
                        .map(|_| {
                            PartitionEnd::Failed(format!("partition {}: {message}", claim.id))
                        }),
                    action @ (Action::Retry | Action::Timeout) => {
                        let timeout = action == Action::Timeout;
                        timeouts += timeout as i32;
                        let halves = if timeouts >= 2 {
                            claim
                                .range
                                .split(ctx.key_bounds.0, ctx.key_bounds.1)
                                .filter(|_| ctx.key.is_some())
                        } else {
                            None
                        };
                        if let Some(halves) = halves {
                            tracing::warn!(partition = %claim.id, "cancelled for time twice: cutting it in half");
                            patient(|| ctx.store.split(&claim, ctx.generation, halves))
                                .await
                                .map(|_| PartitionEnd::Split)
                        } else if ctx.cancel.is_cancelled() {
                            patient(|| ctx.store.release(&claim.id))
                                .await
                                .map(|_| PartitionEnd::Released(writes))
                        } else {
                            match delays.next() {
                                Some(delay) => {
                                    ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(partition = %claim.id, error = %message, ?delay, "retrying");
                                    if let Err(e) =
                                        patient(|| ctx.store.retrying(&claim.id, &message, timeout))
                                            .await
                                    {
                                        tracing::warn!(error = %e, "cannot record the retry");
                                    }
                                    tokio::select! {
                                        _ = tokio::time::sleep(delay) => {}
                                        _ = ctx.cancel.cancelled() => {}
                                    }
                                    continue;
                                }
                                None => patient(|| ctx.store.failed(&claim.id, &message))
                                    .await
                                    .map(|_| {
                                        PartitionEnd::Failed(format!(
                                            "partition {}: {message}",
                                            claim.id
                                        ))
                                    }),
                            }
                        }
                    }
                }
            }
        };
        return outcome.unwrap_or_else(PartitionEnd::Stop);
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One attempt at a partition: read, encode, write, and wait for every
/// write. Returns the rows read (stopping early when cancelled) and what
/// was written, also when it fails (those writes stay written).
async fn transfer(ctx: &Context, work: &Work, partition: &str) -> (Result<u64>, WriteStats) {
    let mut sink = MongoSink::new(&ctx.target, &ctx.job.target, &ctx.budget)
        .with_dead_letter(ctx.dead_letter.clone().map(|d| (d, partition.to_string())));
    let pumped = pump(ctx, work, partition, &mut sink).await;
    // Whatever stopped the pump, the writes already handed to the sink are
    // awaited: nothing fetched and encoded before a failure is thrown away.
    let finished = sink.finish().await;
    let writes = sink.stats();
    match (pumped, finished) {
        (Err(e), _) | (Ok(_), Err(e)) => (Err(e), writes),
        (Ok(rows), Ok(_)) => (Ok(rows), writes),
    }
}

async fn pump(ctx: &Context, work: &Work, partition: &str, sink: &mut MongoSink) -> Result<u64> {
    let lenient = ctx.dead_letter.is_some();
    let mut source = match (work, &ctx.staging) {
        (Work::Part(part), Some(staging)) => Source::Parquet(Box::new(
            ParquetSource::open(
                staging,
                part,
                &ctx.read_columns,
                ctx.read_filter.as_ref(),
                &ctx.budget,
                ctx.job.source.fetch_rows as usize,
            )
            .await?,
        )),
        (Work::Sql(sql), _) => {
            Source::Pg(PgSource::open(&ctx.job.source, sql, &ctx.budget, lenient).await?)
        }
        (Work::Part(_), None) => return Err(Error::Internal("a part without staging".into())),
    };
    let encoder = Arc::new(
        Encoder::new(&source.schema(), &ctx.job.mapping)?
            .with_dead_letter(lenient)
            .with_finite_only(!ctx.target.limits.non_finite),
    );
    let mut rows = 0u64;
    loop {
        let next = tokio::select! {
            next = source.next_batch() => next,
            _ = ctx.cancel.cancelled() => return Ok(rows),
        };
        let Some(next) = next else { break };
        let SourceBatch {
            batch,
            permit,
            rejects,
        } = next?;
        let permit: BatchPermit = permit;
        let n = batch.num_rows() as u64;
        let arrow_bytes = batch.get_array_memory_size();
        let first_row = rows;
        let e = encoder.clone();
        let encoded =
            tokio::task::spawn_blocking(move || e.encode_skipping(&batch, first_row, rejects))
                .await
                .map_err(|e| Error::Internal(format!("encoder task: {e}")))??;
        rows += n;
        ctx.budget.observe(arrow_bytes, encoded.bytes);
        if let Some(dl) = &ctx.dead_letter {
            dl.record(partition, &encoded.rejects)?;
        }
        let c = &ctx.counters;
        c.rows.fetch_add(n, Ordering::Relaxed);
        c.bson.fetch_add(encoded.bytes as u64, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        sink.write(encoded, permit).await?;
        (ctx.on_progress)(&c.snapshot());
    }
    Ok(rows)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// How far [`drain`] takes the data before dropping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Fetch and decode into Arrow record batches.
    Source,
    /// Also encode into BSON documents.
    Encode,
}

/// What [`drain`] measured.
#[derive(Debug, Clone)]
pub struct DrainSummary {
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
    let budget = budget_for(job);
    if job.source.staging.is_some() {
        return Err(Error::config(
            "source.staging",
            "`shiftload bench` measures the query path; remove [source.staging] to measure it",
        ));
    }
    let schema = describe(job, None).await?;
    let (job, _) = &pushed_down(job, &schema)?;
    let mut source = PgSource::open(&job.source, &job.source.query, &budget, false).await?;
    let encoder = match stage {
        Stage::Encode => Some(Arc::new(Encoder::new(&source.schema(), &job.mapping)?)),
        Stage::Source => None,
    };
    let (mut rows, mut batches, mut arrow_bytes, mut bson_bytes) = (0u64, 0u64, 0u64, 0u64);
    while let Some(next) = source.next_batch().await {
        let batch = next?.batch;
        let first_row = rows;
        let arrow = batch.get_array_memory_size();
        let bson = match &encoder {
            Some(e) => {
                let e = e.clone();
                tokio::task::spawn_blocking(move || e.encode(&batch, first_row).map(|b| b.bytes))
                    .await
                    .map_err(|e| Error::Internal(format!("encoder task: {e}")))??
            }
            None => 0,
        };
        rows = source.rows_seen();
        batches += 1;
        arrow_bytes += arrow as u64;
        bson_bytes += bson as u64;
    }
    Ok(DrainSummary {
        rows,
        batches,
        arrow_bytes,
        bson_bytes,
        elapsed: started.elapsed(),
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
    })
}
