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
use tokio_postgres::types::Type;

use super::auth::Login;
use super::SYSTEM;
use super::{dialect, iam, tls};
use crate::config::SourceConfig;
use crate::conninfo::{ConnInfo, Host, SslMode};
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
    /// Bytes read and not yet decoded; the stream decodes rows in place.
    pub(super) read: BytesMut,
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
    /// temporary IAM credentials when `source.iam` is on. The URL's hosts
    /// are tried in order.
    pub(super) async fn connect(cfg: &SourceConfig) -> Result<Self> {
        let (source, iam_settings) = cfg.connection();
        redact::register_uri(&source.url);
        let mut info = ConnInfo::parse(&source.url).map_err(|e| Error::Connect {
            system: SYSTEM,
            target: redact::uri(&source.url),
            message: format!("source.url: {e}"),
            class: Class::Config,
        })?;
        let target = info.target();
        let fail = |message: String, class: Class| Error::Connect {
            system: SYSTEM,
            target: target.clone(),
            message: redact::scrub(&message),
            class,
        };
        if let Some(settings) = &iam_settings {
            let host = info.hosts.iter().find_map(|h| match h {
                Host::Tcp { name, .. } => Some(name.clone()),
                Host::Unix { .. } => None,
            });
            let host = host.ok_or_else(|| fail("IAM needs a TCP host".into(), Class::Config))?;
            let user = info.user.clone().unwrap_or_else(|| "postgres".into());
            let login = iam::login(
                settings,
                iam::target(settings, &host)?,
                &user,
                info.dbname.as_deref(),
            )
            .await?;
            info.user = Some(login.user);
            info.password = Some(login.password);
        }
        let mut last = None;
        for host in &info.hosts {
            match Connection::open(&info, host, source.redshift).await {
                Ok(conn) => return Ok(conn),
                // Another host may answer; a refused login or a bad setting
                // would be refused there too.
                Err((message, Class::Transient)) => last = Some(message),
                Err((message, class)) => return Err(fail(message, class)),
            }
        }
        Err(fail(
            last.unwrap_or_else(|| "no host".into()),
            Class::Transient,
        ))
    }

    /// One host: the socket, TLS, the login.
    async fn open(
        info: &ConnInfo,
        host: &Host,
        redshift: bool,
    ) -> std::result::Result<Self, (String, Class)> {
        let timeout = info.connect_timeout.unwrap_or(Duration::from_secs(30));
        let transient = |e: String| (e, Class::Transient);
        let mode = info.ssl_mode(host);
        let (stream, tls) = match host {
            Host::Tcp { name, port } => {
                let tcp = tokio::time::timeout(timeout, TcpStream::connect((name.as_str(), *port)))
                    .await
                    .map_err(|_| transient(format!("{host}: no answer within {timeout:?}")))?
                    .map_err(|e| transient(format!("{host}: {e}")))?;
                let _ = tcp.set_nodelay(true);
                negotiate_tls(tcp, name, info, mode).await?
            }
            Host::Unix { dir, port } => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                let unix = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(&path))
                    .await
                    .map_err(|_| transient(format!("{host}: no answer within {timeout:?}")))?
                    .map_err(|e| transient(format!("{}: {e}", path.display())))?;
                (Box::new(unix) as Box<dyn Stream>, None)
            }
        };
        let mut conn = Connection {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::with_capacity(4096),
            parameters: HashMap::new(),
            dialect: Dialect::POSTGRES,
        };
        let (name, port) = match host {
            Host::Tcp { name, port } => (name.as_str(), *port),
            Host::Unix { port, .. } => ("", *port),
        };
        let protocol = match redshift {
            true => Some(dialect::REDSHIFT_PROTOCOL),
            false => dialect::startup_protocol(name, port),
        };
        let login = Login {
            info,
            plaintext_fallback: mode != SslMode::Disable && tls.is_none(),
            tls_end_point: tls,
        };
        conn.startup(&login, protocol).await.map_err(|e| match e {
            Error::Query { message, class, .. } => (message, class),
            other => (other.to_string(), other.class()),
        })?;
        if conn.dialect.redshift {
            dialect::learn(name, port);
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
            if let Some(n) = frame_len(&self.read) {
                return Ok(self.read.split_to(n));
            }
            self.fill().await?;
        }
    }

    /// Read more of the socket into the buffer.
    pub(super) async fn fill(&mut self) -> Result<()> {
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

/// The length (tag, length, body) of the message at the front of `buf`
/// when it is complete.
#[inline]
pub(super) fn frame_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes(buf.get(1..5)?.try_into().expect("4 bytes")) as usize;
    (buf.len() > len).then_some(len + 1)
}

/// The TLS exchange `mode` asks for: the stream, and the server
/// certificate's `tls-server-end-point` hash when TLS is on.
async fn negotiate_tls(
    mut tcp: TcpStream,
    host: &str,
    info: &ConnInfo,
    mode: SslMode,
) -> std::result::Result<(Box<dyn Stream>, Option<Vec<u8>>), (String, Class)> {
    let fatal = |m: String| (m, Class::Fatal);
    let Some(config) = tls::client_config(info, mode).map_err(fatal)? else {
        return Ok((Box::new(tcp), None));
    };
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    let io = |e: std::io::Error| (format!("{host}: {e}"), Class::Transient);
    tcp.write_all(&buf).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    match answer[0] {
        b'S' => {
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(tls::server_name(host).map_err(fatal)?, tcp)
                .await
                .map_err(|e| fatal(tls::handshake_error(&e, mode)))?;
            let end_point = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| tls::server_end_point(c));
            Ok((Box::new(tls), end_point.or(Some(Vec::new()))))
        }
        _ if mode == SslMode::Prefer => Ok((Box::new(tcp), None)),
        _ => Err(fatal(format!(
            "the server does not accept TLS, and sslmode={}{}",
            mode.as_str(),
            match info.sslmode {
                Some(_) => "",
                None => " (the default for a host that is not loopback): set sslmode=disable in source.url to connect without TLS",
            }
        ))),
    }
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
