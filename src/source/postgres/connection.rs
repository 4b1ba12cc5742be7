//! One PostgreSQL protocol connection: TLS, login, simple queries,
//! Parse/Describe, and the server's errors with their class.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{Schema, SchemaRef};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::Type;
use tokio_postgres::Config;

use super::SYSTEM;
use super::{dialect, iam};
use crate::config::SourceConfig;
use crate::error::{Class, Error, Result};
use crate::redact;
use crate::source::pgtypes::{Dialect, PgKind};

/// A column of a described result.
pub(super) struct Column {
    pub(super) name: String,
    pub(super) type_oid: u32,
    pub(super) typmod: i32,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One PostgreSQL protocol connection (plain or TLS).
pub(super) struct Connection {
    stream: Box<dyn Stream>,
    read: BytesMut,
    pub(super) write: BytesMut,
    /// `ParameterStatus` values sent by the server.
    pub(super) parameters: HashMap<String, String>,
    /// What the server is, learned at login.
    pub(super) dialect: Dialect,
}

const READ_CHUNK: usize = 256 * 1024;

impl Connection {
    /// Connect with the source's settings (`statement_timeout`).
    pub(super) async fn session(cfg: &SourceConfig) -> Result<Self> {
        let mut conn = Connection::connect(cfg).await?;
        if let Some(ms) = cfg.statement_timeout_ms {
            conn.simple_query(&format!("SET statement_timeout = {ms}"))
                .await?;
        }
        Ok(conn)
    }

    /// Connect and log in, with TLS as the URL's `sslmode` asks, and with
    /// temporary IAM credentials when `source.iam` is on.
    pub(super) async fn connect(cfg: &SourceConfig) -> Result<Self> {
        let (source, iam_settings) = cfg.connection();
        let url = source.url;
        redact::register_uri(&url);
        let mut config: Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| Error::Connect {
                    system: SYSTEM,
                    target: redact::uri(&url),
                    message: format!("bad connection URL: {}", redact::scrub(&e.to_string())),
                    class: Class::Config,
                })?;
        let target = describe_target(&config);
        let fail = |message: String, class: Class| Error::Connect {
            system: SYSTEM,
            target: target.clone(),
            message: redact::scrub(&message),
            class,
        };
        let (host, port) = first_host(&config)
            .ok_or_else(|| fail("no TCP host in the URL".into(), Class::Config))?;
        if let Some(settings) = &iam_settings {
            let user = config.get_user().unwrap_or("postgres").to_string();
            let login = iam::login(
                settings,
                iam::target(settings, &host)?,
                &user,
                config.get_dbname(),
            )
            .await?;
            config.user(&login.user);
            config.password(login.password.as_bytes());
        }
        let timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(30));
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}"), Class::Transient))?
            .map_err(|e| fail(e.to_string(), Class::Transient))?;
        let _ = tcp.set_nodelay(true);
        let stream = negotiate_tls(tcp, &host, config.get_ssl_mode())
            .await
            .map_err(|m| fail(m, Class::Fatal))?;
        let mut conn = Connection {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::with_capacity(4096),
            parameters: HashMap::new(),
            dialect: Dialect::POSTGRES,
        };
        let protocol = match source.redshift {
            true => Some(dialect::REDSHIFT_PROTOCOL),
            false => dialect::startup_protocol(&host, port),
        };
        conn.startup(&config, protocol).await.map_err(|e| match e {
            Error::Query { message, class, .. } => fail(message, class),
            other => other,
        })?;
        if conn.dialect.redshift {
            dialect::learn(&host, port);
        }
        Ok(conn)
    }

    /// Run a statement with the simple protocol; the first row, if any, as
    /// text (empty when there is none).
    pub(super) async fn simple_query(&mut self, sql: &str) -> Result<Vec<Option<String>>> {
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
    pub(super) async fn simple_query_column(&mut self, sql: &str) -> Result<Vec<String>> {
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
    pub(super) async fn result_schema(
        &mut self,
        sql: &str,
    ) -> Result<(Vec<Column>, Vec<PgKind>, SchemaRef)> {
        let columns = self.describe(sql).await?;
        let mut kinds = Vec::with_capacity(columns.len());
        for c in &columns {
            let kind = match PgKind::for_column(&c.name, c.type_oid, "", c.typmod, self.dialect) {
                Ok(kind) => kind,
                // Name the type in the error as the server does.
                Err(_) => {
                    let name = match Type::from_oid(c.type_oid) {
                        Some(ty) => ty.name().to_string(),
                        None => self
                            .simple_query(&format!(
                                "SELECT format_type({}, {})",
                                c.type_oid, c.typmod
                            ))
                            .await?
                            .into_iter()
                            .next()
                            .flatten()
                            .unwrap_or_else(|| format!("oid {}", c.type_oid)),
                    };
                    PgKind::for_column(&c.name, c.type_oid, &name, c.typmod, self.dialect)?
                }
            };
            kinds.push(kind);
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
            let mut frame = self.frame().await?;
            if frame[0] == b'T' {
                columns = dialect::row_description(&frame[5..], self.dialect.protocol >= 1)?;
                continue;
            }
            let message = backend::Message::parse(&mut frame)
                .map_err(io_error)?
                .ok_or_else(|| protocol("incomplete message"))?;
            match message {
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
                class: Class::Fatal,
            }),
            None => Ok(columns),
        }
    }

    pub(super) async fn terminate(&mut self) {
        frontend::terminate(&mut self.write);
        let _ = self.flush().await;
    }

    pub(super) async fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.write).await.map_err(io_error)?;
        self.stream.flush().await.map_err(io_error)?;
        self.write.clear();
        Ok(())
    }

    /// The next backend message whole, unparsed (tag, length, body).
    pub(super) async fn frame(&mut self) -> Result<BytesMut> {
        loop {
            if self.read.len() >= 5 {
                let len = u32::from_be_bytes(self.read[1..5].try_into().expect("4 bytes")) as usize;
                if self.read.len() > len {
                    return Ok(self.read.split_to(len + 1));
                }
            }
            self.fill().await?;
        }
    }

    /// Read more of the socket into the buffer.
    async fn fill(&mut self) -> Result<()> {
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
                class: Class::Transient,
            });
        }
        Ok(())
    }

    /// The next backend message, reading the socket as needed.
    pub(super) async fn message(&mut self) -> Result<backend::Message> {
        loop {
            if let Some(m) = backend::Message::parse(&mut self.read).map_err(io_error)? {
                return Ok(m);
            }
            self.fill().await?;
        }
    }
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
pub(super) fn server_error(body: &backend::ErrorResponseBody) -> Error {
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
    let class = sqlstate_class(&code, &message, detail.as_deref());
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
        class,
    }
}

/// What to do about a server error, from its SQLSTATE.
///
/// - `57014` (statement timeout, user cancel, Redshift WLM/QMR abort): a
///   timeout, retried and then split;
/// - `57P01`–`57P03` (shutdown, crash, cannot connect now), `40001`/`40P01`
///   (serialization failure, deadlock), `53xxx` (insufficient resources),
///   `08xxx` (connection exceptions): transient;
/// - Redshift's serializable isolation violation, which it reports as
///   `XX000` with error 1023 at the start of the message or in the detail:
///   transient; any other `XX000` is not;
/// - everything else (bad SQL, permissions, logins): fatal.
pub(crate) fn sqlstate_class(code: &str, message: &str, detail: Option<&str>) -> Class {
    let redshift_1023 = |t: &str| {
        let t = t.trim_start();
        t.strip_prefix("1023")
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
            || t.contains("Serializable isolation violation")
    };
    match code {
        "57014" => Class::Timeout,
        "57P01" | "57P02" | "57P03" | "40001" | "40P01" => Class::Transient,
        c if c.starts_with("53") || c.starts_with("08") => Class::Transient,
        "XX000" if redshift_1023(message) || detail.is_some_and(redshift_1023) => Class::Transient,
        _ => Class::Fatal,
    }
}

pub(super) fn io_error(e: std::io::Error) -> Error {
    Error::Query {
        system: SYSTEM,
        message: format!("connection: {e}"),
        code: None,
        class: Class::Transient,
    }
}

pub(super) fn protocol(message: &str) -> Error {
    Error::Query {
        system: SYSTEM,
        message: format!("protocol: {message}"),
        code: None,
        class: Class::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redshift_errors_by_sqlstate_and_code() {
        let serializable = "Serializable isolation violation on table - 100, transactions forming the cycle are: 1, 2";
        assert_eq!(
            sqlstate_class("XX000", "1023", Some(serializable)),
            Class::Transient
        );
        assert_eq!(
            sqlstate_class(
                "XX000",
                "1023 DETAIL: Serializable isolation violation",
                None
            ),
            Class::Transient
        );
        // "1023" anywhere else, or under another SQLSTATE, is not a conflict.
        assert_eq!(
            sqlstate_class("XX000", "row 1023 is bad", None),
            Class::Fatal
        );
        assert_eq!(
            sqlstate_class("XX000", "10234: disk full", None),
            Class::Fatal
        );
        assert_eq!(
            sqlstate_class("22003", "1023", Some(serializable)),
            Class::Fatal
        );
        assert_eq!(
            sqlstate_class("57014", "Query (1023) cancelled on user's request", None),
            Class::Timeout
        );
        assert_eq!(
            sqlstate_class(
                "XX000",
                "Invalid protocol sequence 'P' while in PortalSuspended state.",
                None
            ),
            Class::Fatal
        );
    }
}
