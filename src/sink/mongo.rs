//! MongoDB (and compatible servers: FerretDB, DocumentDB, Atlas) through the
//! official driver.
//!
//! Encoded documents are cut into unordered `insert` requests that respect
//! the server's limits (`maxWriteBatchSize`, `maxMessageSizeBytes`,
//! `maxBsonObjectSize`, read from `hello` before any data moves) and the
//! job's `write_batch_docs`; up to `writers` requests are in flight at once,
//! and [`MongoSink::write`] waits when they are all busy, which is the
//! pipeline's backpressure from the target.
//!
//! A duplicate-key error (E11000) means the document is already there, from
//! an earlier attempt: it is counted as such, not as a failure.

use std::time::Duration;

use bson::{doc, RawDocumentBuf};
use mongodb::error::ErrorKind;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use tokio::task::JoinSet;

use std::sync::Arc;

use crate::config::TargetConfig;
use crate::deadletter::{DeadLetter, Reject};
use crate::encode::EncodedBatch;
use crate::error::{Error, Result};
use crate::memory::{BatchPermit, Budget};
use crate::redact;

const SYSTEM: &str = "MongoDB";
const DUPLICATE_KEY: i32 = 11000;
/// Room left in a message for the command around the documents.
const MESSAGE_OVERHEAD: usize = 16 * 1024;

/// Limits the server announces in `hello`.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_write_batch_size: usize,
    pub max_message_size_bytes: usize,
    pub max_bson_object_size: usize,
    /// Whether the server stores BSON Decimal128 (FerretDB v1 does not).
    pub decimal128: bool,
    /// Whether the server stores NaN and ±Infinity doubles (FerretDB v1
    /// drops the connection instead).
    pub non_finite: bool,
}

/// What the sink wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteStats {
    /// Documents inserted by this run.
    pub inserted: u64,
    /// Documents that were already present (duplicate `_id`).
    pub already_present: u64,
    /// BSON bytes sent.
    pub bytes: u64,
    /// Insert requests sent.
    pub requests: u64,
    /// Documents the server rejected, set aside in the dead-letter file.
    pub rejected: u64,
}

impl WriteStats {
    pub fn add(&mut self, o: WriteStats) {
        self.inserted += o.inserted;
        self.already_present += o.already_present;
        self.bytes += o.bytes;
        self.requests += o.requests;
        self.rejected += o.rejected;
    }
}

/// The target collection, connected and its server's limits known.
#[derive(Clone)]
pub struct Target {
    pub client: Client,
    pub database: mongodb::Database,
    collection: Collection<RawDocumentBuf>,
    namespace: String,
    pub limits: ServerLimits,
}

impl Target {
    /// Connect and ask the server for its limits. Fails before any data
    /// moves when the server cannot be reached or refuses the login.
    pub async fn connect(cfg: &TargetConfig) -> Result<Self> {
        let client = connect(&cfg.uri).await?;
        let database = client.database(&cfg.database);
        let limits = server_limits(&database, &cfg.uri).await?;
        Ok(Target {
            collection: database.collection::<RawDocumentBuf>(&cfg.collection),
            namespace: format!("{}.{}", cfg.database, cfg.collection),
            client,
            database,
            limits,
        })
    }
}

/// Writes encoded batches into one collection.
pub struct MongoSink {
    collection: Collection<RawDocumentBuf>,
    namespace: String,
    limits: ServerLimits,
    docs_per_request: usize,
    bytes_per_request: usize,
    writers: usize,
    in_flight: JoinSet<Result<WriteStats>>,
    stats: WriteStats,
    /// Where rejected documents go (dead-letter mode), and under which
    /// partition name.
    dead_letter: Option<(Arc<DeadLetter>, String)>,
}

impl MongoSink {
    /// Connect and ask the server for its limits. Fails before any data
    /// moves when the server cannot be reached or refuses the login.
    /// A sink for one stream of batches (one partition) into `target`.
    pub fn new(target: &Target, cfg: &TargetConfig, budget: &Budget) -> Self {
        let limits = target.limits;
        MongoSink {
            namespace: target.namespace.clone(),
            collection: target.collection.clone(),
            limits,
            docs_per_request: cfg.write_batch_docs.min(limits.max_write_batch_size).max(1),
            bytes_per_request: budget.request_bytes().min(
                limits
                    .max_message_size_bytes
                    .saturating_sub(MESSAGE_OVERHEAD),
            ),
            writers: cfg.writers,
            in_flight: JoinSet::new(),
            stats: WriteStats::default(),
            dead_letter: None,
        }
    }

    /// Set documents the server rejects aside instead of failing.
    pub fn with_dead_letter(mut self, dead_letter: Option<(Arc<DeadLetter>, String)>) -> Self {
        self.dead_letter = dead_letter;
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
        let mut request: Vec<RawDocumentBuf> =
            Vec::with_capacity(self.docs_per_request.min(batch.docs));
        let mut request_bytes = 0usize;
        for chunk in &batch.chunks {
            for doc in chunk.iter() {
                if doc.len() > self.limits.max_bson_object_size {
                    if let Some((dl, partition)) = &self.dead_letter {
                        dl.record(
                            partition,
                            &[Reject {
                                row: 0,
                                key: describe_id(doc),
                                column: String::new(),
                                reason: format!(
                                    "document of {} bytes exceeds the server's maxBsonObjectSize ({})",
                                    doc.len(),
                                    self.limits.max_bson_object_size
                                ),
                            }],
                        )?;
                        self.stats.rejected += 1;
                        continue;
                    }
                    return Err(Error::Write {
                        namespace: self.namespace.clone(),
                        message: format!(
                            "a document of {} bytes exceeds the server's maxBsonObjectSize ({} bytes); {}",
                            doc.len(),
                            self.limits.max_bson_object_size,
                            describe_id(doc)
                        ),
                    });
                }
                if !request.is_empty()
                    && (request.len() >= self.docs_per_request
                        || request_bytes + doc.len() > max_bytes)
                {
                    let full =
                        std::mem::replace(&mut request, Vec::with_capacity(self.docs_per_request));
                    self.send(full, request_bytes, &permit).await?;
                    request_bytes = 0;
                }
                request_bytes += doc.len();
                request.push(
                    RawDocumentBuf::from_bytes(doc.to_vec())
                        .map_err(|e| Error::Internal(e.to_string()))?,
                );
            }
        }
        if !request.is_empty() {
            self.send(request, request_bytes, &permit).await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        docs: Vec<RawDocumentBuf>,
        bytes: usize,
        permit: &BatchPermit,
    ) -> Result<()> {
        while self.in_flight.len() >= self.writers {
            self.join_one().await?;
        }
        let collection = self.collection.clone();
        let namespace = self.namespace.clone();
        let permit = permit.clone();
        let dead_letter = self.dead_letter.clone();
        self.in_flight.spawn(async move {
            let result = insert(collection, namespace, docs, bytes, dead_letter).await;
            drop(permit);
            result
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        if let Some(done) = self.in_flight.join_next().await {
            let stats = done.map_err(|e| Error::Internal(format!("writer task: {e}")))??;
            self.stats.add(stats);
        }
        Ok(())
    }

    /// What this sink has written so far (acknowledged requests).
    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Wait for every request in flight; the totals of the run. Every
    /// request is awaited even when one fails; the first error is returned.
    pub async fn finish(&mut self) -> Result<WriteStats> {
        let mut first_error = None;
        while !self.in_flight.is_empty() {
            if let Err(e) = self.join_one().await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(self.stats),
        }
    }
}

async fn insert(
    collection: Collection<RawDocumentBuf>,
    namespace: String,
    docs: Vec<RawDocumentBuf>,
    bytes: usize,
    dead_letter: Option<(Arc<DeadLetter>, String)>,
) -> Result<WriteStats> {
    let n = docs.len() as u64;
    let base = WriteStats {
        inserted: n,
        bytes: bytes as u64,
        requests: 1,
        ..WriteStats::default()
    };
    match collection.insert_many(&docs).ordered(false).await {
        Ok(_) => Ok(base),
        Err(e) => {
            if let ErrorKind::InsertMany(failure) = e.kind.as_ref() {
                let errors = failure.write_errors.as_deref().unwrap_or_default();
                let dups = errors.iter().filter(|w| w.code == DUPLICATE_KEY).count() as u64;
                let other = errors.iter().find(|w| w.code != DUPLICATE_KEY);
                if other.is_none() && failure.write_concern_error.is_none() && dups > 0 {
                    return Ok(WriteStats {
                        inserted: n - dups,
                        already_present: dups,
                        ..base
                    });
                }
                if let (Some((dl, partition)), Some(_), None) =
                    (&dead_letter, other, &failure.write_concern_error)
                {
                    let rejects: Vec<Reject> = errors
                        .iter()
                        .filter(|w| w.code != DUPLICATE_KEY)
                        .map(|w| Reject {
                            row: 0,
                            key: docs
                                .get(w.index)
                                .map(|d| describe_id(d.as_bytes()))
                                .unwrap_or_default(),
                            column: String::new(),
                            reason: format!(
                                "rejected by the server: code {}: {}",
                                w.code,
                                redact::scrub(&w.message)
                            ),
                        })
                        .collect();
                    dl.record(partition, &rejects)?;
                    let rejected = rejects.len() as u64;
                    return Ok(WriteStats {
                        inserted: n - dups - rejected,
                        already_present: dups,
                        rejected,
                        ..base
                    });
                }
                if let Some(w) = other {
                    let id = docs
                        .get(w.index)
                        .map(|d| describe_id(d.as_bytes()))
                        .unwrap_or_default();
                    return Err(Error::Write {
                        namespace,
                        message: format!(
                            "{} of {} documents rejected; first: code {}: {} ({id})",
                            errors.len(),
                            n,
                            w.code,
                            redact::scrub(&w.message)
                        ),
                    });
                }
            }
            let message = redact::scrub(&crate::source::postgres::error_chain(&e));
            if transient(&e) {
                Err(Error::Unavailable {
                    system: SYSTEM,
                    message,
                })
            } else {
                Err(Error::Write { namespace, message })
            }
        }
    }
}

/// Whether a driver error is the server or network being away for a while.
pub fn transient(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
    ) || e.contains_label("RetryableWriteError")
        || e.contains_label("NetworkError")
}

/// `_id: 42` of a raw document, for messages.
fn describe_id(doc: &[u8]) -> String {
    match bson::RawDocument::from_bytes(doc)
        .ok()
        .and_then(|d| d.get("_id").ok().flatten())
    {
        Some(id) => match bson::Bson::try_from(id) {
            Ok(b) => format!("_id: {b}"),
            Err(_) => "_id unreadable".into(),
        },
        None => "no _id".into(),
    }
}

/// Connect to MongoDB; the password never appears in errors.
pub async fn connect(uri: &str) -> Result<Client> {
    redact::register_uri(uri);
    let target = redact::uri(uri);
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| Error::Connect {
            system: SYSTEM,
            target: target.clone(),
            message: redact::scrub(&e.to_string()),
        })?;
    if options.server_selection_timeout.is_none() {
        options.server_selection_timeout = Some(Duration::from_secs(10));
    }
    if options.app_name.is_none() {
        options.app_name = Some("shiftload".into());
    }
    Client::with_options(options).map_err(|e| Error::Connect {
        system: SYSTEM,
        target,
        message: redact::scrub(&e.to_string()),
    })
}

async fn server_limits(db: &mongodb::Database, uri: &str) -> Result<ServerLimits> {
    let reply = db
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(|e| Error::Connect {
            system: SYSTEM,
            target: redact::uri(uri),
            message: redact::scrub(&e.to_string()),
        })?;
    let get = |key: &str, default: usize| -> usize {
        match reply.get(key) {
            Some(bson::Bson::Int32(v)) => *v as usize,
            Some(bson::Bson::Int64(v)) => *v as usize,
            Some(bson::Bson::Double(v)) => *v as usize,
            _ => default,
        }
    };
    // FerretDB announces itself in buildInfo; v1 has no Decimal128 and drops
    // the connection when it receives one.
    let ferretdb = match db.run_command(doc! { "buildInfo": 1 }).await {
        Ok(info) => info.contains_key("ferretdbVersion"),
        Err(_) => false,
    };
    Ok(ServerLimits {
        max_write_batch_size: get("maxWriteBatchSize", 100_000),
        max_message_size_bytes: get("maxMessageSizeBytes", 48_000_000),
        max_bson_object_size: get("maxBsonObjectSize", 16 * 1024 * 1024),
        decimal128: !ferretdb,
        non_finite: !ferretdb,
    })
}
