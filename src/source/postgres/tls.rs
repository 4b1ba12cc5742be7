//! TLS for the source connection with libpq's `sslmode` meanings, the root
//! certificates of `sslrootcert`, client certificates, and the
//! `tls-server-end-point` hash SCRAM channel binding needs.
//!
//! | sslmode       | TLS                | chain verified            | host name verified |
//! |---------------|--------------------|---------------------------|--------------------|
//! | `disable`     | never              | –                         | –                  |
//! | `prefer`      | if offered         | if a root cert is given   | no                 |
//! | `require`     | always             | if a root cert is given   | no                 |
//! | `verify-ca`   | always             | yes                       | no                 |
//! | `verify-full` | always             | yes                       | yes                |
//!
//! The roots: `sslrootcert` (a PEM file, or `system` for the operating
//! system's store), else `~/.postgresql/root.crt` when it exists (libpq's
//! default file), else — for `verify-*` only — the public web roots bundled
//! with shiftload (Amazon's roots among them, which sign Redshift's
//! endpoints).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::conninfo::{ConnInfo, RootCert, SslMode};

type Message = String;

/// The TLS client for one connection, or `None` under `sslmode=disable`.
pub(super) fn client_config(
    info: &ConnInfo,
    mode: SslMode,
) -> Result<Option<ClientConfig>, Message> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = roots(info, mode)?;
    let chain = match roots {
        None => None,
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("TLS root certificates: {e}"))?,
        ),
    };
    let verifier = Arc::new(Verifier {
        chain,
        name: mode == SslMode::VerifyFull,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&info.sslcert, &info.sslkey) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("sslkey {}: no private key read ({e})", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("sslcert/sslkey: {e}"))?
        }
        _ => return Err("give both sslcert and sslkey for a client certificate".into()),
    };
    Ok(Some(config))
}

/// The roots that verify the chain, or `None` when the mode does not
/// verify and no root certificate is given.
fn roots(info: &ConnInfo, mode: SslMode) -> Result<Option<RootCertStore>, Message> {
    let verify = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
    let default_file = home_root_cert().filter(|p| p.is_file());
    let certs = match (&info.sslrootcert, default_file) {
        (Some(RootCert::File(path)), _) => certificates(path, "sslrootcert")?,
        (Some(RootCert::System), _) => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                return Err(
                    "sslrootcert=system: the operating system's trust store holds no certificate"
                        .into(),
                );
            }
            found.certs
        }
        (None, Some(path)) => certificates(&path, "~/.postgresql/root.crt")?,
        (None, None) if verify => {
            return Ok(Some(RootCertStore::from_iter(
                webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
            )))
        }
        (None, None) => return Ok(None),
    };
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err("sslrootcert: no usable certificate in the file".into());
    }
    Ok(Some(store))
}

fn home_root_cert() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"))
}

fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, Message> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The server name TLS checks (a host name or an IP address).
pub(super) fn server_name(host: &str) -> Result<ServerName<'static>, Message> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("TLS: bad server name {host}: {e}"))
}

/// A failed handshake in words that say what to change.
pub(super) fn handshake_error(e: &std::io::Error, mode: SslMode) -> Message {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "TLS: the server's certificate is not valid for this host name (sslmode={}): \
             connect with a name the certificate lists, or use sslmode=verify-ca",
            mode.as_str()
        ),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => format!(
            "TLS: the server's certificate is not signed by a trusted root (sslmode={}): \
             set sslrootcert to the CA certificate (PEM) that signed it",
            mode.as_str()
        ),
        _ => format!("TLS handshake: {e}"),
    }
}

/// RFC 5929 `tls-server-end-point`: the hash of the server's certificate
/// with its signature's hash function (SHA-256 for MD5, SHA-1 and
/// anything unknown).
pub fn server_end_point(cert: &[u8]) -> Vec<u8> {
    const SHA384: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    ];
    const SHA512: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ];
    match signature_algorithm(cert) {
        Some(oid) if SHA384.contains(&oid) => Sha384::digest(cert).to_vec(),
        Some(oid) if SHA512.contains(&oid) => Sha512::digest(cert).to_vec(),
        _ => Sha256::digest(cert).to_vec(),
    }
}

/// The OID of `Certificate.signatureAlgorithm` (X.509: a SEQUENCE of the
/// to-be-signed certificate, the algorithm, the signature).
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    let (tag, outer, _) = der(cert)?;
    (tag == 0x30).then_some(())?;
    let (_, _, after_tbs) = der(outer)?;
    let (tag, algorithm, _) = der(after_tbs)?;
    (tag == 0x30).then_some(())?;
    let (tag, oid, _) = der(algorithm)?;
    (tag == 0x06).then_some(oid)
}

/// One DER element: (tag, contents, what follows).
fn der(v: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = v.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        n => {
            let count = (n & 0x7f) as usize;
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |a, &b| a << 8 | b as usize);
            (len, &rest[count..])
        }
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The server certificate check of a mode: none (`prefer`/`require`
/// without roots, as libpq), the chain only (`verify-ca`, or a root given
/// with a weaker mode) or the chain and the host name. The handshake's
/// signatures are always checked against the certificate.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // webpki checks the chain first and the name last: a name error
        // means the chain was good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        // A skeleton certificate: SEQUENCE { SEQUENCE {}, SEQUENCE { OID } }.
        let cert = |oid: &[u8]| {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
            body.extend_from_slice(&alg);
            let mut c = vec![0x30, body.len() as u8];
            c.extend_from_slice(&body);
            c
        };
        let ecdsa384 = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(server_end_point(&ecdsa384).len(), 48);
        let rsa512 = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]);
        assert_eq!(server_end_point(&rsa512).len(), 64);
        let rsa256 = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]);
        assert_eq!(server_end_point(&rsa256), Sha256::digest(&rsa256).to_vec());
        assert_eq!(server_end_point(b"not der").len(), 32);
    }
}
