//! Redshift/PostgreSQL over the PostgreSQL wire protocol, spoken directly.
//!
//! Redshift has no `COPY ... TO STDOUT`, and a plain query materialises the
//! whole result in the client. So the query is parsed, bound to a portal
//! inside a transaction, and executed with a row limit again and again
//! (`Execute` with `max_rows`): the server keeps the cursor, the client holds
//! one batch. Results come in binary format, and each `DataRow` message is
//! decoded in place into Arrow builders ([`super::pgtypes::ColumnBuilder`]):
//! no row objects, no per-row allocation.
//!
//! Two `Execute`s are kept outstanding, so the server is already producing
//! the next batch while this one is finished and handed on. A producer task
//! owns the connection; the channel to the pipeline holds one batch, and
//! when it is full the task stops reading the socket, which stops the
//! server: backpressure all the way to Redshift.

mod auth;
mod connection;
mod dialect;
mod iam;
mod stream;
mod tls;

use arrow_schema::SchemaRef;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::pgtypes::ColumnBuilder;
use super::SourceBatch;
use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::memory::Budget;
use connection::Connection;

const SYSTEM: &str = "PostgreSQL/Redshift";

/// A running query: yields record batches of at most `fetch_rows` rows.
pub struct PgSource {
    schema: SchemaRef,
    rx: mpsc::Receiver<Result<SourceBatch>>,
    producer: JoinHandle<()>,
    /// The producer was awaited (a JoinHandle is awaited once).
    ended: bool,
    rows_seen: u64,
}

impl PgSource {
    /// Connect, open a transaction, parse `sql` and describe its result (so
    /// that SQL errors and unmappable column types surface before any data
    /// moves), then start fetching `fetch_rows` at a time. Batches are cut
    /// at `fetch_rows` rows or at the budget's batch share of wire bytes,
    /// whichever comes first, and each waits for its permits.
    pub async fn open(
        cfg: &SourceConfig,
        sql: &str,
        budget: &Budget,
        dead_letter: bool,
    ) -> Result<Self> {
        let mut conn = Connection::session(cfg).await?;
        conn.simple_query("BEGIN").await?;
        let (columns, kinds, schema) = conn.result_schema(sql).await?;
        let builders: Vec<ColumnBuilder> = columns
            .iter()
            .zip(&kinds)
            .map(|(c, k)| ColumnBuilder::new(&c.name, *k, cfg.fetch_rows as usize))
            .collect();
        let (tx, rx) = mpsc::channel(1);
        let limits = BatchLimits {
            rows: cfg.fetch_rows as usize,
            bytes: budget.batch_bytes(),
            budget: budget.clone(),
            dead_letter,
        };
        let producer = tokio::spawn(produce(conn, schema.clone(), builders, limits, tx));
        Ok(PgSource {
            schema,
            rx,
            producer,
            ended: false,
            rows_seen: 0,
        })
    }

    /// The Arrow schema of `sql`'s result, without running it.
    pub async fn describe(cfg: &SourceConfig, sql: &str) -> Result<SchemaRef> {
        let mut conn = Connection::connect(cfg).await?;
        let (_, _, schema) = conn.result_schema(sql).await?;
        conn.terminate().await;
        Ok(schema)
    }

    /// The first row of `sql` as text (a small statistics query).
    pub async fn query_row(cfg: &SourceConfig, sql: &str) -> Result<Vec<Option<String>>> {
        let mut conn = Connection::session(cfg).await?;
        let row = conn.simple_query(sql).await?;
        conn.terminate().await;
        Ok(row)
    }

    /// The first column of every row of `sql`, as text (a key sample).
    pub async fn query_column(cfg: &SourceConfig, sql: &str) -> Result<Vec<String>> {
        let mut conn = Connection::session(cfg).await?;
        let values = conn.simple_query_column(sql).await?;
        conn.terminate().await;
        Ok(values)
    }

    /// The Arrow schema of the result.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch with the permits it holds until written, or `None`
    /// when the result is exhausted.
    ///
    /// The channel closes when the reader task ends; only a task that ended
    /// normally (after `COMMIT`) means the end of the result. A task that
    /// panicked or was aborted is an error: the partition is not complete.
    pub async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        if let Some(batch) = self.rx.recv().await {
            if let Ok(b) = &batch {
                self.rows_seen += b.batch.num_rows() as u64;
            }
            return Some(batch);
        }
        if std::mem::replace(&mut self.ended, true) {
            return None;
        }
        match (&mut self.producer).await {
            Ok(()) => None,
            Err(e) => Some(Err(Error::Internal(format!(
                "the reader task ended abnormally after {} rows ({e}); the partition is not complete",
                self.rows_seen
            )))),
        }
    }

    /// Rows received so far.
    pub fn rows_seen(&self) -> u64 {
        self.rows_seen
    }
}

impl Drop for PgSource {
    fn drop(&mut self) {
        self.producer.abort();
    }
}

/// When the reader cuts a batch, and what it does with a bad value.
pub(crate) struct BatchLimits {
    rows: usize,
    /// Wire bytes of the rows.
    bytes: usize,
    budget: Budget,
    /// Set rows with undecodable values aside instead of failing.
    dead_letter: bool,
}

pub(crate) type BatchSender = mpsc::Sender<Result<SourceBatch>>;

async fn produce(
    mut conn: Connection,
    schema: SchemaRef,
    mut builders: Vec<ColumnBuilder>,
    limits: BatchLimits,
    tx: BatchSender,
) {
    let result = async {
        conn.stream(&schema, &mut builders, &limits, &tx).await?;
        conn.simple_query("COMMIT").await?;
        conn.terminate().await;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
}
