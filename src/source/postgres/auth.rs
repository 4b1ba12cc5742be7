//! Login: the startup message and every password exchange a PostgreSQL or
//! Redshift server may ask for — cleartext (3), MD5 (5), SCRAM-SHA-256
//! (10–12) and Redshift's SHA-256 digest (13).

use bytes::BufMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use sha2::{Digest, Sha256};

use super::connection::{io_error, protocol, server_error, Connection};
use super::dialect;
use crate::conninfo::{ChannelBinding, ConnInfo};
use crate::error::{Class, Error, Result};

/// What a login needs besides the socket.
pub(super) struct Login<'a> {
    pub(super) info: &'a ConnInfo,
    /// The server certificate's `tls-server-end-point` hash; `None`
    /// without TLS.
    pub(super) tls_end_point: Option<Vec<u8>>,
    /// TLS was wanted (`prefer`) but the server declined it: a password
    /// that can be read or replayed is then never sent.
    pub(super) plaintext_fallback: bool,
}

/// Authentication request codes PostgreSQL's parser does not know.
const AUTH_SHA256_DIGEST: u32 = 13;
const AUTH_IDP_TOKEN: u32 = 14;

impl Connection {
    /// Send the startup message, log in, and read the server's parameters
    /// up to its first ReadyForQuery. `redshift_protocol` asks a Redshift
    /// server for that `client_protocol_version`.
    pub(super) async fn startup(
        &mut self,
        login: &Login<'_>,
        redshift_protocol: Option<u8>,
    ) -> Result<()> {
        let info = login.info;
        let user = info.user.as_deref().unwrap_or("postgres");
        self.send_startup(info, redshift_protocol).await?;
        let password = info.password.as_deref().unwrap_or_default().as_bytes();
        let mut scram: Option<sasl::ScramSha256> = None;
        let mut bound = false;
        loop {
            let mut frame = self.frame().await?;
            if self.redshift_request(&frame, login, password).await? {
                continue;
            }
            let message = backend::Message::parse(&mut frame)
                .map_err(io_error)?
                .ok_or_else(|| protocol("incomplete message"))?;
            match message {
                backend::Message::AuthenticationOk => {
                    if info.channel_binding == ChannelBinding::Require && !bound {
                        return Err(login_refused(
                            "channel_binding=require, but the server logged us in without SCRAM channel binding",
                        ));
                    }
                }
                backend::Message::AuthenticationCleartextPassword => {
                    login.may_send_digest("the password in cleartext")?;
                    frontend::password_message(password, &mut self.write).map_err(io_error)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    login.may_send_digest("an MD5 password hash")?;
                    let hash = md5_hash(user.as_bytes(), password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write)
                        .map_err(io_error)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let (s, plus) = self.sasl_start(&body, password, login).await?;
                    scram = Some(s);
                    bound = plus;
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
                backend::Message::ReadyForQuery(_) => {
                    self.dialect = dialect::detect(&self.parameters);
                    return Ok(());
                }
                backend::Message::ErrorResponse(body) => return Err(server_error(&body)),
                _ => {
                    return Err(protocol(
                        "unsupported authentication method requested by the server",
                    ))
                }
            }
        }
    }

    /// Answer the requests PostgreSQL's parser does not know: Redshift's
    /// SHA-256 digest (13); an identity-provider token (14) is refused.
    /// Whether `frame` was one.
    async fn redshift_request(
        &mut self,
        frame: &[u8],
        login: &Login<'_>,
        password: &[u8],
    ) -> Result<bool> {
        if frame[0] != b'R' || frame.len() < 9 {
            return Ok(false);
        }
        match u32::from_be_bytes(frame[5..9].try_into().expect("4 bytes")) {
            AUTH_SHA256_DIGEST => {
                login.may_send_digest("a SHA-256 password digest")?;
                self.sha256_digest(&frame[9..], password).await?;
                Ok(true)
            }
            AUTH_IDP_TOKEN => Err(login_refused(
                "the server asks for an identity-provider token; use a password or IAM",
            )),
            _ => Ok(false),
        }
    }

    /// The startup message: user, database, options, and Redshift's
    /// `client_protocol_version` when asked for.
    async fn send_startup(&mut self, info: &ConnInfo, redshift_protocol: Option<u8>) -> Result<()> {
        let version = redshift_protocol.map(|v| v.to_string());
        let mut params = vec![
            ("user", info.user.as_deref().unwrap_or("postgres")),
            ("client_encoding", "UTF8"),
            (
                "application_name",
                info.application_name.as_deref().unwrap_or("shiftload"),
            ),
        ];
        if let Some(db) = &info.dbname {
            params.push(("database", db));
        }
        if let Some(options) = &info.options {
            params.push(("options", options));
        }
        if let Some(v) = &version {
            params.push(("client_protocol_version", v));
        }
        frontend::startup_message(params.iter().copied(), &mut self.write).map_err(io_error)?;
        self.flush().await
    }

    /// Answer a SASL request with SCRAM-SHA-256's first message, bound to
    /// the TLS channel (`-PLUS`) when the connection is TLS, the server
    /// offers it and `channel_binding` allows; whether it is bound.
    async fn sasl_start(
        &mut self,
        body: &backend::AuthenticationSaslBody,
        password: &[u8],
        login: &Login<'_>,
    ) -> Result<(sasl::ScramSha256, bool)> {
        let (mut plain, mut plus) = (false, false);
        let mut mechanisms = body.mechanisms();
        while let Some(m) = mechanisms.next().map_err(io_error)? {
            plain |= m == sasl::SCRAM_SHA_256;
            plus |= m == sasl::SCRAM_SHA_256_PLUS;
        }
        let wanted = login.info.channel_binding;
        let (mechanism, binding) = match &login.tls_end_point {
            Some(hash) if plus && wanted != ChannelBinding::Disable => (
                sasl::SCRAM_SHA_256_PLUS,
                sasl::ChannelBinding::tls_server_end_point(hash.clone()),
            ),
            _ if wanted == ChannelBinding::Require => {
                return Err(login_refused(
                    "channel_binding=require, but the connection is not TLS or the server does not offer SCRAM-SHA-256-PLUS",
                ))
            }
            Some(_) if plain => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unrequested()),
            None if plain => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported()),
            _ => {
                return Err(protocol(
                    "the server offers no SASL mechanism shiftload supports",
                ))
            }
        };
        let s = sasl::ScramSha256::new(password, binding);
        frontend::sasl_initial_response(mechanism, s.message(), &mut self.write)
            .map_err(io_error)?;
        self.flush().await?;
        Ok((s, mechanism == sasl::SCRAM_SHA_256_PLUS))
    }

    /// Redshift's SHA-256 digest login (code 13): the request carries the
    /// algorithm, the user's salt and a server nonce; the answer (`d`) is
    /// SHA256(SHA256(password ‖ salt) ‖ server nonce ‖ client nonce) and the
    /// client nonce, the ASCII of the milliseconds since the epoch.
    async fn sha256_digest(&mut self, request: &[u8], password: &[u8]) -> Result<()> {
        let (algorithm, salt, server_nonce) =
            parse_digest_request(request).ok_or_else(|| protocol("malformed SHA-256 request"))?;
        if algorithm != 0 {
            return Err(login_refused(&format!(
                "the server asks for password digest algorithm {algorithm}; only SHA-256 (0) is supported"
            )));
        }
        let client_nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string();
        let digest = sha256_login_digest(password, salt, server_nonce, client_nonce.as_bytes());
        let body_len = 4 + 4 + digest.len() + 4 + client_nonce.len();
        self.write.put_u8(b'd');
        self.write.put_u32(body_len as u32);
        self.write.put_u32(digest.len() as u32);
        self.write.put_slice(&digest);
        self.write.put_u32(client_nonce.len() as u32);
        self.write.put_slice(client_nonce.as_bytes());
        self.flush().await
    }
}

/// (algorithm, salt, server nonce) of a code-13 request body.
fn parse_digest_request(mut v: &[u8]) -> Option<(u32, &[u8], &[u8])> {
    let u32_ = |v: &mut &[u8]| -> Option<u32> {
        let (head, rest) = v.split_at_checked(4)?;
        *v = rest;
        Some(u32::from_be_bytes(head.try_into().ok()?))
    };
    let algorithm = u32_(&mut v)?;
    let salt_len = u32_(&mut v)? as usize;
    let (salt, mut rest) = v.split_at_checked(salt_len)?;
    let nonce_len = u32_(&mut rest)? as usize;
    let (nonce, _) = rest.split_at_checked(nonce_len)?;
    Some((algorithm, salt, nonce))
}

/// SHA256(SHA256(password ‖ salt) ‖ server nonce ‖ client nonce).
pub fn sha256_login_digest(
    password: &[u8],
    salt: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
) -> Vec<u8> {
    let stored = Sha256::new()
        .chain_update(password)
        .chain_update(salt)
        .finalize();
    Sha256::new()
        .chain_update(stored)
        .chain_update(server_nonce)
        .chain_update(client_nonce)
        .finalize()
        .to_vec()
}

impl Login<'_> {
    /// Whether a password, or a digest an eavesdropper could replay or
    /// attack offline, may go out on this connection.
    fn may_send_digest(&self, what: &str) -> Result<()> {
        if self.plaintext_fallback {
            return Err(login_refused(&format!(
                "the server declined TLS and asks for {what}: refused, so that no one on the \
                 network path can read it. Turn TLS on at the server, or set sslmode=disable in \
                 source.url to send it without TLS"
            )));
        }
        if self.info.channel_binding == ChannelBinding::Require {
            return Err(login_refused(&format!(
                "channel_binding=require, but the server asks for {what} instead of SCRAM"
            )));
        }
        Ok(())
    }
}

fn login_refused(message: &str) -> Error {
    Error::Query {
        system: super::SYSTEM,
        message: message.to_string(),
        code: None,
        class: Class::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn digest_request_fields() {
        let mut v = BytesMut::new();
        v.put_u32(0);
        v.put_u32(3);
        v.put_slice(b"abc");
        v.put_u32(2);
        v.put_slice(b"xy");
        assert_eq!(parse_digest_request(&v), Some((0, &b"abc"[..], &b"xy"[..])));
        assert_eq!(parse_digest_request(&v[..9]), None);
    }

    #[test]
    fn digest_is_two_rounds_of_sha256() {
        // Independent arithmetic: the inner hash of "pw" ‖ "salt" is
        // SHA256("pwsalt").
        let inner = Sha256::digest(b"pwsalt");
        let mut outer = inner.to_vec();
        outer.extend_from_slice(b"sn");
        outer.extend_from_slice(b"cn");
        assert_eq!(
            sha256_login_digest(b"pw", b"salt", b"sn", b"cn"),
            Sha256::digest(&outer).to_vec()
        );
    }
}
