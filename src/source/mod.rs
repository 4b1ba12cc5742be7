//! Sources yield Arrow record batches. They never write anywhere.

pub mod parquet;
pub mod pgtypes;
pub mod postgres;

use arrow_schema::SchemaRef;

pub use self::parquet::{ParquetSource, Staging};
pub use postgres::{PgSource, SourceBatch};

use crate::error::Result;

/// An open partition of either source.
pub enum Source {
    /// A query over the PostgreSQL wire protocol.
    Pg(PgSource),
    /// One staged Parquet part.
    Parquet(Box<ParquetSource>),
}

impl Source {
    /// The schema of the batches handed on.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Source::Pg(s) => s.schema(),
            Source::Parquet(s) => s.schema(),
        }
    }

    /// The next batch with its permits, or `None` at the end.
    pub async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        match self {
            Source::Pg(s) => s.next_batch().await,
            Source::Parquet(s) => s.next_batch().await,
        }
    }

    /// Rows read so far (before a client-side filter).
    pub fn rows_seen(&self) -> u64 {
        match self {
            Source::Pg(s) => s.rows_seen(),
            Source::Parquet(s) => s.rows_seen(),
        }
    }
}
