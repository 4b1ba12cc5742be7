//! TLS on the real servers: PostgreSQL started by scripts/services.sh with
//! `ssl = on` and a certificate for "localhost" from a test CA made at
//! start, and a FerretDB with a TLS listener from the same CA. Each
//! success reads `pg_stat_ssl` through the job itself, so the documents
//! say whether the data connection was TLS.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::redshift::{DialectServer, Options};
use crate::common::*;
use bson::{doc, Document};
use futures_util::TryStreamExt;

fn tls(file: &str) -> String {
    let dir = std::env::var("SHIFTLOAD_TLS_DIR").expect("SHIFTLOAD_TLS_DIR: run scripts/test.sh");
    format!("{dir}/{file}")
}

/// (user, password, port, database) of the project's PostgreSQL.
fn pg_parts() -> (String, String, u16, String) {
    let pg: tokio_postgres::Config = pg_url().parse().unwrap();
    (
        pg.get_user().unwrap().to_string(),
        String::from_utf8(pg.get_password().unwrap().to_vec()).unwrap(),
        pg.get_ports()[0],
        pg.get_dbname().unwrap().to_string(),
    )
}

/// A URL to the project's PostgreSQL at `host` with `params`.
fn url(host: &str, params: &str) -> String {
    let (user, pw, port, db) = pg_parts();
    format!("postgresql://{user}:{pw}@{host}:{port}/{db}?{params}")
}

/// A three-row table, shared by the tests of this file.
async fn table() -> String {
    let t = unique("tls");
    pg_exec(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, name text);
         INSERT INTO {t} VALUES (1, 'ann'), (2, 'bo'), (3, NULL);
         GRANT SELECT ON {t} TO PUBLIC;"
    ))
    .await;
    t
}

/// Run a job reading `table` through `source_url` into `target`; Ok(the
/// `tls` field every document carries) or Err(stderr).
async fn transfer(table: &str, source_url: &str, target: &str) -> Result<bool, String> {
    let db = unique("tls");
    let (_dir, path) = job(&format!(
        r#"[source]
url = "{source_url}"
query = "SELECT id, name, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls FROM {table}"
[target]
uri = "{target}"
database = "{db}"
collection = "rows"
[mapping]
id = ["id"]
"#
    ));
    let out = run_job(&path);
    if !out.status.success() {
        return Err(format!("{}{}", stdout(&out), stderr(&out)));
    }
    let client = mongodb::Client::with_uri_str(target).await.unwrap();
    let coll = client.database(&db).collection::<Document>("rows");
    let mut docs: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.sort_by_key(|d| d.get_i32("_id").unwrap());
    let _ = client.database(&db).drop().await;
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert_eq!(docs[0].get_str("name").unwrap(), "ann");
    assert_eq!(docs[1].get_str("name").unwrap(), "bo");
    assert!(!docs[2].contains_key("name"), "NULL omitted: {docs:?}");
    let tls: Vec<bool> = docs.iter().map(|d| d.get_bool("tls").unwrap()).collect();
    assert!(tls.iter().all(|t| *t == tls[0]), "{tls:?}");
    Ok(tls[0])
}

#[tokio::test]
async fn verify_full_and_verify_ca_with_the_test_ca() {
    let t = table().await;
    let ca = tls("ca.crt");
    let m = mongo_uri();
    // The certificate names "localhost": verify-full by that name.
    let full = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_eq!(transfer(&t, &full, &m).await, Ok(true));
    // By IP address the name does not match: verify-full fails and says
    // why; verify-ca checks the chain only and connects.
    let by_ip = url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let e = transfer(&t, &by_ip, &m).await.unwrap_err();
    assert!(e.contains("not valid for this host name"), "{e}");
    assert!(e.contains("verify-ca"), "{e}");
    let ca_only = url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert_eq!(transfer(&t, &ca_only, &m).await, Ok(true));
    // Another CA: refused, naming sslrootcert.
    let other = tls("other-ca.crt");
    let wrong = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    let e = transfer(&t, &wrong, &m).await.unwrap_err();
    assert!(e.contains("not signed by a trusted root"), "{e}");
    assert!(e.contains("sslrootcert"), "{e}");
    // Without sslrootcert, verify-full trusts the public web roots only.
    let public = url("localhost", "sslmode=verify-full");
    let e = transfer(&t, &public, &m).await.unwrap_err();
    assert!(e.contains("not signed by a trusted root"), "{e}");
    // A missing file is named.
    let missing = url(
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    );
    let e = transfer(&t, &missing, &m).await.unwrap_err();
    assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
}

#[tokio::test]
async fn require_prefer_and_the_defaults_behave_as_documented() {
    let t = table().await;
    let m = mongo_uri();
    // require without a root certificate: encrypted, not verified.
    assert_eq!(
        transfer(&t, &url("127.0.0.1", "sslmode=require"), &m).await,
        Ok(true)
    );
    // require with one: the chain is verified (libpq's rule).
    let other = tls("other-ca.crt");
    let e = transfer(
        &t,
        &url("127.0.0.1", &format!("sslmode=require&sslrootcert={other}")),
        &m,
    )
    .await
    .unwrap_err();
    assert!(e.contains("not signed by a trusted root"), "{e}");
    // No sslmode on a loopback host: prefer, and the server offers TLS.
    assert_eq!(transfer(&t, &url("127.0.0.1", ""), &m).await, Ok(true));
    assert_eq!(transfer(&t, &url("[::1]", ""), &m).await, Ok(true));
    assert_eq!(
        transfer(&t, &url("127.0.0.1", "sslmode=disable"), &m).await,
        Ok(false)
    );
    // A Unix socket: no TLS, as libpq.
    let socket = std::env::var("SHIFTLOAD_PG_SOCKET_DIR")
        .unwrap()
        .replace('/', "%2F");
    assert_eq!(transfer(&t, &url(&socket, ""), &m).await, Ok(false));
}

#[tokio::test]
async fn client_certificates_and_channel_binding() {
    let t = table().await;
    let m = mongo_uri();
    let (_, _, port, db) = pg_parts();
    let (ca, cert, key) = (tls("ca.crt"), tls("client.crt"), tls("client.key"));
    // shiftload_cert logs in with its certificate only (pg_hba: cert).
    let base = format!(
        "postgresql://shiftload_cert@localhost:{port}/{db}?sslmode=verify-full&sslrootcert={ca}"
    );
    let with_cert = format!("{base}&sslcert={cert}&sslkey={key}");
    assert_eq!(transfer(&t, &with_cert, &m).await, Ok(true));
    let e = transfer(&t, &base, &m).await.unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    let e = transfer(&t, &format!("{base}&sslcert={cert}"), &m)
        .await
        .unwrap_err();
    assert!(e.contains("give both sslcert and sslkey"), "{e}");
    // SCRAM bound to the TLS channel: the server checks the binding, so a
    // wrong certificate hash would be refused.
    let bound = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require"),
    );
    assert_eq!(transfer(&t, &bound, &m).await, Ok(true));
    let e = transfer(
        &t,
        &url("127.0.0.1", "sslmode=disable&channel_binding=require"),
        &m,
    )
    .await
    .unwrap_err();
    assert!(e.contains("channel_binding=require"), "{e}");
}

/// A server that declines TLS and asks for the password in cleartext or
/// as MD5: under `prefer` (the loopback default) no password message
/// leaves shiftload; only `sslmode=disable` allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_never_sends_a_password_over_plaintext() {
    let t = table().await;
    for cleartext in [true, false] {
        let server = DialectServer::start(Options {
            max_protocol: 2,
            cleartext,
            ..Default::default()
        })
        .await;
        let disable = server.default_url();
        for params in ["", "?sslmode=prefer"] {
            let prefer = format!("{}{params}", disable.replace("?sslmode=disable", ""));
            let m = mongo_uri();
            let e = transfer(&t, &prefer, &m).await.unwrap_err();
            assert!(e.contains("declined TLS"), "{e}");
            assert!(e.contains("sslmode=disable"), "{e}");
        }
        assert_eq!(
            server
                .stats
                .passwords_received
                .load(std::sync::atomic::Ordering::Relaxed),
            0,
            "no password message reached the server"
        );
        assert_eq!(transfer(&t, &disable, &mongo_uri()).await, Ok(false));
        assert!(
            server
                .stats
                .passwords_received
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    }
}

/// FerretDB with a TLS listener that requires a client certificate from
/// the test CA: reached with `tls`, `tlsCAFile` and `tlsCertificateKeyFile`.
#[tokio::test]
async fn mongodb_over_tls_with_ca_file_and_client_certificate() {
    let t = table().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let bin = std::env::var("SHIFTLOAD_FERRETDB_BIN").expect("run scripts/test.sh");
    let mut child = Command::new(bin)
        .args(["-listen-addr", "", "-handler", "sqlite"])
        .arg(format!("-listen-tls=127.0.0.1:{port}"))
        .arg(format!("-tls-cert-file={}", tls("server.crt")))
        .arg(format!("-tls-key-file={}", tls("server.key")))
        .arg(format!("-tls-ca-file={}", tls("ca.crt")))
        .arg(format!("-sqlite-url=file:{}/", data.path().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!(
        "mongodb://localhost:{port}/?tls=true&tlsCAFile={}&serverSelectionTimeoutMS=3000",
        tls("ca.crt")
    );
    let with_cert = format!("{base}&tlsCertificateKeyFile={}", tls("client.pem"));
    let source = url("127.0.0.1", "sslmode=disable");
    assert_eq!(transfer(&t, &source, &with_cert).await, Ok(false));
    // Without the client certificate the server refuses the handshake.
    let e = transfer(&t, &source, &base).await.unwrap_err();
    assert!(e.contains("MongoDB"), "{e}");
    // Another CA does not verify the server.
    let other = with_cert.replace(&tls("ca.crt"), &tls("other-ca.crt"));
    let e = transfer(&t, &source, &other).await.unwrap_err();
    assert!(e.contains("MongoDB"), "{e}");
    child.kill().unwrap();
    child.wait().unwrap();
}
