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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::Type;
use tokio_postgres::Config;

use super::pgtypes::{ColumnBuilder, PgKind};
use crate::config::SourceConfig;
use crate::deadletter::Reject;
use crate::error::{Error, Result};
use crate::memory::{BatchPermit, Budget};
use crate::redact;

const SYSTEM: &str = "PostgreSQL/Redshift";

/// A running query: yields record batches of at most `fetch_rows` rows.
pub struct PgSource {
    schema: SchemaRef,
    rx: mpsc::Receiver<Result<SourceBatch>>,
    producer: JoinHandle<()>,
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
            rows_seen: 0,
        })
    }

    /// The Arrow schema of `sql`'s result, without running it.
    pub async fn describe(cfg: &SourceConfig, sql: &str) -> Result<SchemaRef> {
        let mut conn = Connection::connect(&cfg.url).await?;
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
    pub async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        let batch = self.rx.recv().await?;
        if let Ok(b) = &batch {
            self.rows_seen += b.batch.num_rows() as u64;
        }
        Some(batch)
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

/// A batch as the reader hands it on.
pub struct SourceBatch {
    pub batch: RecordBatch,
    /// The batch's share of the memory budget, until it is written.
    pub permit: BatchPermit,
    /// Rows of this batch with a value that could not be decoded (set to
    /// NULL in the batch), in dead-letter mode: to be left out.
    pub rejects: Vec<(usize, Reject)>,
}

/// When the reader cuts a batch, and what it does with a bad value.
struct BatchLimits {
    rows: usize,
    /// Wire bytes of the rows.
    bytes: usize,
    budget: Budget,
    /// Set rows with undecodable values aside instead of failing.
    dead_letter: bool,
}

type BatchSender = mpsc::Sender<Result<SourceBatch>>;

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

/// A column of a described result.
struct Column {
    name: String,
    type_oid: u32,
    typmod: i32,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One PostgreSQL protocol connection (plain or TLS).
struct Connection {
    stream: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
    /// `ParameterStatus` values sent by the server.
    parameters: HashMap<String, String>,
}

const READ_CHUNK: usize = 256 * 1024;

impl Connection {
    /// Connect with the source's settings (`statement_timeout`).
    async fn session(cfg: &SourceConfig) -> Result<Self> {
        let mut conn = Connection::connect(&cfg.url).await?;
        if let Some(ms) = cfg.statement_timeout_ms {
            conn.simple_query(&format!("SET statement_timeout = {ms}"))
                .await?;
        }
        Ok(conn)
    }

    /// Connect and log in, with TLS as the URL's `sslmode` asks.
    async fn connect(url: &str) -> Result<Self> {
        redact::register_uri(url);
        let config: Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::Connect {
                system: SYSTEM,
                target: redact::uri(url),
                message: format!("bad connection URL: {}", redact::scrub(&e.to_string())),
            })?;
        let target = describe_target(&config);
        let fail = |message: String| Error::Connect {
            system: SYSTEM,
            target: target.clone(),
            message: redact::scrub(&message),
        };
        let (host, port) =
            first_host(&config).ok_or_else(|| fail("no TCP host in the URL".into()))?;
        let timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(30));
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = negotiate_tls(tcp, &host, config.get_ssl_mode())
            .await
            .map_err(fail)?;
        let mut conn = Connection {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::with_capacity(4096),
            parameters: HashMap::new(),
        };
        conn.startup(&config).await.map_err(|e| match e {
            Error::Query { message, .. } => fail(message),
            other => other,
        })?;
        Ok(conn)
    }

    async fn startup(&mut self, config: &Config) -> Result<()> {
        let user = config.get_user().unwrap_or("postgres");
        let mut params = vec![
            ("user", user),
            ("client_encoding", "UTF8"),
            ("application_name", "shiftload"),
        ];
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        frontend::startup_message(params.iter().copied(), &mut self.write).map_err(io_error)?;
        self.flush().await?;
        let password = config.get_password().unwrap_or_default();
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.message().await? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password, &mut self.write).map_err(io_error)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(user.as_bytes(), password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write)
                        .map_err(io_error)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut found = false;
                    while let Some(m) = mechanisms.next().map_err(io_error)? {
                        found |= m == sasl::SCRAM_SHA_256;
                    }
                    if !found {
                        return Err(protocol(
                            "the server offers no SASL mechanism shiftload supports",
                        ));
                    }
                    let s = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        s.message(),
                        &mut self.write,
                    )
                    .map_err(io_error)?;
                    self.flush().await?;
                    scram = Some(s);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol("unexpected SASL message"))?;
                    s.update(body.data()).map_err(io_error)?;
                    frontend::sasl_response(s.message(), &mut self.write).map_err(io_error)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol("unexpected SASL message"))?;
                    s.finish(body.data()).map_err(io_error)?;
                }
                backend::Message::ParameterStatus(body) => {
                    if let (Ok(k), Ok(v)) = (body.name(), body.value()) {
                        self.parameters.insert(k.to_string(), v.to_string());
                    }
                }
                backend::Message::BackendKeyData(_) | backend::Message::NoticeResponse(_) => {}
                backend::Message::ReadyForQuery(_) => return Ok(()),
                backend::Message::ErrorResponse(body) => return Err(server_error(&body)),
                _ => {
                    return Err(protocol(
                        "unsupported authentication method requested by the server",
                    ))
                }
            }
        }
    }

    /// Run a statement with the simple protocol; the first row, if any, as
    /// text (empty when there is none).
    async fn simple_query(&mut self, sql: &str) -> Result<Vec<Option<String>>> {
        frontend::query(sql, &mut self.write).map_err(io_error)?;
        self.flush().await?;
        let mut first = None;
        let mut error = None;
        loop {
            match self.message().await? {
                backend::Message::DataRow(row) if first.is_none() => {
                    let mut values = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(r) = ranges.next().map_err(io_error)? {
                        values.push(
                            r.map(|r| String::from_utf8_lossy(&row.buffer()[r]).into_owned()),
                        );
                    }
                    first = Some(values);
                }
                backend::Message::ErrorResponse(body) => error = Some(server_error(&body)),
                backend::Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(first.unwrap_or_default()),
        }
    }

    /// Run a query with the simple protocol; the first column of every row
    /// (NULLs left out), as text.
    async fn simple_query_column(&mut self, sql: &str) -> Result<Vec<String>> {
        frontend::query(sql, &mut self.write).map_err(io_error)?;
        self.flush().await?;
        let mut values = Vec::new();
        let mut error = None;
        loop {
            match self.message().await? {
                backend::Message::DataRow(row) => {
                    if let Some(Some(r)) = row.ranges().next().map_err(io_error)? {
                        values.push(String::from_utf8_lossy(&row.buffer()[r]).into_owned());
                    }
                }
                backend::Message::ErrorResponse(body) => error = Some(server_error(&body)),
                backend::Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(values),
        }
    }

    /// Parse and describe `sql`: its columns, how each decodes, the schema.
    async fn result_schema(&mut self, sql: &str) -> Result<(Vec<Column>, Vec<PgKind>, SchemaRef)> {
        let columns = self.describe(sql).await?;
        let mut kinds = Vec::with_capacity(columns.len());
        for c in &columns {
            let ty = match Type::from_oid(c.type_oid) {
                Some(ty) => ty,
                None => {
                    let name = self
                        .simple_query(&format!("SELECT format_type({}, {})", c.type_oid, c.typmod))
                        .await?
                        .into_iter()
                        .next()
                        .flatten()
                        .unwrap_or_else(|| format!("oid {}", c.type_oid));
                    Type::new(
                        name,
                        c.type_oid,
                        tokio_postgres::types::Kind::Simple,
                        String::new(),
                    )
                }
            };
            kinds.push(PgKind::for_column(&c.name, &ty, c.typmod)?);
        }
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .zip(&kinds)
                .map(|(c, k)| k.field(&c.name))
                .collect::<Vec<_>>(),
        ));
        Ok((columns, kinds, schema))
    }

    /// Parse `sql` as the unnamed statement and describe its result columns.
    async fn describe(&mut self, sql: &str) -> Result<Vec<Column>> {
        frontend::parse("", sql, std::iter::empty(), &mut self.write).map_err(io_error)?;
        frontend::describe(b'S', "", &mut self.write).map_err(io_error)?;
        frontend::sync(&mut self.write);
        self.flush().await?;
        let mut columns = Vec::new();
        let mut error = None;
        loop {
            match self.message().await? {
                backend::Message::RowDescription(body) => {
                    let mut fields = body.fields();
                    while let Some(f) = fields.next().map_err(io_error)? {
                        columns.push(Column {
                            name: f.name().to_string(),
                            type_oid: f.type_oid(),
                            typmod: f.type_modifier(),
                        });
                    }
                }
                backend::Message::ErrorResponse(body) => error = Some(server_error(&body)),
                backend::Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None if columns.is_empty() => Err(Error::Query {
                system: SYSTEM,
                message: "the query returns no columns (it must be a SELECT)".into(),
                code: None,
            }),
            None => Ok(columns),
        }
    }

    /// Bind the parsed statement to a portal and stream it in batches.
    async fn stream(
        &mut self,
        schema: &SchemaRef,
        builders: &mut [ColumnBuilder],
        limits: &BatchLimits,
        tx: &BatchSender,
    ) -> Result<()> {
        let fetch_rows = limits.rows as i32;
        frontend::bind(
            "",
            "",
            [],
            std::iter::empty::<()>(),
            |_, _| unreachable!(),
            [1],
            &mut self.write,
        )
        .map_err(|_| protocol("cannot encode Bind"))?;
        // Two executions outstanding: the server works on the next batch
        // while this one is finished.
        frontend::execute("", fetch_rows, &mut self.write).map_err(io_error)?;
        frontend::execute("", fetch_rows, &mut self.write).map_err(io_error)?;
        frontend::flush(&mut self.write);
        self.flush().await?;
        let mut rows_in_batch = 0usize;
        let mut rejects: Vec<(usize, Reject)> = Vec::new();
        let mut bytes_in_batch = 0usize;
        let mut rows_total = 0u64;
        let mut done = false;
        let mut cut = false;
        let mut error = None;
        while !done {
            // Decode every complete message already in the buffer before
            // reading the socket again.
            let message = self.message().await?;
            match message {
                backend::Message::DataRow(row) if error.is_none() => {
                    let buffer = row.buffer();
                    let mut ranges = row.ranges();
                    for b in builders.iter_mut() {
                        let range = ranges
                            .next()
                            .map_err(io_error)?
                            .ok_or_else(|| protocol("short DataRow"))?;
                        let value = range.map(|r| &buffer[r]);
                        if let Err(message) = b.append(value) {
                            if limits.dead_letter {
                                b.append(None).expect("a NULL always appends");
                                rejects.push((
                                    rows_in_batch,
                                    Reject {
                                        row: 0,
                                        key: String::new(),
                                        column: b.name.clone(),
                                        reason: message,
                                    },
                                ));
                                continue;
                            }
                            return Err(Error::Value {
                                column: b.name.clone(),
                                row: format!(
                                    "row {} of the result",
                                    rows_total + rows_in_batch as u64 + 1
                                ),
                                message,
                            });
                        }
                    }
                    rows_in_batch += 1;
                    bytes_in_batch += buffer.len();
                    // Cut here when the batch's share of the budget is
                    // reached (wide rows), not only at portal boundaries.
                    if rows_in_batch >= limits.rows || bytes_in_batch >= limits.bytes {
                        cut = true;
                    }
                }
                backend::Message::PortalSuspended => {
                    frontend::execute("", fetch_rows, &mut self.write).map_err(io_error)?;
                    frontend::flush(&mut self.write);
                    self.flush().await?;
                }
                backend::Message::CommandComplete(_) => {
                    cut = true;
                    done = true;
                }
                backend::Message::ErrorResponse(body) => {
                    error = Some(server_error(&body));
                    frontend::sync(&mut self.write);
                    self.flush().await?;
                    done = true;
                }
                _ => {}
            }
            if cut {
                cut = false;
                rows_total += rows_in_batch as u64;
                bytes_in_batch = 0;
                emit(
                    schema,
                    builders,
                    &mut rows_in_batch,
                    &mut rejects,
                    &limits.budget,
                    tx,
                )
                .await?;
                if done {
                    // The second Execute meets an exhausted portal; Sync
                    // closes the exchange.
                    frontend::sync(&mut self.write);
                    self.flush().await?;
                }
            }
        }
        // Drain up to ReadyForQuery (the outstanding Execute's answer).
        loop {
            match self.message().await? {
                backend::Message::ReadyForQuery(_) => break,
                backend::Message::ErrorResponse(body) if error.is_none() => {
                    error = Some(server_error(&body))
                }
                _ => {}
            }
        }
        let _ = rows_total;
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn terminate(&mut self) {
        frontend::terminate(&mut self.write);
        let _ = self.flush().await;
    }

    async fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.write).await.map_err(io_error)?;
        self.stream.flush().await.map_err(io_error)?;
        self.write.clear();
        Ok(())
    }

    /// The next backend message, reading the socket as needed.
    async fn message(&mut self) -> Result<backend::Message> {
        loop {
            if let Some(m) = backend::Message::parse(&mut self.read).map_err(io_error)? {
                return Ok(m);
            }
            if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
                self.read.reserve(READ_CHUNK);
            }
            let n = self
                .stream
                .read_buf(&mut self.read)
                .await
                .map_err(io_error)?;
            if n == 0 {
                return Err(Error::Query {
                    system: SYSTEM,
                    message: "the server closed the connection".into(),
                    code: None,
                });
            }
        }
    }
}

/// Finish the builders into a batch, wait for its permits, and send it
/// (waits while the pipeline is busy: backpressure).
async fn emit(
    schema: &SchemaRef,
    builders: &mut [ColumnBuilder],
    rows: &mut usize,
    rejects: &mut Vec<(usize, Reject)>,
    budget: &Budget,
    tx: &BatchSender,
) -> Result<()> {
    if *rows == 0 {
        return Ok(());
    }
    let columns = builders.iter_mut().map(ColumnBuilder::finish).collect();
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Internal(e.to_string()))?;
    *rows = 0;
    let permit = budget.acquire(batch.get_array_memory_size()).await;
    // A closed channel means the consumer is gone; the producer is then
    // aborted, nothing more to do here.
    let batch = SourceBatch {
        batch,
        permit,
        rejects: std::mem::take(rejects),
    };
    let _ = tx.send(Ok(batch)).await;
    Ok(())
}

async fn negotiate_tls(
    mut tcp: TcpStream,
    host: &str,
    mode: SslMode,
) -> std::result::Result<Box<dyn Stream>, String> {
    if mode == SslMode::Disable {
        return Ok(Box::new(tcp));
    }
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await.map_err(|e| e.to_string())?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    match answer[0] {
        b'S' => {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("TLS: bad server name {host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Ok(Box::new(tls))
        }
        _ if mode == SslMode::Require => {
            Err("the server does not accept TLS, and sslmode=require".into())
        }
        _ => Ok(Box::new(tcp)),
    }
}

fn first_host(config: &Config) -> Option<(String, u16)> {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(Host::Tcp(h)) => Some((h.clone(), port)),
        None => Some(("localhost".into(), port)),
        _ => None,
    }
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

/// An `ErrorResponse` as a query error carrying the server's own words.
fn server_error(body: &backend::ErrorResponseBody) -> Error {
    let (mut severity, mut code, mut message, mut detail, mut hint) =
        (String::new(), String::new(), String::new(), None, None);
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'V' => severity = v,
            b'S' if severity.is_empty() => severity = v,
            b'C' => code = v,
            b'M' => message = v,
            b'D' => detail = Some(v),
            b'H' => hint = Some(v),
            _ => {}
        }
    }
    let mut text = format!("{severity} {code}: {message}");
    if let Some(d) = detail {
        text.push_str(&format!(" (detail: {d})"));
    }
    if let Some(h) = hint {
        text.push_str(&format!(" (hint: {h})"));
    }
    Error::Query {
        system: SYSTEM,
        message: redact::scrub(&text),
        code: (!code.is_empty()).then_some(code),
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::Query {
        system: SYSTEM,
        message: format!("connection: {e}"),
        code: None,
    }
}

fn protocol(message: &str) -> Error {
    Error::Query {
        system: SYSTEM,
        message: format!("protocol: {message}"),
        code: None,
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
