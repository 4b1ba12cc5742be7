//! Sources yield Arrow record batches. They never write anywhere.
//!
//! A [`Source`] is one job's input, described before any data moves: it
//! cuts the work into partitions ([`Source::plan`]), opens one partition at
//! a time as a [`BatchStream`], and cleans up what it staged once the
//! generation is complete. Two sources exist:
//!
//! - [`query::QuerySource`]: the job's query over the PostgreSQL wire
//!   protocol (Redshift, PostgreSQL), partitioned by key ranges pushed into
//!   the SQL;
//! - [`staged::StagedSource`]: Parquet parts on S3, unloaded by Redshift
//!   for the run or already there, one partition per part.

pub mod listing;
pub mod parquet;
pub mod pgtypes;
pub mod postgres;
pub mod query;
pub mod staged;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;

pub use self::parquet::{ParquetSource, Staging};
pub use postgres::PgSource;

use crate::config::JobConfig;
use crate::deadletter::Reject;
use crate::error::Result;
use crate::filter::Expr;
use crate::memory::{BatchPermit, Budget};
use crate::plan::Planned;
use crate::plan::{KeyType, Range};

/// A batch as a source hands it on.
pub struct SourceBatch {
    pub batch: RecordBatch,
    /// The batch's share of the memory budget, until it is written.
    pub permit: BatchPermit,
    /// Rows of this batch with a value that could not be decoded (set to
    /// NULL in the batch), in dead-letter mode: to be left out.
    pub rejects: Vec<(usize, Reject)>,
}

/// One open partition: its batches, in order, each with its permits.
#[async_trait]
pub trait BatchStream: Send {
    /// The schema of the batches handed on.
    fn schema(&self) -> SchemaRef;

    /// The next batch, or `None` at the end of the partition. An error
    /// (also a failure of a task behind the stream) is never an end.
    async fn next_batch(&mut self) -> Option<Result<SourceBatch>>;

    /// Rows read so far (before a client-side filter).
    fn rows_seen(&self) -> u64;
}

/// What `shiftload plan` shows of a source's plan, found without side
/// effects (no UNLOAD runs).
pub struct Preview {
    /// The partition key and its type, when the job partitions by key.
    pub key: Option<(String, KeyType)>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub rows: Option<u64>,
    /// Whether the partitions are staged parts.
    pub staged: bool,
    /// Each partition and what it reads (SQL, or a part's URL).
    pub partitions: Vec<(Planned, String)>,
}

/// A job's input.
#[async_trait]
pub trait Source: Send + Sync {
    /// The schema of the batches every partition yields.
    fn schema(&self) -> SchemaRef;

    /// Cut the work into partitions. May do work at the source (an UNLOAD).
    async fn plan(&self) -> Result<Vec<Planned>>;

    /// The plan as `shiftload plan` shows it, without side effects.
    async fn preview(&self) -> Result<Preview>;

    /// Start reading one partition.
    async fn open(&self, work: &Planned) -> Result<Box<dyn BatchStream>>;

    /// The two halves of a partition cancelled for time, when it can be
    /// cut (a key range wider than one key), found from the partition's
    /// own keys: any worker can split any partition, planned by it or not.
    async fn split(&self, work: &Planned) -> Result<Option<(Range, Range)>>;

    /// Once the generation is complete: remove what the source staged for
    /// it. `done` holds every partition of the generation.
    async fn cleanup(&self, done: &[Planned]) -> Result<()>;

    /// A partition as `status` names it.
    fn describe(&self, work: &Planned) -> String;
}

/// The Arrow schema of the job's whole result, before any projection:
/// described by the server for a query, read from the first part's footer
/// for staged parts that exist already. The filter is checked against it.
pub async fn describe(job: &JobConfig) -> Result<SchemaRef> {
    let schema = match staged::existing(job)? {
        Some(staging) => staged::first_part_schema(job, &staging).await?,
        None => query::describe(job).await?,
    };
    if let Some(f) = &job.source.filter {
        Expr::parse(f)?.bind(&schema)?;
    }
    Ok(schema)
}

/// The job's source, reading `schema`'s columns. `job` is the job as the
/// source runs it (projection and filter already pushed into its query).
/// `lenient`: rows with undecodable values are set aside, not fatal.
pub fn from_job(
    job: &JobConfig,
    schema: SchemaRef,
    budget: &Budget,
    lenient: bool,
) -> Result<Arc<dyn Source>> {
    Ok(match &job.source.staging {
        Some(_) => Arc::new(staged::StagedSource::new(job, schema, budget)?),
        None => Arc::new(query::QuerySource::new(job, schema, budget, lenient)?),
    })
}
