//! MongoDB (and compatible servers: FerretDB, DocumentDB, Atlas) through the
//! official driver: the encoder turns each Arrow batch into raw BSON
//! documents ([`crate::encode`]), the [`writer::Writer`] sends them as
//! unordered insert requests, several in flight.

mod judge;
mod reply;
mod request;
pub mod writer;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use async_trait::async_trait;
use bson::{doc, RawDocumentBuf};
use mongodb::{Client, Collection};

use super::{PartitionSink, Sink, WriteStats};
use crate::config::{MappingConfig, OnConflict, TargetConfig};
use crate::deadletter::{DeadLetter, Reject};
use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::memory::{BatchPermit, Budget};
use crate::mongo::{connect, connect_error};
pub(crate) use request::{hash as document_hash, id_key};
use writer::Writer;

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
    /// Statements one `update` command may carry. FerretDB v1 holds a
    /// backend connection for each statement of a command until the command
    /// ends (`internal/handler/msg_update.go`: the query's iterator closed
    /// by a `defer` in the loop), from a pool of 100 per database on
    /// SQLite: a few commands of many upserts in flight take the whole pool
    /// and wait for one another forever. There, one statement per command.
    pub max_update_statements: usize,
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
        Self::with_client(connect(&cfg.uri).await?, cfg).await
    }

    /// The target through a client the caller built (its own options,
    /// monitoring, pool); `cfg.uri` is only used in messages.
    pub async fn with_client(client: Client, cfg: &TargetConfig) -> Result<Self> {
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

impl Target {
    /// An encoder of `schema`'s rows by `mapping` into what this target
    /// can store.
    pub fn encoder(&self, schema: &Schema, mapping: &MappingConfig) -> Result<Encoder> {
        Ok(Encoder::new(schema, mapping)?
            .with_finite_only(!self.limits.non_finite)
            .without_decimal128(!self.limits.decimal128))
    }

    /// The target collection, its documents as raw bytes.
    pub fn collection(&self) -> &Collection<RawDocumentBuf> {
        &self.collection
    }

    /// `database.collection`, for messages.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

async fn server_limits(db: &mongodb::Database, uri: &str) -> Result<ServerLimits> {
    let reply = db
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(|e| connect_error(uri, &e))?;
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
        max_update_statements: if ferretdb { 1 } else { usize::MAX },
    })
}

/// The MongoDB sink of a job: the target and the mapping, checked against
/// the result's schema before any data moves.
pub struct MongoSink {
    target: Target,
    cfg: TargetConfig,
    mapping: MappingConfig,
    budget: Budget,
    dead_letter: Option<Arc<DeadLetter>>,
}

impl MongoSink {
    /// Check `mapping` against the job's whole result (`schema`) and the
    /// target's capabilities; rows are later encoded with `mapping`.
    pub fn new(
        target: Target,
        cfg: &TargetConfig,
        mapping: &MappingConfig,
        schema: &Schema,
        budget: &Budget,
    ) -> Result<Self> {
        check_mapping(schema, mapping, Some(&target.limits))?;
        Ok(MongoSink {
            target,
            cfg: cfg.clone(),
            mapping: mapping.clone(),
            budget: budget.clone(),
            dead_letter: None,
        })
    }

    /// Set rows that cannot be stored aside instead of failing.
    pub fn with_dead_letter(mut self, dead_letter: Option<Arc<DeadLetter>>) -> Self {
        self.dead_letter = dead_letter;
        self
    }
}

/// Check that `mapping` can encode `schema`'s rows, and (with the target's
/// `limits`) that the target can store what it writes.
pub fn check_mapping(
    schema: &Schema,
    mapping: &MappingConfig,
    limits: Option<&ServerLimits>,
) -> Result<()> {
    let encoder = Encoder::new(schema, mapping)?;
    if let Some(column) = limits
        .filter(|l| !l.decimal128)
        .and_then(|_| encoder.decimal128_column(schema))
    {
        return Err(Error::config(
            "mapping.decimal",
            format!(
                "column `{column}` would be written as BSON Decimal128, which the target server \
                 (FerretDB) cannot store; set mapping.decimal = \"string\" (exact) or \"double\""
            ),
        ));
    }
    Ok(())
}

#[async_trait]
impl Sink for MongoSink {
    async fn open(&self, partition: &str, schema: SchemaRef) -> Result<Box<dyn PartitionSink>> {
        let encoder = self
            .target
            .encoder(&schema, &self.mapping)?
            .with_dead_letter(self.dead_letter.is_some());
        let merge = (self.cfg.on_conflict == OnConflict::Merge).then(|| encoder.fields());
        let writer = Writer::new(&self.target, &self.cfg, &self.budget)
            .merging(merge)
            .with_dead_letter(self.dead_letter.clone().map(|d| (d, partition.to_string())));
        Ok(Box::new(MongoPartition {
            encoder: Arc::new(encoder),
            writer,
            budget: self.budget.clone(),
            dead_letter: self.dead_letter.clone(),
            partition: partition.to_string(),
            rows: 0,
        }))
    }

    /// `_id` from key columns: the same row, the same document. Without
    /// `mapping.id` every write is a fresh ObjectId.
    fn idempotent(&self) -> bool {
        !self.mapping.id.is_empty()
    }
}

/// One attempt at a partition: encode each batch on the blocking pool
/// (rayon inside), then hand its documents to the writer.
struct MongoPartition {
    encoder: Arc<Encoder>,
    writer: Writer,
    budget: Budget,
    dead_letter: Option<Arc<DeadLetter>>,
    partition: String,
    /// Rows taken so far: the first row number of the next batch.
    rows: u64,
}

#[async_trait]
impl PartitionSink for MongoPartition {
    async fn write(
        &mut self,
        batch: RecordBatch,
        permit: BatchPermit,
        rejects: Vec<(usize, Reject)>,
    ) -> Result<u64> {
        let arrow_bytes = batch.get_array_memory_size();
        let first_row = self.rows;
        self.rows += batch.num_rows() as u64;
        let encoder = self.encoder.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            encoder.encode_skipping(&batch, first_row, rejects)
        })
        .await
        .map_err(|e| Error::Internal(format!("encoder task: {e}")))??;
        self.budget.observe(arrow_bytes, encoded.bytes);
        if let Some(dl) = &self.dead_letter {
            dl.record(&self.partition, &encoded.rejects)?;
        }
        let bytes = encoded.bytes as u64;
        self.writer.write(encoded, permit).await?;
        Ok(bytes)
    }

    async fn finish(&mut self, _complete: bool) -> Result<()> {
        self.writer.finish().await.map(|_| ())
    }

    fn stats(&self) -> WriteStats {
        self.writer.stats()
    }
}
