//! The writer: encoded documents cut into unordered `insert` requests that
//! respect the server's limits (`maxWriteBatchSize`, `maxMessageSizeBytes`,
//! `maxBsonObjectSize`, read from `hello` before any data moves) and the
//! job's `write_batch_docs`; up to `writers` requests are in flight at once,
//! and [`Writer::write`] waits when they are all busy, which is the
//! pipeline's backpressure from the target.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::judge::Judge;
use super::reply::{execute, Destination, Sent};
use super::request::{describe_id, Request, Verb};
use super::{ServerLimits, Target};
use crate::config::{OnConflict, SendMode, TargetConfig};
use crate::deadletter::{DeadLetter, Reject};
use crate::encode::{EncodedBatch, Fields};
use crate::error::{Error, Result};
use crate::memory::{BatchPermit, Budget};
use crate::sink::WriteStats;

/// Room left in a message for the command around the documents.
const MESSAGE_OVERHEAD: usize = 16 * 1024;

/// Writes encoded batches into one collection.
pub struct Writer {
    to: Arc<Destination>,
    limits: ServerLimits,
    docs_per_request: usize,
    bytes_per_request: usize,
    writers: usize,
    in_flight: JoinSet<Result<Sent>>,
    stats: WriteStats,
    judge: Judge,
    send_mode: SendMode,
    verb: Verb,
    collection_name: String,
    /// `target.on_conflict = "merge"`: the fields upserts merge.
    merge: Option<Arc<Fields>>,
}

impl Writer {
    /// A writer for one stream of batches (one partition) into `target`.
    pub fn new(target: &Target, cfg: &TargetConfig, budget: &Budget) -> Self {
        let limits = target.limits;
        let verb = match cfg.on_conflict {
            OnConflict::Replace | OnConflict::Merge => Verb::Upsert,
            OnConflict::Fail | OnConflict::Skip => Verb::Insert,
        };
        Writer {
            to: Arc::new(Destination {
                collection: target.collection.clone(),
                namespace: target.namespace.clone(),
                dead_letter: None,
                on_conflict: cfg.on_conflict,
            }),
            limits,
            docs_per_request: cfg
                .write_batch_docs
                .min(limits.max_write_batch_size)
                .min(match verb {
                    Verb::Upsert => limits.max_update_statements,
                    Verb::Insert => usize::MAX,
                })
                .max(1),
            // A command carries its documents in its own body, so it must fit
            // maxBsonObjectSize; insert_many's document sequence only the
            // message size.
            bytes_per_request: budget.request_bytes().min(
                match (cfg.send, verb) {
                    (SendMode::InsertMany, Verb::Insert) => limits.max_message_size_bytes,
                    _ => limits.max_bson_object_size,
                }
                .saturating_sub(MESSAGE_OVERHEAD),
            ),
            writers: cfg.writers,
            in_flight: JoinSet::new(),
            stats: WriteStats::default(),
            judge: Judge::new(budget.request_bytes()),
            send_mode: cfg.send,
            verb,
            collection_name: cfg.collection.clone(),
            merge: None,
        }
    }

    /// Merge upserts into the stored documents, updating only `fields`
    /// (`target.on_conflict = "merge"`).
    pub fn merging(mut self, fields: Option<Fields>) -> Self {
        self.merge = fields.map(Arc::new);
        self
    }

    /// Set documents the server rejects aside instead of failing.
    pub fn with_dead_letter(mut self, dead_letter: Option<(Arc<DeadLetter>, String)>) -> Self {
        let to = &self.to;
        self.to = Arc::new(Destination {
            collection: to.collection.clone(),
            namespace: to.namespace.clone(),
            dead_letter,
            on_conflict: to.on_conflict,
        });
        self
    }

    pub fn limits(&self) -> ServerLimits {
        self.limits
    }

    /// Queue `batch` for writing; returns once it is handed to writers,
    /// waiting while `writers` requests are already in flight. `permit` is
    /// released when the last request of the batch is acknowledged.
    pub async fn write(&mut self, batch: EncodedBatch, permit: BatchPermit) -> Result<()> {
        let max_bytes = self.bytes_per_request;
        let batch = Arc::new(batch);
        let mut request = self.new_request(&batch);
        for (c, chunk) in batch.chunks.iter().enumerate() {
            for (at, doc) in chunk.iter_at() {
                if doc.len() > self.limits.max_bson_object_size {
                    self.too_large(doc)?;
                    continue;
                }
                let overhead = request.overhead() * (request.len() + 1);
                if request.len() > 0
                    && (request.len() >= self.docs_per_request
                        || request.bytes() + overhead + doc.len() > max_bytes)
                {
                    let full = std::mem::replace(&mut request, self.new_request(&batch));
                    self.send(full, &permit).await?;
                }
                request.push(doc, (c, at))?;
            }
        }
        if request.len() > 0 {
            self.send(request, &permit).await?;
        }
        Ok(())
    }

    fn new_request(&self, batch: &Arc<EncodedBatch>) -> Request {
        Request::new(
            self.send_mode,
            self.verb,
            &self.collection_name,
            self.docs_per_request.min(batch.docs),
            self.bytes_per_request.min(batch.bytes),
        )
        .reading_from(Arc::clone(batch))
        .merging(self.merge.clone())
    }

    /// A document over the server's limit: set aside, or the error.
    fn too_large(&mut self, doc: &[u8]) -> Result<()> {
        let reason = format!(
            "a document of {} bytes exceeds the server's maxBsonObjectSize ({} bytes)",
            doc.len(),
            self.limits.max_bson_object_size
        );
        match &self.to.dead_letter {
            Some((dl, partition)) => {
                let reject = Reject {
                    row: 0,
                    key: describe_id(doc),
                    column: String::new(),
                    reason,
                };
                dl.record(partition, &[reject])?;
                self.stats.rejected += 1;
                Ok(())
            }
            None => Err(Error::Write {
                namespace: self.to.namespace.clone(),
                message: format!("{reason}; {}", describe_id(doc)),
            }),
        }
    }

    async fn send(&mut self, request: Request, permit: &BatchPermit) -> Result<()> {
        while self.in_flight.len() >= self.writers {
            self.join_one().await?;
        }
        let to = self.to.clone();
        let permit = permit.clone();
        self.in_flight.spawn(async move {
            let result = execute(&to, request).await;
            drop(permit);
            result
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        if let Some(done) = self.in_flight.join_next().await {
            let sent = done.map_err(|e| Error::Internal(format!("writer task: {e}")))??;
            self.stats.add(sent.stats);
            self.judge.add(sent.duplicates, sent.message);
            if self.judge.full() {
                let judged = self.judge.flush(&self.to).await?;
                self.stats.add(judged);
            }
        }
        Ok(())
    }

    /// What this sink has written so far (acknowledged requests).
    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Wait for every request in flight and judge the duplicates left; the
    /// totals of the run. Every request is awaited even when one fails; the
    /// first error is returned.
    pub async fn finish(&mut self) -> Result<WriteStats> {
        let mut first_error = None;
        while !self.in_flight.is_empty() {
            if let Err(e) = self.join_one().await {
                first_error.get_or_insert(e);
            }
        }
        if first_error.is_none() {
            match self.judge.flush(&self.to).await {
                Ok(judged) => self.stats.add(judged),
                Err(e) => first_error = Some(e),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(self.stats),
        }
    }
}
