//! Redshift/PostgreSQL over the PostgreSQL wire protocol.
//!
//! Redshift has no `COPY ... TO STDOUT`, and a plain query materialises the
//! whole result in the client. So the query is prepared, bound to a portal
//! inside a transaction, and executed with a row limit again and again
//! (`Execute` with `max_rows`): the server keeps the cursor, the client holds
//! at most a few blocks of rows. Results come in binary format and are
//! decoded column by column into Arrow (see [`super::pgtypes`]).
//!
//! A producer task owns the connection and fetches the next block while the
//! previous one is decoded: the bounded channel between them (one block)
//! gives both the overlap and the backpressure.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use rayon::prelude::*;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::pgtypes::{ColumnDecoder, PgKind};
use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::redact;

const SYSTEM: &str = "PostgreSQL/Redshift";

/// A running query: yields blocks of rows, decodes them into record batches.
pub struct PgSource {
    schema: SchemaRef,
    decoders: Vec<ColumnDecoder>,
    rx: mpsc::Receiver<Result<Vec<Row>>>,
    producer: JoinHandle<()>,
    rows_seen: u64,
}

/// A block of fetched rows, not yet decoded. Decoding is CPU work; the
/// pipeline runs it off the async runtime.
pub struct RowBlock {
    rows: Vec<Row>,
    first_row: u64,
}

impl RowBlock {
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl PgSource {
    /// Connect, prepare `sql` (so that SQL errors and unmappable column types
    /// surface before any data moves) and start fetching `fetch_rows` at a time.
    pub async fn open(cfg: &SourceConfig, sql: &str) -> Result<Self> {
        let client = connect(&cfg.url).await?;
        let statement = client.prepare(sql).await.map_err(query_error)?;
        let decoders = statement
            .columns()
            .iter()
            .enumerate()
            .map(|(index, c)| {
                Ok(ColumnDecoder {
                    name: c.name().to_string(),
                    index,
                    kind: PgKind::for_column(c.name(), c.type_(), c.type_modifier())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = Arc::new(Schema::new(
            decoders
                .iter()
                .map(|d| d.kind.field(&d.name))
                .collect::<Vec<_>>(),
        ));
        let (tx, rx) = mpsc::channel(1);
        let fetch_rows = cfg.fetch_rows as i32;
        let producer = tokio::spawn(produce(client, statement, fetch_rows, tx));
        Ok(PgSource {
            schema,
            decoders,
            rx,
            producer,
            rows_seen: 0,
        })
    }

    /// The Arrow schema of the result.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next block of rows, or `None` when the result is exhausted.
    pub async fn next_block(&mut self) -> Option<Result<RowBlock>> {
        let rows = match self.rx.recv().await? {
            Ok(rows) => rows,
            Err(e) => return Some(Err(e)),
        };
        let first_row = self.rows_seen;
        self.rows_seen += rows.len() as u64;
        Some(Ok(RowBlock { rows, first_row }))
    }

    /// Rows fetched so far.
    pub fn rows_seen(&self) -> u64 {
        self.rows_seen
    }

    /// A decoder for blocks, usable on another thread.
    pub fn block_decoder(&self) -> BlockDecoder {
        BlockDecoder {
            schema: self.schema.clone(),
            decoders: self.decoders.clone().into(),
        }
    }
}

impl Drop for PgSource {
    fn drop(&mut self) {
        self.producer.abort();
    }
}

/// Decodes [`RowBlock`]s into record batches, columns in parallel.
#[derive(Clone)]
pub struct BlockDecoder {
    schema: SchemaRef,
    decoders: Arc<[ColumnDecoder]>,
}

impl BlockDecoder {
    pub fn decode(&self, block: &RowBlock) -> Result<RecordBatch> {
        let columns = self
            .decoders
            .par_iter()
            .map(|d| d.decode(&block.rows, block.first_row))
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

async fn produce(
    mut client: Client,
    statement: Statement,
    fetch_rows: i32,
    tx: mpsc::Sender<Result<Vec<Row>>>,
) {
    let result = async {
        let txn = client.transaction().await.map_err(query_error)?;
        let portal = txn.bind(&statement, &[]).await.map_err(query_error)?;
        loop {
            let rows = txn
                .query_portal(&portal, fetch_rows)
                .await
                .map_err(query_error)?;
            let last = rows.len() < fetch_rows as usize;
            if !rows.is_empty() && tx.send(Ok(rows)).await.is_err() {
                // The consumer is gone: nothing more to do.
                return Ok(());
            }
            if last {
                break;
            }
        }
        txn.commit().await.map_err(query_error)
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
}

/// Connect with TLS as the URL's `sslmode` asks.
pub async fn connect(url: &str) -> Result<Client> {
    redact::register_uri(url);
    let config: Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| Error::Connect {
            system: SYSTEM,
            target: redact::uri(url),
            message: format!("bad connection URL: {}", redact::scrub(&e.to_string())),
        })?;
    let target = describe_target(&config);
    let connect_err = |e: tokio_postgres::Error| Error::Connect {
        system: SYSTEM,
        target: target.clone(),
        message: redact::scrub(&error_chain(&e)),
    };
    let client = if config.get_ssl_mode() == SslMode::Disable {
        let (client, connection) = config.connect(NoTls).await.map_err(connect_err)?;
        tokio::spawn(connection);
        client
    } else {
        let (client, connection) = config
            .connect(tls_connector()?)
            .await
            .map_err(connect_err)?;
        tokio::spawn(connection);
        client
    };
    Ok(client)
}

fn tls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `host:port/database as user`, never the password.
fn describe_target(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    format!(
        "{}/{} as user {}",
        if hosts.is_empty() {
            "localhost:5432".to_string()
        } else {
            hosts.join(",")
        },
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)")
    )
}

/// Turn a driver error into a query error carrying the server's own message.
pub fn query_error(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => {
            let mut message = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                message.push_str(&format!(" (detail: {detail})"));
            }
            if let Some(hint) = db.hint() {
                message.push_str(&format!(" (hint: {hint})"));
            }
            Error::Query {
                system: SYSTEM,
                message: redact::scrub(&message),
                code: Some(db.code().code().to_string()),
            }
        }
        None => Error::Query {
            system: SYSTEM,
            message: redact::scrub(&error_chain(&e)),
            code: None,
        },
    }
}

/// `outer: inner: innermost`, skipping repeats.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
