//! shiftload moves large Redshift (PostgreSQL wire protocol) query results
//! into MongoDB as Arrow record batches encoded straight into BSON.
//!
//! The library holds the whole engine; the `shiftload` binary is a thin CLI
//! over [`pipeline`]. See `docs/ARCHITECTURE.md`.
//!
//! # Layout
//!
//! Stages, each behind a small trait; a stage never imports another one
//! (`tests/layout.rs` checks it), only the neutral modules below:
//!
//! - [`source`]: [`source::Source`] (describe, plan, open a partition as a
//!   [`source::BatchStream`], clean up). The PostgreSQL/Redshift wire reader
//!   (`source::postgres`, the query path `source::query`) and staged Parquet
//!   parts on S3 (`source::parquet`, `source::staged`).
//! - [`encode`]: Arrow → raw BSON documents, per-column encoders, rayon.
//! - [`sink`]: [`sink::Sink`] / [`sink::PartitionSink`] take Arrow batches;
//!   the MongoDB sink is the encoder plus the request writer.
//! - [`checkpoint`]: [`checkpoint::CheckpointStore`], the generations and
//!   partition states shared by workers (MongoDB collection or in memory).
//! - [`pipeline`]: wires the stages for `run`, `plan`, `status` and `bench`:
//!   preparation, the worker loop, one partition's attempts, the reports.
//!
//! Neutral modules, usable by every stage: [`config`] (the job file),
//! [`error`] (errors and their [`error::Class`]), [`retry`] (the decision
//! after an error, the one retry loop), [`plan`] (key ranges, partitions),
//! [`filter`] (the row filter), [`memory`] (the budget), [`deadletter`],
//! [`kind`] (source typing carried in Arrow metadata), [`sql`], [`time`],
//! [`mongo`] (connection and driver errors), [`redact`], [`failpoint`]
//! (failures on purpose, for tests).

pub mod alloc;
pub mod checkpoint;
pub mod config;
pub mod conninfo;
pub mod deadletter;
pub mod encode;
pub mod error;
pub mod exit;
pub mod failpoint;
pub mod filter;
pub mod kind;
pub mod memory;
pub mod mongo;
pub mod objects;
pub mod pipeline;
pub mod plan;
pub mod redact;
pub mod retry;
pub mod sink;
pub mod source;
pub mod sql;
pub mod time;

pub use config::JobConfig;
pub use error::{Error, Result};

/// 1234567 → "1,234,567", as summaries print counts.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
