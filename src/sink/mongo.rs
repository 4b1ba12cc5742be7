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

use crate::config::{SendMode, TargetConfig};
use crate::deadletter::{DeadLetter, Reject};
use crate::encode::bson as b;
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
    send_mode: SendMode,
    collection_name: String,
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
            // A command carries its documents in its own body, so it must fit
            // maxBsonObjectSize; insert_many's document sequence only the
            // message size.
            bytes_per_request: budget.request_bytes().min(
                match cfg.send {
                    SendMode::Command => limits.max_bson_object_size,
                    SendMode::InsertMany => limits.max_message_size_bytes,
                }
                .saturating_sub(MESSAGE_OVERHEAD),
            ),
            writers: cfg.writers,
            in_flight: JoinSet::new(),
            stats: WriteStats::default(),
            dead_letter: None,
            send_mode: cfg.send,
            collection_name: cfg.collection.clone(),
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
        let mut request = self.new_request(batch.docs);
        for chunk in &batch.chunks {
            for doc in chunk.iter() {
                if doc.len() > self.limits.max_bson_object_size {
                    self.too_large(doc)?;
                    continue;
                }
                if request.len() > 0
                    && (request.len() >= self.docs_per_request
                        || request.bytes() + doc.len() > max_bytes)
                {
                    let full = std::mem::replace(&mut request, self.new_request(batch.docs));
                    self.send(full, &permit).await?;
                }
                request.push(doc)?;
            }
        }
        if request.len() > 0 {
            self.send(request, &permit).await?;
        }
        Ok(())
    }

    fn new_request(&self, docs: usize) -> Request {
        Request::new(
            self.send_mode,
            &self.collection_name,
            self.docs_per_request.min(docs),
        )
    }

    /// A document over the server's limit: set aside, or the error.
    fn too_large(&mut self, doc: &[u8]) -> Result<()> {
        let reason = format!(
            "a document of {} bytes exceeds the server's maxBsonObjectSize ({} bytes)",
            doc.len(),
            self.limits.max_bson_object_size
        );
        match &self.dead_letter {
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
                namespace: self.namespace.clone(),
                message: format!("{reason}; {}", describe_id(doc)),
            }),
        }
    }

    async fn send(&mut self, request: Request, permit: &BatchPermit) -> Result<()> {
        while self.in_flight.len() >= self.writers {
            self.join_one().await?;
        }
        let collection = self.collection.clone();
        let namespace = self.namespace.clone();
        let permit = permit.clone();
        let dead_letter = self.dead_letter.clone();
        self.in_flight.spawn(async move {
            let result = insert(collection, namespace, request, dead_letter).await;
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

/// One insert request: the documents of a run of rows, ready to send.
enum Request {
    /// Copies handed to the driver's `insert_many`, which serialises them
    /// again into an `OP_MSG` document sequence.
    Driver {
        docs: Vec<RawDocumentBuf>,
        bytes: usize,
    },
    /// An `insert` command assembled directly from the encoded bytes (one
    /// copy), sent with `run_raw_command`. The command goes to the driver,
    /// so each document's `_id` is kept aside as a small document of its
    /// own (`ids`, `id_ranges`), to name a document the server rejects.
    Command {
        cmd: Vec<u8>,
        array_at: usize,
        ids: Vec<u8>,
        id_ranges: Vec<(usize, usize)>,
        bytes: usize,
    },
}

impl Request {
    fn new(mode: SendMode, collection: &str, capacity: usize) -> Request {
        match mode {
            SendMode::InsertMany => Request::Driver {
                docs: Vec::with_capacity(capacity),
                bytes: 0,
            },
            SendMode::Command => {
                let mut cmd = Vec::with_capacity(1 << 16);
                let at = b::begin_doc(&mut cmd);
                debug_assert_eq!(at, 0);
                b::put_element(&mut cmd, b::STRING, b"insert\0");
                b::put_str(&mut cmd, collection.as_bytes());
                b::put_element(&mut cmd, b::BOOLEAN, b"ordered\0");
                cmd.push(0);
                b::put_element(&mut cmd, b::ARRAY, b"documents\0");
                let array_at = b::begin_doc(&mut cmd);
                Request::Command {
                    cmd,
                    array_at,
                    ids: Vec::with_capacity(capacity * 24),
                    id_ranges: Vec::with_capacity(capacity),
                    bytes: 0,
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Request::Driver { docs, .. } => docs.len(),
            Request::Command { id_ranges, .. } => id_ranges.len(),
        }
    }

    fn push(&mut self, doc: &[u8]) -> Result<()> {
        match self {
            Request::Driver { docs, bytes } => {
                *bytes += doc.len();
                docs.push(
                    RawDocumentBuf::from_bytes(doc.to_vec())
                        .map_err(|e| Error::Internal(e.to_string()))?,
                );
            }
            Request::Command {
                cmd,
                ids,
                id_ranges,
                bytes,
                ..
            } => {
                *bytes += doc.len();
                cmd.push(b::DOCUMENT);
                cmd.extend_from_slice(id_ranges.len().to_string().as_bytes());
                cmd.push(0);
                cmd.extend_from_slice(doc);
                // `_id` is the first element: keep it as `{_id: ...}`.
                let start = ids.len();
                let at = b::begin_doc(ids);
                ids.extend_from_slice(&doc[4..4 + first_element_len(doc)]);
                b::end_doc(ids, at);
                id_ranges.push((start, ids.len()));
            }
        }
        Ok(())
    }

    /// A document holding at least document `i`'s `_id`.
    fn id_doc(&self, i: usize) -> Option<&[u8]> {
        match self {
            Request::Driver { docs, .. } => docs.get(i).map(|d| d.as_bytes()),
            Request::Command { ids, id_ranges, .. } => id_ranges.get(i).map(|&(s, e)| &ids[s..e]),
        }
    }

    /// BSON bytes of the documents.
    fn bytes(&self) -> usize {
        match self {
            Request::Driver { bytes, .. } | Request::Command { bytes, .. } => *bytes,
        }
    }
}

/// A write error of one document in a request.
struct DocError {
    index: usize,
    code: i32,
    message: String,
}

/// Send one request; duplicates count as already present, other rejected
/// documents go to the dead-letter file or fail the request.
async fn insert(
    collection: Collection<RawDocumentBuf>,
    namespace: String,
    mut request: Request,
    dead_letter: Option<(Arc<DeadLetter>, String)>,
) -> Result<WriteStats> {
    let n = request.len() as u64;
    let base = WriteStats {
        inserted: n,
        bytes: request.bytes() as u64,
        requests: 1,
        ..WriteStats::default()
    };
    let (errors, concern): (Vec<DocError>, Option<String>) = match &mut request {
        Request::Driver { docs, .. } => match collection.insert_many(&*docs).ordered(false).await {
            Ok(_) => (Vec::new(), None),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(failure) => (
                    failure
                        .write_errors
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .map(|w| DocError {
                            index: w.index,
                            code: w.code,
                            message: w.message.clone(),
                        })
                        .collect(),
                    failure
                        .write_concern_error
                        .as_ref()
                        .map(|c| c.message.clone()),
                ),
                _ => return Err(driver_error(&namespace, &e)),
            },
        },
        Request::Command { cmd, array_at, .. } => {
            b::end_doc(cmd, *array_at);
            b::end_doc(cmd, 0);
            let raw = RawDocumentBuf::from_bytes(std::mem::take(cmd))
                .map_err(|e| Error::Internal(e.to_string()))?;
            let reply = collection
                .client()
                .database(collection.namespace().db.as_str())
                .run_raw_command(raw)
                .await;
            // Keep the bytes for messages about single documents.
            let reply = reply.map_err(|e| driver_error(&namespace, &e))?;
            let errors = match reply.get_array("writeErrors") {
                Ok(list) => list
                    .iter()
                    .filter_map(|v| v.as_document())
                    .map(|d| DocError {
                        index: d.get_i32("index").map(|i| i as usize).unwrap_or(usize::MAX),
                        code: d.get_i32("code").unwrap_or(0),
                        message: d.get_str("errmsg").unwrap_or_default().to_string(),
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            let concern = reply.get_document("writeConcernError").ok().map(|d| {
                d.get_str("errmsg")
                    .unwrap_or("write concern error")
                    .to_string()
            });
            (errors, concern)
        }
    };
    if errors.is_empty() && concern.is_none() {
        return Ok(base);
    }
    let dups = errors.iter().filter(|w| w.code == DUPLICATE_KEY).count() as u64;
    let others: Vec<&DocError> = errors.iter().filter(|w| w.code != DUPLICATE_KEY).collect();
    if let Some(concern) = concern {
        return Err(Error::Write {
            namespace,
            message: format!("write concern error: {}", redact::scrub(&concern)),
        });
    }
    if others.is_empty() {
        return Ok(WriteStats {
            inserted: n - dups,
            already_present: dups,
            ..base
        });
    }
    let describe = |i: usize| {
        request
            .id_doc(i)
            .map(describe_id)
            .unwrap_or_else(|| format!("document {i}"))
    };
    if let Some((dl, partition)) = &dead_letter {
        let rejects: Vec<Reject> = others
            .iter()
            .map(|w| Reject {
                row: 0,
                key: describe(w.index),
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
    let w = others[0];
    Err(Error::Write {
        namespace,
        message: format!(
            "{} of {} documents rejected; first: code {}: {} ({})",
            others.len(),
            n,
            w.code,
            redact::scrub(&w.message),
            describe(w.index)
        ),
    })
}

/// Length of a document's first element (type, name, value); 0 when it is
/// of a type an `_id` written by the encoder never has.
fn first_element_len(doc: &[u8]) -> usize {
    let Some(&ty) = doc.get(4) else { return 0 };
    let Some(name) = doc[5..].iter().position(|&c| c == 0) else {
        return 0;
    };
    let value = 5 + name + 1;
    let i32_at = |at: usize| {
        doc.get(at..at + 4).map_or(0, |b| {
            i32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
        })
    };
    let len = match ty {
        b::INT32 => 4,
        b::INT64 | b::DATETIME | b::DOUBLE => 8,
        b::OBJECT_ID => 12,
        b::DECIMAL128 => 16,
        b::BOOLEAN => 1,
        b::STRING => 4 + i32_at(value),
        b::DOCUMENT | b::ARRAY => i32_at(value),
        b::BINARY => 5 + i32_at(value),
        _ => return 0,
    };
    if value + len <= doc.len() {
        1 + name + 1 + len
    } else {
        0
    }
}

/// A driver error as a write error, or as unavailability when transient.
fn driver_error(namespace: &str, e: &mongodb::error::Error) -> Error {
    let message = redact::scrub(&crate::source::postgres::error_chain(e));
    if transient(e) {
        Error::Unavailable {
            system: SYSTEM,
            message,
        }
    } else {
        Error::Write {
            namespace: namespace.to_string(),
            message,
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
