//! A Redshift-dialect test server: a proxy in front of the project's
//! PostgreSQL that speaks what docs/REDSHIFT.md lists where Redshift differs
//! from PostgreSQL:
//!
//! - login: MD5, or Redshift's SHA-256 digest (code 13) for the users given
//!   as such; the Redshift ParameterStatus set (`server_version=8.0.2`,
//!   `UNICODE`, lower-case `datestyle`, `padb_version`, no
//!   `standard_conforming_strings`), `server_protocol_version` echoed
//!   (capped by [`Options::max_protocol`]);
//! - RowDescription with Redshift's OIDs (BYTEA → VARBYTE 6551, JSON/JSONB →
//!   SUPER 4000; `…__ym`/`…__ds` INTERVAL columns → 1188/1190; text columns
//!   named `…__geometry`, `…__geography`, `…__hllsketch` → 3000/3001/2935)
//!   and, from protocol 1, the extended metadata after each field;
//! - values in Redshift's wire forms: NUMERIC in binary as an 8/16-byte
//!   unscaled integer (to every client that asks for binary — the bytes a
//!   PostgreSQL decoder reads as zero), INTERVAL as 12 bytes, YEAR TO MONTH
//!   as 4, DAY TO SECOND as 8, VARBYTE text as hex without `\x`;
//! - Execute's max_rows ignored on the unnamed portal; Parse while a portal
//!   is suspended answered with Redshift's protocol error;
//! - errors injected once after a number of rows ([`Injection`]).
//!
//! Its conversions are written independently of the reader's decoders.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An error sent once, in place of the next row, after `after_rows` rows.
#[derive(Clone)]
pub struct Injection {
    pub after_rows: u64,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
}

#[derive(Default)]
pub struct Options {
    /// The highest `server_protocol_version` granted (0: never confirmed).
    pub max_protocol: u8,
    /// Ignore max_rows on every portal, not only the unnamed one: all rows
    /// come back from the first Execute.
    pub ignore_max_rows: bool,
    /// Users who log in with the SHA-256 digest: (user, password).
    pub sha256_users: Vec<(String, String)>,
    /// Ask the project's user for the password in cleartext (code 3)
    /// instead of MD5.
    pub cleartext: bool,
    pub injections: Mutex<VecDeque<Injection>>,
}

/// What the server saw, for assertions.
#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    /// `client_protocol_version` asked by each connection.
    pub protocols_asked: Mutex<Vec<Option<u8>>>,
    /// Most Executes outstanding at once on one connection.
    pub max_executes_in_flight: AtomicUsize,
    pub executes_on_unnamed_portal: AtomicU64,
    pub parse_while_suspended: AtomicU64,
    pub injected: AtomicU64,
    pub rows: AtomicU64,
    /// Password messages (`p`, cleartext or MD5) received.
    pub passwords_received: AtomicU64,
}

pub struct DialectServer {
    pub port: u16,
    pub stats: Arc<Stats>,
    pub options: Arc<Options>,
}

impl DialectServer {
    /// Listen on a free loopback port, in front of `SHIFTLOAD_PG_URL`.
    pub async fn start(options: Options) -> DialectServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let options = Arc::new(options);
        let (s, o) = (stats.clone(), options.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (s, o) = (s.clone(), o.clone());
                tokio::spawn(async move {
                    let _ = session(client, s, o).await;
                });
            }
        });
        DialectServer {
            port,
            stats,
            options,
        }
    }

    /// A source URL for `user` with `password` through this server.
    pub fn url(&self, user: &str, password: &str) -> String {
        let pg: tokio_postgres::Config = super::pg_url().parse().unwrap();
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{}?sslmode=disable",
            self.port,
            pg.get_dbname().unwrap()
        )
    }

    /// The URL of the project's own user (MD5 login).
    pub fn default_url(&self) -> String {
        let pg: tokio_postgres::Config = super::pg_url().parse().unwrap();
        let pw = String::from_utf8(pg.get_password().unwrap().to_vec()).unwrap();
        self.url(pg.get_user().unwrap(), &pw)
    }

    pub fn inject(&self, i: Injection) {
        self.options.injections.lock().unwrap().push_back(i);
    }
}

type Io = std::io::Result<()>;

fn other(m: impl Into<String>) -> std::io::Error {
    std::io::Error::other(m.into())
}

/// One frame: tag and body.
async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<(u8, BytesMut)> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() > len {
                let mut f = buf.split_to(len + 1);
                let tag = f[0];
                f.advance(5);
                return Ok((tag, f));
            }
        }
        if s.read_buf(buf).await? == 0 {
            return Err(other("closed"));
        }
    }
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(((body.len() + 4) as u32).to_be_bytes());
    v.extend(body);
    v
}

fn error_frame(code: &str, message: &str, detail: Option<&str>) -> Vec<u8> {
    let mut b = Vec::new();
    for (t, v) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', code),
        (b'M', message),
    ] {
        b.push(t);
        b.extend(v.as_bytes());
        b.push(0);
    }
    if let Some(d) = detail {
        b.push(b'D');
        b.extend(d.as_bytes());
        b.push(0);
    }
    b.push(0);
    frame(b'E', &b)
}

fn cstr(b: &mut BytesMut) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap();
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    b.advance(end + 1);
    s
}

async fn session(mut client: TcpStream, stats: Arc<Stats>, options: Arc<Options>) -> Io {
    stats.connections.fetch_add(1, Ordering::Relaxed);
    // Startup (after declining TLS).
    let params = loop {
        let len = client.read_u32().await? as usize;
        let mut body = vec![0; len - 4];
        client.read_exact(&mut body).await?;
        let code = u32::from_be_bytes(body[..4].try_into().unwrap());
        if code == 80877103 {
            client.write_all(b"N").await?;
            continue;
        }
        let mut b = BytesMut::from(&body[4..]);
        let mut params = HashMap::new();
        while b.first() != Some(&0) && !b.is_empty() {
            let k = cstr(&mut b);
            let v = cstr(&mut b);
            params.insert(k, v);
        }
        break params;
    };
    let asked = params
        .get("client_protocol_version")
        .and_then(|v| v.parse::<u8>().ok());
    stats.protocols_asked.lock().unwrap().push(asked);
    let protocol = asked.map(|a| a.min(options.max_protocol));
    let user = params.get("user").cloned().unwrap_or_default();
    let mut cbuf = BytesMut::new();
    if !login(&mut client, &mut cbuf, &user, &options, &stats).await? {
        return Ok(());
    }
    let mut backend = backend_login(params.get("database").cloned()).await?;
    let mut out = frame(b'R', &0u32.to_be_bytes());
    let session_id = format!(
        "{:x}",
        std::process::id() as u64 * 7919 + stats.connections.load(Ordering::Relaxed)
    );
    let mut statuses = vec![
        ("server_version", "8.0.2".to_string()),
        ("server_encoding", "UNICODE".into()),
        ("client_encoding", "UNICODE".into()),
        ("datestyle", "ISO, MDY".into()),
        ("integer_datetimes", "on".into()),
        ("TimeZone", "UTC".into()),
        ("padb_version", "1.0.77467".into()),
        ("max_numeric_precision", "38".into()),
        ("max_varchar_size", "65535".into()),
        ("session_id", session_id),
    ];
    if let Some(p) = protocol {
        statuses.push(("server_protocol_version", p.to_string()));
    }
    for (k, v) in statuses {
        let mut b = Vec::new();
        b.extend(k.as_bytes());
        b.push(0);
        b.extend(v.as_bytes());
        b.push(0);
        out.extend(frame(b'S', &b));
    }
    out.extend(frame(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
    out.extend(frame(b'Z', b"I"));
    client.write_all(&out).await?;
    let mut relay = Relay {
        protocol: protocol.unwrap_or(0),
        stats,
        options,
        statements: HashMap::new(),
        portals: HashMap::new(),
        describes: VecDeque::new(),
        executing: VecDeque::new(),
        suspended: Vec::new(),
        simple: None,
        rows: 0,
        aborted: false,
    };
    relay.run(&mut client, cbuf, &mut backend).await
}

/// Authenticate the client: SHA-256 digest for the configured users, MD5
/// (or cleartext) with the project's password for the project's user.
/// False when refused.
async fn login(
    c: &mut TcpStream,
    buf: &mut BytesMut,
    user: &str,
    o: &Options,
    stats: &Stats,
) -> std::io::Result<bool> {
    let pg: tokio_postgres::Config = super::pg_url().parse().unwrap();
    if let Some((_, password)) = o.sha256_users.iter().find(|(u, _)| u == user) {
        let (salt, nonce) = (b"s4lt-r5", b"server-nonce-0001");
        let mut b = Vec::new();
        b.extend(13u32.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend((salt.len() as u32).to_be_bytes());
        b.extend(salt);
        b.extend((nonce.len() as u32).to_be_bytes());
        b.extend(nonce);
        c.write_all(&frame(b'R', &b)).await?;
        let (tag, mut body) = read_frame(c, buf).await?;
        if tag != b'd' {
            refuse(c, user.to_string()).await?;
            return Ok(false);
        }
        let dlen = body.get_u32() as usize;
        let digest = body.split_to(dlen);
        let nlen = body.get_u32() as usize;
        let client_nonce = body.split_to(nlen);
        let stored = Sha256::digest([password.as_bytes(), &salt[..]].concat());
        let want = Sha256::digest([&stored[..], &nonce[..], &client_nonce[..]].concat());
        if digest[..] != want[..] || client_nonce.is_empty() {
            refuse(c, user.to_string()).await?;
            return Ok(false);
        }
        return Ok(true);
    }
    let pw = String::from_utf8(pg.get_password().unwrap().to_vec()).unwrap();
    if user != pg.get_user().unwrap() {
        refuse(c, user.to_string()).await?;
        return Ok(false);
    }
    let salt = [7u8, 1, 9, 3];
    let mut b = if o.cleartext { 3u32 } else { 5u32 }.to_be_bytes().to_vec();
    if !o.cleartext {
        b.extend(salt);
    }
    c.write_all(&frame(b'R', &b)).await?;
    let (tag, body) = read_frame(c, buf).await?;
    if tag == b'p' {
        stats.passwords_received.fetch_add(1, Ordering::Relaxed);
    }
    let want = match o.cleartext {
        true => pw.clone(),
        false => postgres_protocol::authentication::md5_hash(user.as_bytes(), pw.as_bytes(), salt),
    };
    if tag != b'p' || &body[..body.len() - 1] != want.as_bytes() {
        refuse(c, user.to_string()).await?;
        return Ok(false);
    }
    Ok(true)
}

async fn refuse(c: &mut TcpStream, user: String) -> Io {
    let message = format!("password authentication failed for user \"{user}\"");
    c.write_all(&error_frame("28P01", &message, None)).await
}

/// Log into the project's PostgreSQL (SCRAM) and read up to ReadyForQuery.
async fn backend_login(database: Option<String>) -> std::io::Result<TcpStream> {
    use postgres_protocol::authentication::sasl;
    use postgres_protocol::message::frontend;
    let pg: tokio_postgres::Config = super::pg_url().parse().unwrap();
    let port = pg.get_ports()[0];
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let user = pg.get_user().unwrap().to_string();
    let db = database.unwrap_or_else(|| pg.get_dbname().unwrap().to_string());
    let mut w = BytesMut::new();
    frontend::startup_message([("user", user.as_str()), ("database", db.as_str())], &mut w)?;
    s.write_all(&w).await?;
    let mut buf = BytesMut::new();
    let mut scram = None;
    loop {
        let (tag, mut body) = read_frame(&mut s, &mut buf).await?;
        match tag {
            b'R' => {
                let mut w = BytesMut::new();
                match body.get_u32() {
                    0 => continue,
                    10 => {
                        let sc = sasl::ScramSha256::new(
                            pg.get_password().unwrap(),
                            sasl::ChannelBinding::unsupported(),
                        );
                        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, sc.message(), &mut w)?;
                        scram = Some(sc);
                    }
                    11 => {
                        let sc = scram.as_mut().unwrap();
                        sc.update(&body)?;
                        frontend::sasl_response(sc.message(), &mut w)?;
                    }
                    12 => scram.as_mut().unwrap().finish(&body)?,
                    n => return Err(other(format!("backend auth {n}"))),
                }
                s.write_all(&w).await?;
            }
            b'Z' => return Ok(s),
            b'E' => return Err(other("backend login failed")),
            _ => {}
        }
    }
}

/// How one result column is presented.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Rs {
    Same,
    Numeric { precision: i32, scale: i32 },
    Interval,
    YearToMonth,
    DayToSecond,
    Varbyte,
    Geometry,
    Geography,
    Super,
    Hll,
}

/// A bound portal: each column's presentation and the format the client
/// asked for.
struct Portal {
    cols: Vec<(Rs, i16)>,
}

struct Relay {
    protocol: u8,
    stats: Arc<Stats>,
    options: Arc<Options>,
    statements: HashMap<String, Vec<Rs>>,
    portals: HashMap<String, Portal>,
    /// Statement names whose Describe is awaiting its RowDescription.
    describes: VecDeque<String>,
    /// Portals of the Executes outstanding, oldest first.
    executing: VecDeque<String>,
    suspended: Vec<String>,
    /// Columns of the simple query under way.
    simple: Option<Vec<Rs>>,
    rows: u64,
    aborted: bool,
}

impl Relay {
    async fn run(
        &mut self,
        client: &mut TcpStream,
        mut cbuf: BytesMut,
        backend: &mut TcpStream,
    ) -> Io {
        let mut bbuf = BytesMut::new();
        loop {
            if self.aborted {
                // The backend is gone; answer the client's closing moves.
                let (tag, _) = read_frame(client, &mut cbuf).await?;
                match tag {
                    b'S' => client.write_all(&frame(b'Z', b"E")).await?,
                    b'Q' => {
                        let mut f = error_frame("25P02", "current transaction is aborted", None);
                        f.extend(frame(b'Z', b"E"));
                        client.write_all(&f).await?
                    }
                    b'X' => return Ok(()),
                    _ => {}
                }
                continue;
            }
            tokio::select! {
                f = read_frame(client, &mut cbuf) => {
                    let (tag, body) = f?;
                    if let Some(out) = self.on_client(tag, body, client).await? {
                        backend.write_all(&out).await?;
                    }
                    if tag == b'X' { return Ok(()); }
                }
                f = read_frame(backend, &mut bbuf) => {
                    let (tag, body) = f?;
                    let out = self.on_backend(tag, body);
                    client.write_all(&out).await?;
                    if self.aborted {
                        let _ = backend.shutdown().await;
                    }
                }
            }
        }
    }

    /// A client message, rewritten for the backend (None: answered here).
    async fn on_client(
        &mut self,
        tag: u8,
        mut body: BytesMut,
        client: &mut TcpStream,
    ) -> std::io::Result<Option<Vec<u8>>> {
        match tag {
            b'P' if !self.suspended.is_empty() => {
                self.stats
                    .parse_while_suspended
                    .fetch_add(1, Ordering::Relaxed);
                client
                    .write_all(&error_frame(
                        "XX000",
                        "Invalid protocol sequence 'P' while in PortalSuspended state.",
                        None,
                    ))
                    .await?;
                self.aborted = true;
                return Ok(None);
            }
            b'D' if body[0] == b'S' => {
                let mut b = body.clone();
                b.advance(1);
                self.describes.push_back(cstr(&mut b));
            }
            b'B' => return Ok(Some(self.bind(body))),
            b'E' => {
                let portal = cstr(&mut body);
                let mut max_rows = body.get_i32();
                if portal.is_empty() {
                    self.stats
                        .executes_on_unnamed_portal
                        .fetch_add(1, Ordering::Relaxed);
                    max_rows = 0;
                }
                self.executing.push_back(portal.clone());
                self.stats
                    .max_executes_in_flight
                    .fetch_max(self.executing.len(), Ordering::Relaxed);
                let mut b = portal.into_bytes();
                b.push(0);
                b.extend(max_rows.to_be_bytes());
                return Ok(Some(frame(b'E', &b)));
            }
            b'Q' => self.simple = Some(Vec::new()),
            _ => {}
        }
        Ok(Some(frame(tag, &body)))
    }

    /// Bind: per column, the client's format and the backend's.
    fn bind(&mut self, mut body: BytesMut) -> Vec<u8> {
        let portal = cstr(&mut body);
        let statement = cstr(&mut body);
        let mut head = Vec::new();
        head.extend(portal.as_bytes());
        head.push(0);
        head.extend(statement.as_bytes());
        head.push(0);
        let nfmt = body.get_u16() as usize;
        head.extend((nfmt as u16).to_be_bytes());
        head.extend(&body[..2 * nfmt]);
        body.advance(2 * nfmt);
        let nparams = body.get_u16();
        head.extend(nparams.to_be_bytes());
        for _ in 0..nparams {
            let len = body.get_i32();
            head.extend(len.to_be_bytes());
            if len > 0 {
                head.extend(&body[..len as usize]);
                body.advance(len as usize);
            }
        }
        let nres = body.get_u16() as usize;
        let asked: Vec<i16> = (0..nres).map(|_| body.get_i16()).collect();
        let cols = self.statements.get(&statement).cloned().unwrap_or_default();
        let fmt = |i: usize| match asked.len() {
            0 => 0,
            1 => asked[0],
            _ => asked[i],
        };
        let mut presented = Vec::new();
        let mut backend_formats = Vec::new();
        for (i, c) in cols.iter().enumerate() {
            let f = fmt(i);
            presented.push((*c, f));
            backend_formats.push(match (*c, f) {
                // Converted from PostgreSQL's text.
                (Rs::Numeric { .. } | Rs::Super | Rs::Geometry | Rs::Geography | Rs::Hll, _) => 0,
                (Rs::Varbyte, _) => 1,
                (_, f) => f,
            });
        }
        self.portals.insert(portal, Portal { cols: presented });
        head.extend((backend_formats.len() as u16).to_be_bytes());
        for f in backend_formats {
            head.extend(f.to_be_bytes());
        }
        frame(b'B', &head)
    }

    /// A backend message, rewritten for the client.
    fn on_backend(&mut self, tag: u8, body: BytesMut) -> Vec<u8> {
        match tag {
            b'T' => {
                let (cols, out) = self.row_description(body);
                if let Some(s) = self.simple.as_mut() {
                    *s = cols;
                } else if let Some(name) = self.describes.pop_front() {
                    self.statements.insert(name, cols);
                }
                out
            }
            b'n' => {
                self.describes.pop_front();
                frame(tag, &body)
            }
            b'D' => self.data_row(body),
            b's' => {
                if let Some(p) = self.executing.pop_front() {
                    self.suspended.push(p);
                }
                frame(tag, &body)
            }
            b'C' => {
                if self.simple.is_none() {
                    if let Some(p) = self.executing.pop_front() {
                        self.suspended.retain(|s| *s != p);
                    }
                }
                frame(tag, &body)
            }
            b'E' => {
                self.executing.clear();
                frame(tag, &body)
            }
            b'Z' => {
                self.simple = None;
                if body[0] == b'I' {
                    self.suspended.clear();
                    self.portals.clear();
                }
                frame(tag, &body)
            }
            // PostgreSQL-only reports are not forwarded.
            b'S' => {
                let mut b = body.clone();
                let k = cstr(&mut b);
                if matches!(
                    k.as_str(),
                    "standard_conforming_strings" | "server_version_num" | "server_version"
                ) {
                    return Vec::new();
                }
                frame(tag, &body)
            }
            _ => frame(tag, &body),
        }
    }

    fn row_description(&self, mut body: BytesMut) -> (Vec<Rs>, Vec<u8>) {
        let n = body.get_u16();
        let mut out = n.to_be_bytes().to_vec();
        let mut cols = Vec::new();
        for _ in 0..n {
            let name = cstr(&mut body);
            let table = body.get_u32();
            let attnum = body.get_i16();
            let oid = body.get_u32();
            let typlen = body.get_i16();
            let typmod = body.get_i32();
            let format = body.get_i16();
            let suffix = |s: &str| name.ends_with(s);
            let (rs, rs_oid) = match oid {
                1700 => {
                    let t = typmod - 4;
                    (
                        Rs::Numeric {
                            precision: (t >> 16) & 0xffff,
                            scale: t & 0xffff,
                        },
                        1700,
                    )
                }
                1186 if suffix("__ym") => (Rs::YearToMonth, 1188),
                1186 if suffix("__ds") => (Rs::DayToSecond, 1190),
                1186 => (Rs::Interval, 1186),
                17 => (Rs::Varbyte, 6551),
                114 | 3802 => (Rs::Super, 4000),
                25 | 1043 if suffix("__geometry") => (Rs::Geometry, 3000),
                25 | 1043 if suffix("__geography") => (Rs::Geography, 3001),
                25 | 1043 if suffix("__hllsketch") => (Rs::Hll, 2935),
                o => (Rs::Same, o),
            };
            cols.push(rs);
            out.extend(name.as_bytes());
            out.push(0);
            out.extend(table.to_be_bytes());
            out.extend(attnum.to_be_bytes());
            out.extend(rs_oid.to_be_bytes());
            out.extend(typlen.to_be_bytes());
            out.extend(typmod.to_be_bytes());
            out.extend(format.to_be_bytes());
            if self.protocol >= 1 {
                for s in ["public", "", name.as_str(), "dev"] {
                    out.extend(s.as_bytes());
                    out.push(0);
                }
                out.extend(0u16.to_be_bytes());
            }
        }
        (cols, frame(b'T', &out))
    }

    fn data_row(&mut self, mut body: BytesMut) -> Vec<u8> {
        let cols: Vec<(Rs, i16)> = match &self.simple {
            Some(cols) => cols.iter().map(|rs| (*rs, -1)).collect(),
            None => {
                self.rows += 1;
                self.stats.rows.fetch_add(1, Ordering::Relaxed);
                if let Some(e) = self.take_injection() {
                    self.aborted = true;
                    self.stats.injected.fetch_add(1, Ordering::Relaxed);
                    return error_frame(e.code, &e.message, e.detail.as_deref());
                }
                let portal = self.executing.front().cloned().unwrap_or_default();
                self.portals
                    .get(&portal)
                    .map(|p| p.cols.clone())
                    .unwrap_or_default()
            }
        };
        let n = body.get_u16();
        let mut out = n.to_be_bytes().to_vec();
        for i in 0..n as usize {
            let len = body.get_i32();
            if len < 0 {
                out.extend((-1i32).to_be_bytes());
                continue;
            }
            let v = body.split_to(len as usize);
            let (rs, f) = cols.get(i).copied().unwrap_or((Rs::Same, 0));
            let v = convert(rs, f, &v);
            out.extend((v.len() as i32).to_be_bytes());
            out.extend(v);
        }
        frame(b'D', &out)
    }

    fn take_injection(&mut self) -> Option<Injection> {
        let mut q = self.options.injections.lock().unwrap();
        if q.front().is_some_and(|i| self.rows > i.after_rows) {
            return q.pop_front();
        }
        None
    }
}

/// One value from PostgreSQL's form (as the backend was asked) into
/// Redshift's form in format `f`.
fn convert(rs: Rs, f: i16, v: &[u8]) -> Vec<u8> {
    let text = || String::from_utf8(v.to_vec()).unwrap();
    match (rs, f) {
        // Simple queries: PostgreSQL's text, VARBYTE without `\x`.
        (Rs::Varbyte, -1) => v.strip_prefix(b"\\x").unwrap_or(v).to_vec(),
        (_, -1) => v.to_vec(),
        (Rs::Numeric { precision, scale }, 1) => {
            let unscaled = unscale(&text(), scale);
            if precision <= 19 {
                (unscaled as i64).to_be_bytes().to_vec()
            } else {
                unscaled.to_be_bytes().to_vec()
            }
        }
        (Rs::Interval, 1) => {
            let (micros, days, months) = pg_interval(v);
            let mut o = (micros + days as i64 * 86_400_000_000)
                .to_be_bytes()
                .to_vec();
            o.extend(months.to_be_bytes());
            o
        }
        (Rs::YearToMonth, 1) => pg_interval(v).2.to_be_bytes().to_vec(),
        (Rs::DayToSecond, 1) => {
            let (micros, days, _) = pg_interval(v);
            (micros + days as i64 * 86_400_000_000)
                .to_be_bytes()
                .to_vec()
        }
        // Binary from the backend: raw bytes, or hex text for text clients.
        (Rs::Varbyte, 1) => v.to_vec(),
        (Rs::Varbyte, _) => v
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
        (Rs::Geometry, 0) => text().to_uppercase().into_bytes(),
        (Rs::Geometry | Rs::Geography, 1) => (0..v.len() / 2)
            .map(|i| {
                u8::from_str_radix(std::str::from_utf8(&v[2 * i..2 * i + 2]).unwrap(), 16).unwrap()
            })
            .collect(),
        _ => v.to_vec(),
    }
}

/// PostgreSQL's binary interval: (µs, days, months).
fn pg_interval(v: &[u8]) -> (i64, i32, i32) {
    (
        i64::from_be_bytes(v[..8].try_into().unwrap()),
        i32::from_be_bytes(v[8..12].try_into().unwrap()),
        i32::from_be_bytes(v[12..16].try_into().unwrap()),
    )
}

/// "-123.45" at scale 4 → -1234500.
fn unscale(t: &str, scale: i32) -> i128 {
    let (neg, t) = t.strip_prefix('-').map_or((false, t), |r| (true, r));
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let mut digits = format!("{int}{frac}");
    for _ in frac.len()..scale as usize {
        digits.push('0');
    }
    let x: i128 = digits.parse().unwrap();
    if neg {
        -x
    } else {
        x
    }
}

/// `shiftload run JOB` without blocking the runtime the server runs on.
pub async fn run_job_async(path: &std::path::Path) -> std::process::Output {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || super::run_job(&path))
        .await
        .unwrap()
}
