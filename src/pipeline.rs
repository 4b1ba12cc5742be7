//! One run, wired: source → encode → sink.
//!
//! ```text
//! wire reader task ──(1 batch)──► encode (blocking pool, rayon) ──► sink: ≤ writers requests in flight
//! ```
//!
//! Every hand-off is bounded: the reader decodes at most one batch ahead,
//! one batch is encoded at a time, and the sink accepts a batch
//! only when a writer is free. So memory holds a handful of batches whatever
//! the size of the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::JobConfig;
use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::memory::{BatchPermit, Budget, ByteSize};
use crate::sink::{MongoSink, WriteStats};
use crate::source::PgSource;

/// Progress so far, reported after each batch is handed to the sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub rows_read: u64,
    pub bson_bytes: u64,
    pub batches: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub namespace: String,
    pub rows_read: u64,
    pub batches: u64,
    pub writes: WriteStats,
    pub elapsed: Duration,
    pub peak_rss_bytes: Option<u64>,
    /// The memory budget the run kept to.
    pub memory_budget: ByteSize,
}

impl RunSummary {
    pub fn rows_per_second(&self) -> f64 {
        self.rows_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Transfer the job's query result into its collection.
pub async fn run(job: &JobConfig, on_progress: &(dyn Fn(&Progress) + Sync)) -> Result<RunSummary> {
    let started = Instant::now();
    // The target first: a bad MongoDB URI should not cost a Redshift query.
    let budget = budget_for(job);
    let mut sink = MongoSink::connect(&job.target, &budget).await?;
    let mut source = PgSource::open(&job.source, &job.source.query, &budget).await?;
    let encoder = Arc::new(Encoder::new(&source.schema(), &job.mapping)?);
    if !sink.limits().decimal128 {
        if let Some(column) = encoder.decimal128_column(&source.schema()) {
            return Err(Error::config(
                "mapping.decimal",
                format!(
                    "column `{column}` would be written as BSON Decimal128, which the target server \
                     (FerretDB) cannot store; set mapping.decimal = \"string\" (exact) or \"double\""
                ),
            ));
        }
    }
    tracing::info!(
        columns = source.schema().fields().len(),
        max_write_batch_size = sink.limits().max_write_batch_size,
        "transfer started"
    );

    let mut progress = Progress::default();
    let pumped = pump(
        &mut source,
        &encoder,
        &budget,
        &mut sink,
        &mut progress,
        on_progress,
    )
    .await;
    // Whatever stopped the pump, the writes already handed to the sink are
    // awaited: nothing fetched and encoded before a failure is thrown away.
    let finished = sink.finish().await;
    pumped?;
    let writes = finished?;
    Ok(RunSummary {
        namespace: format!("{}.{}", job.target.database, job.target.collection),
        rows_read: progress.rows_read,
        batches: progress.batches,
        writes,
        elapsed: started.elapsed(),
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        memory_budget: budget.total(),
    })
}

/// The job's memory budget, or the default share of this machine's memory.
pub fn budget_for(job: &JobConfig) -> Budget {
    Budget::new(
        job.memory_limit
            .unwrap_or_else(crate::memory::default_budget),
        job.target.writers,
    )
}

async fn pump(
    source: &mut PgSource,
    encoder: &Arc<Encoder>,
    budget: &Budget,
    sink: &mut MongoSink,
    progress: &mut Progress,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Result<()> {
    while let Some(next) = source.next_batch().await {
        let (batch, permit): (_, BatchPermit) = next?;
        let first_row = progress.rows_read;
        let rows = batch.num_rows() as u64;
        let arrow_bytes = batch.get_array_memory_size();
        let encoder = encoder.clone();
        let encoded = tokio::task::spawn_blocking(move || encoder.encode(&batch, first_row))
            .await
            .map_err(|e| Error::Internal(format!("encoder task: {e}")))??;
        progress.rows_read += rows;
        progress.bson_bytes += encoded.bytes as u64;
        progress.batches += 1;
        budget.observe(arrow_bytes, encoded.bytes);
        sink.write(encoded, permit).await?;
        on_progress(progress);
    }
    Ok(())
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
    let mut source = PgSource::open(&job.source, &job.source.query, &budget).await?;
    let encoder = match stage {
        Stage::Encode => Some(Arc::new(Encoder::new(&source.schema(), &job.mapping)?)),
        Stage::Source => None,
    };
    let (mut rows, mut batches, mut arrow_bytes, mut bson_bytes) = (0u64, 0u64, 0u64, 0u64);
    while let Some(next) = source.next_batch().await {
        let (batch, _permit) = next?;
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
