//! Sinks take encoded batches and write them. Only the MongoDB sink exists.

pub mod mongo;

pub use mongo::{MongoSink, Target, WriteStats};
