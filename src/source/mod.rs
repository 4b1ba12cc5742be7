//! Sources yield Arrow record batches. They never write anywhere.

pub mod pgtypes;
pub mod postgres;

pub use postgres::{PgSource, SourceBatch};
