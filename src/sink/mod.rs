//! Sinks take Arrow batches and store them. They never read the source.
//!
//! A [`Sink`] is a job's output; it opens one [`PartitionSink`] per attempt
//! at a partition, which takes the partition's batches in order (each with
//! its share of the memory budget, released once the batch is stored) and
//! acknowledges them all in [`PartitionSink::finish`]. Only the MongoDB sink
//! exists: the encoder ([`crate::encode`]) and the writer behind one trait.

pub mod mongo;
pub mod parquet;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;

pub use mongo::{MongoSink, Target};

use crate::deadletter::Reject;
use crate::error::Result;
use crate::memory::BatchPermit;

/// What a sink wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Documents inserted by this run.
    pub inserted: u64,
    /// Documents that were already present (duplicate `_id`).
    pub already_present: u64,
    /// Bytes sent (BSON for MongoDB).
    pub bytes: u64,
    /// Requests sent.
    pub requests: u64,
    /// Rows the target rejected, set aside in the dead-letter file.
    pub rejected: u64,
    /// Documents whose `_id` the target held with other content, left as
    /// they were (`target.on_conflict = "skip"`).
    pub kept: u64,
    /// Documents that replaced a different one under their `_id`
    /// (`target.on_conflict = "replace"`).
    pub replaced: u64,
    /// Documents that held other values of the job's fields and were
    /// updated (`target.on_conflict = "merge"`).
    pub merged: u64,
}

impl WriteStats {
    pub fn add(&mut self, o: WriteStats) {
        self.inserted += o.inserted;
        self.already_present += o.already_present;
        self.bytes += o.bytes;
        self.requests += o.requests;
        self.rejected += o.rejected;
        self.kept += o.kept;
        self.replaced += o.replaced;
        self.merged += o.merged;
    }
}

/// A job's output.
#[async_trait]
pub trait Sink: Send + Sync {
    /// A writer for one attempt at partition `partition` (its id, for the
    /// dead-letter file), whose batches have `schema`.
    async fn open(&self, partition: &str, schema: SchemaRef) -> Result<Box<dyn PartitionSink>>;

    /// Whether writing the same rows again leaves the same data (documents
    /// keyed by the source's columns). When not, an attempt that wrote
    /// anything is never retried.
    fn idempotent(&self) -> bool;
}

/// One attempt at one partition.
#[async_trait]
pub trait PartitionSink: Send {
    /// Take the next batch of the partition; returns once it is handed on
    /// (waiting while the target is busy: backpressure) with the bytes it
    /// became. `permit` is released when the batch is stored. `rejects`:
    /// rows the source could not decode, to be set aside, not stored.
    async fn write(
        &mut self,
        batch: RecordBatch,
        permit: BatchPermit,
        rejects: Vec<(usize, Reject)>,
    ) -> Result<u64>;

    /// Wait until everything handed on is stored (also after an error: what
    /// was handed on is never thrown away); the first error. `complete`:
    /// the partition's last batch was handed on (not after an error or a
    /// cancellation), so a sink that publishes a partition whole may
    /// publish it.
    async fn finish(&mut self, complete: bool) -> Result<()>;

    /// What this attempt has stored so far.
    fn stats(&self) -> WriteStats;
}
