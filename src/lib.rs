//! shiftload moves large Redshift (PostgreSQL wire protocol) query results
//! into MongoDB as Arrow record batches encoded straight into BSON.
//!
//! The library holds the whole engine; the `shiftload` binary is a thin CLI
//! over [`pipeline::run`]. See `docs/ARCHITECTURE.md`.

pub mod checkpoint;
pub mod config;
pub mod deadletter;
pub mod encode;
pub mod error;
pub mod filter;
pub mod kind;
pub mod memory;
pub mod mongo;
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
