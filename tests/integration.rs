//! The tests that run the real `shiftload` binary and library against the
//! real servers `scripts/services.sh start` brings up (`scripts/test.sh`
//! does it): one binary, one module per file of `tests/`, so the helpers
//! and the crate are compiled and linked once. Run one file's tests with
//! its module as the filter: `cargo test --release --test integration
//! resume::`.

mod common;

mod cli;
mod conflicts;
mod deploy;
mod exactness;
mod export;
mod filter;
mod incremental;
mod memory;
mod metrics;
mod operations;
mod planning;
mod reconcile;
mod redshift;
mod resume;
mod secrets;
mod sink;
mod split;
mod staging;
mod tls;
mod transfer;
mod types;
mod values;
mod verify;
