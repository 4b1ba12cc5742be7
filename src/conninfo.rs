//! PostgreSQL/Redshift connection strings, read by libpq's rules: the one
//! parser behind connecting, validating a job and masking passwords, so
//! that what is masked is exactly what is sent.
//!
//! Two forms, as libpq takes them:
//! - URIs, `postgresql://[user[:password]@][host][:port][,host[:port]…][/dbname][?key=value&…]`
//!   (`postgres://` too; `redshift://` and `redshift+iam://` are read the
//!   same way). The user part ends at the first `@` or `/`, hosts at `:`,
//!   `/`, `?` or `,`; every part is percent-decoded; `[…]` holds an IPv6
//!   address; a host that starts with `/` (written `%2F…`) is a Unix socket
//!   directory.
//! - `key=value` lists separated by spaces, values optionally in single
//!   quotes with `\'` and `\\` escapes.
//!
//! Stricter than libpq where libpq would connect somewhere unintended: an
//! `@` left in a host or database name (a password with an unencoded `/`,
//! `?` or `@`) is an error, and no error ever quotes a value from the user
//! part.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A parsed connection string.
#[derive(Clone, Default, PartialEq)]
pub struct ConnInfo {
    /// Hosts in the order they are tried.
    pub hosts: Vec<Host>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    /// `None`: the default (see [`ConnInfo::ssl_mode`]).
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<RootCert>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub channel_binding: ChannelBinding,
    pub connect_timeout: Option<Duration>,
    pub options: Option<String>,
    pub application_name: Option<String>,
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A host name or an IP address (IPv6 without brackets).
    Tcp { name: String, port: u16 },
    /// A Unix socket directory; the socket is `<dir>/.s.PGSQL.<port>`.
    Unix { dir: PathBuf, port: u16 },
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, unverified; plaintext otherwise (but
    /// then no cleartext or MD5 password is sent).
    Prefer,
    /// TLS or fail; the certificate is verified as `verify-ca` when a root
    /// certificate is given, not at all otherwise.
    Require,
    /// TLS, the chain verified against the root certificates.
    VerifyCa,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

/// `sslrootcert`: a PEM file, or the system's trust store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    System,
}

/// libpq's `channel_binding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelBinding {
    Disable,
    /// Bind when the connection is TLS and the server offers it.
    #[default]
    Prefer,
    /// Log in only with SCRAM bound to the TLS channel.
    Require,
}

/// Why a connection string was refused. Never quotes the user part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

type Parsed<T> = Result<T, ParseError>;

fn err<T>(message: impl Into<String>) -> Parsed<T> {
    Err(ParseError(message.into()))
}

const ENCODE_HINT: &str =
    "percent-encode '/', '?', '#', '@' and ':' in a user name or password (%2F %3F %23 %40 %3A)";
const SCHEMES: [&str; 4] = [
    "postgresql://",
    "postgres://",
    "redshift://",
    "redshift+iam://",
];
pub const DEFAULT_PORT: u16 = 5432;

/// The scheme of a URI this module reads, and what follows it.
pub fn split_scheme(text: &str) -> Option<(&str, &str)> {
    SCHEMES
        .iter()
        .find_map(|s| text.strip_prefix(s).map(|rest| (&s[..s.len() - 3], rest)))
}

impl ConnInfo {
    /// Parse a URI or a `key=value` list.
    pub fn parse(text: &str) -> Parsed<ConnInfo> {
        let text = text.trim();
        let mut info = ConnInfo::default();
        let mut raw = RawHosts::default();
        match split_scheme(text) {
            Some((_, rest)) => parse_uri(rest, &mut info, &mut raw)?,
            None if text.contains('=') || text.is_empty() => {
                for (key, value) in key_values(text)? {
                    info.set(&key, value, &mut raw)?;
                }
            }
            None => {
                return err("not a connection URL: it should start with postgresql:// (or redshift://), or be key=value pairs")
            }
        }
        info.hosts = raw.resolve()?;
        Ok(info)
    }

    /// The `sslmode` in force: the one given, else `prefer` for a loopback
    /// host, none for a Unix socket, `verify-full` for anything else.
    pub fn ssl_mode(&self, host: &Host) -> SslMode {
        match host {
            Host::Unix { .. } => SslMode::Disable,
            Host::Tcp { name, .. } => match self.sslmode {
                Some(mode) => mode,
                None if is_loopback(name) => SslMode::Prefer,
                None => SslMode::VerifyFull,
            },
        }
    }

    /// The URI form with the password masked: what logs and errors show.
    pub fn redacted(&self) -> String {
        let mut out = String::from("postgresql://");
        if let Some(user) = &self.user {
            out.push_str(&encode(user));
        }
        if self.password.is_some() {
            out.push_str(":***");
        }
        if self.user.is_some() || self.password.is_some() {
            out.push('@');
        }
        let hosts: Vec<String> = self.hosts.iter().map(Host::to_string).collect();
        out.push_str(&hosts.join(","));
        out.push('/');
        if let Some(db) = &self.dbname {
            out.push_str(&encode(db));
        }
        if let Some(mode) = self.sslmode {
            out.push_str("?sslmode=");
            out.push_str(mode.as_str());
        }
        out
    }

    /// `host:port/database as user <name>`, never the password.
    pub fn target(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(Host::to_string).collect();
        format!(
            "{}/{} as user {}",
            hosts.join(","),
            self.dbname.as_deref().unwrap_or("(default)"),
            self.user.as_deref().unwrap_or("(default)")
        )
    }

    fn set(&mut self, key: &str, value: String, raw: &mut RawHosts) -> Parsed<()> {
        let path = |v: &str| (!v.is_empty()).then(|| PathBuf::from(v));
        match key {
            "host" => raw.hosts = Some(value),
            "port" => raw.ports = Some(value),
            "user" => self.user = Some(value),
            "password" => self.password = Some(value),
            "dbname" => self.dbname = Some(value),
            "sslmode" => self.sslmode = Some(SslMode::parse(&value)?),
            // The JDBC spelling libpq accepts in URIs.
            "ssl" if value == "true" => self.sslmode = Some(SslMode::Require),
            "sslrootcert" => {
                self.sslrootcert = match value.as_str() {
                    "" => None,
                    "system" => Some(RootCert::System),
                    file => Some(RootCert::File(file.into())),
                }
            }
            "sslcert" => self.sslcert = path(&value),
            "sslkey" => self.sslkey = path(&value),
            "channel_binding" => {
                self.channel_binding = match value.as_str() {
                    "disable" => ChannelBinding::Disable,
                    "prefer" => ChannelBinding::Prefer,
                    "require" => ChannelBinding::Require,
                    _ => {
                        return err(format!(
                            "channel_binding={value}: use disable, prefer or require"
                        ))
                    }
                }
            }
            "connect_timeout" => {
                let secs: u64 = value.trim().parse().map_err(|_| {
                    ParseError(format!(
                        "connect_timeout={value} is not a number of seconds"
                    ))
                })?;
                self.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs.max(2)));
            }
            "options" => self.options = Some(value),
            "application_name" => self.application_name = Some(value),
            _ => {
                return err(format!(
                    "unknown connection parameter {key:?} (shiftload reads host, port, user, \
                     password, dbname, sslmode, sslrootcert, sslcert, sslkey, channel_binding, \
                     connect_timeout, options, application_name)"
                ))
            }
        }
        Ok(())
    }
}

// A password is never shown by `{:?}`.
impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp { name, port } if name.contains(':') => write!(f, "[{name}]:{port}"),
            Host::Tcp { name, port } => write!(f, "{name}:{port}"),
            Host::Unix { dir, port } => write!(f, "{}:{port}", encode(&dir.to_string_lossy())),
        }
    }
}

impl SslMode {
    pub fn parse(value: &str) -> Parsed<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return err("sslmode=allow is not supported (it tries plaintext first): use prefer, require, verify-ca or verify-full"),
            _ => return err(format!(
                "sslmode={value}: use disable, prefer, require, verify-ca or verify-full"
            )),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// localhost, 127.0.0.0/8 or ::1.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Hosts and ports as written, resolved once every parameter is read (a
/// `?host=` or `?port=` overrides the authority's).
#[derive(Default)]
struct RawHosts {
    hosts: Option<String>,
    ports: Option<String>,
}

impl RawHosts {
    fn resolve(self) -> Parsed<Vec<Host>> {
        let names: Vec<&str> = match &self.hosts {
            Some(h) if !h.is_empty() => h.split(',').collect(),
            _ => vec!["localhost"],
        };
        let ports: Vec<&str> = match &self.ports {
            Some(p) if !p.is_empty() => p.split(',').collect(),
            _ => vec![""],
        };
        if ports.len() != 1 && ports.len() != names.len() {
            return err(format!(
                "{} hosts but {} ports: give one port, or one for each host",
                names.len(),
                ports.len()
            ));
        }
        let mut hosts = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let port = match ports[if ports.len() == 1 { 0 } else { i }].trim() {
                "" => DEFAULT_PORT,
                p => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
                    ParseError(format!(
                        "the port of host {} is not a number from 1 to 65535; {ENCODE_HINT}",
                        i + 1
                    ))
                })?,
            };
            hosts.push(match *name {
                n if n.starts_with('/') => Host::Unix {
                    dir: n.into(),
                    port,
                },
                "" => Host::Tcp {
                    name: "localhost".into(),
                    port,
                },
                n if n.contains('@') || n.contains(char::is_whitespace) => {
                    return err(format!("host {} is not a host name; {ENCODE_HINT}", i + 1))
                }
                n => Host::Tcp {
                    name: n.to_string(),
                    port,
                },
            });
        }
        Ok(hosts)
    }
}

fn parse_uri(rest: &str, info: &mut ConnInfo, raw: &mut RawHosts) -> Parsed<()> {
    // The user part ends at the first '@' or '/' (libpq).
    let mut p = rest;
    if let Some(i) = rest
        .find(['@', '/'])
        .filter(|&i| rest.as_bytes()[i] == b'@')
    {
        let userinfo = &rest[..i];
        let (user, password) = match userinfo.split_once(':') {
            Some((u, pw)) => (u, Some(pw)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            info.user = Some(decode(user).ok_or_else(|| bad_escape("user name"))?);
        }
        if let Some(pw) = password.filter(|pw| !pw.is_empty()) {
            info.password = Some(decode(pw).ok_or_else(|| bad_escape("password"))?);
        }
        p = &rest[i + 1..];
    }
    let (names, ports, after_hosts) = parse_hosts(p)?;
    p = after_hosts;
    if names.iter().any(|n| !n.is_empty()) || names.len() > 1 {
        raw.hosts = Some(names.join(","));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        raw.ports = Some(ports.join(","));
    }
    if let Some(after) = p.strip_prefix('/') {
        let end = after.find('?').unwrap_or(after.len());
        let db = decode(&after[..end]).ok_or_else(|| bad_escape("database name"))?;
        if db.contains('@') {
            return err(format!("the database name holds an '@': {ENCODE_HINT}"));
        }
        if !db.is_empty() {
            info.dbname = Some(db);
        }
        p = &after[end..];
    }
    if let Some(query) = p.strip_prefix('?') {
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                ParseError("a URL parameter has no '=' (key=value&key=value)".into())
            })?;
            let key = decode(key).ok_or_else(|| bad_escape("parameter name"))?;
            let value = decode(value).ok_or_else(|| bad_escape(&format!("parameter {key}")))?;
            info.set(&key, value, raw)?;
        }
    }
    Ok(())
}

/// Hosts, each `name[:port]` or `[v6][:port]`, separated by ','; and what
/// follows them.
fn parse_hosts(mut p: &str) -> Parsed<(Vec<String>, Vec<String>, &str)> {
    let (mut names, mut ports) = (Vec::new(), Vec::new());
    loop {
        let (name, after) = if let Some(v6) = p.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| ParseError("an IPv6 host has no closing ']'".into()))?;
            if end == 0 {
                return err("an IPv6 host between [ ] is empty");
            }
            let after = &v6[end + 1..];
            if !after.is_empty() && !after.starts_with([':', '/', '?', ',']) {
                return err(format!(
                    "unexpected text after the IPv6 host ']'; {ENCODE_HINT}"
                ));
            }
            (&v6[..end], after)
        } else {
            let end = p.find([':', '/', '?', ',']).unwrap_or(p.len());
            (&p[..end], &p[end..])
        };
        names.push(decode(name).ok_or_else(|| bad_escape("host"))?);
        p = after;
        if let Some(after_colon) = p.strip_prefix(':') {
            let end = after_colon
                .find(['/', '?', ','])
                .unwrap_or(after_colon.len());
            ports.push(decode(&after_colon[..end]).ok_or_else(|| bad_escape("port"))?);
            p = &after_colon[end..];
        } else {
            ports.push(String::new());
        }
        match p.strip_prefix(',') {
            Some(next) => p = next,
            None => break,
        }
    }
    Ok((names, ports, p))
}

fn bad_escape(part: &str) -> ParseError {
    ParseError(format!(
        "the {part} holds a '%' that is not a %XX escape (write '%' as %25)"
    ))
}

/// Percent-decoding as libpq does it: every `%XX` decoded, a bare `%` or
/// `%00` refused, the result UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            if b == 0 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encode what would end a URI part.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// `key = value` pairs, values bare or in single quotes.
fn key_values(text: &str) -> Parsed<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return err(format!("{key:?} has no '=' (key=value pairs)"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return err(format!("the value of {key} has no closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests;
