use super::*;

fn tcp(name: &str, port: u16) -> Host {
    Host::Tcp {
        name: name.into(),
        port,
    }
}

#[test]
fn uri_parts_are_percent_decoded() {
    let c = ConnInfo::parse(
        "postgresql://us%2Fer%40x:p%2Fa%3Fs%23s%40w%25rd@db.example.com:5439/my%20db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
    )
    .unwrap();
    assert_eq!(c.user.as_deref(), Some("us/er@x"));
    assert_eq!(c.password.as_deref(), Some("p/a?s#s@w%rd"));
    assert_eq!(c.hosts, vec![tcp("db.example.com", 5439)]);
    assert_eq!(c.dbname.as_deref(), Some("my db"));
    assert_eq!(c.sslmode, Some(SslMode::VerifyFull));
    assert_eq!(c.sslrootcert, Some(RootCert::File("/etc/ca.pem".into())));
    // A password with ':' after the first one (libpq splits at the first).
    let c = ConnInfo::parse("postgres://u:a:b@h/d").unwrap();
    assert_eq!(c.password.as_deref(), Some("a:b"));
    // '?' and '#' end nothing before the '@' (libpq looks for '@' or '/').
    let c = ConnInfo::parse("postgres://u:Sec?r#t@h/d").unwrap();
    assert_eq!(c.password.as_deref(), Some("Sec?r#t"));
    assert_eq!(c.hosts, vec![tcp("h", 5432)]);
}

#[test]
fn hosts_ipv6_unix_sockets_and_lists() {
    let c = ConnInfo::parse("postgresql://u@[::1]:6543,[fe80::2]/d").unwrap();
    assert_eq!(c.hosts, vec![tcp("::1", 6543), tcp("fe80::2", 5432)]);
    assert_eq!(c.hosts[0].to_string(), "[::1]:6543");
    let c = ConnInfo::parse("postgresql://u:pw@%2Fvar%2Frun%2Fpg:5433/d").unwrap();
    assert_eq!(
        c.hosts,
        vec![Host::Unix {
            dir: "/var/run/pg".into(),
            port: 5433
        }]
    );
    let c = ConnInfo::parse("postgresql:///d?host=/tmp/s&port=7").unwrap();
    assert_eq!(
        c.hosts,
        vec![Host::Unix {
            dir: "/tmp/s".into(),
            port: 7
        }]
    );
    let c = ConnInfo::parse("postgresql://a:1,b:2/d").unwrap();
    assert_eq!(c.hosts, vec![tcp("a", 1), tcp("b", 2)]);
    let c = ConnInfo::parse("postgresql://").unwrap();
    assert_eq!(c.hosts, vec![tcp("localhost", 5432)]);
}

#[test]
fn key_value_form() {
    let c = ConnInfo::parse(
        r"host=h port=6000 user=u password='it''s\' a \\ pw' dbname=d sslmode=require",
    );
    // libpq has no '' escape: the value ends at the second quote.
    assert!(c.is_err());
    let c =
        ConnInfo::parse(r"host=h port = 6000 user=u password='it\'s a \\ pw' dbname=d").unwrap();
    assert_eq!(c.password.as_deref(), Some(r"it's a \ pw"));
    assert_eq!(c.hosts, vec![tcp("h", 6000)]);
    assert_eq!(c.dbname.as_deref(), Some("d"));
}

/// Whatever is refused, the message never quotes the user part.
#[test]
fn errors_never_quote_the_password() {
    for (url, secret) in [
        (
            "postgresql://shiftload:S3cr3t/Pw#1@host/db?sslmode=verify-full",
            "S3cr3t",
        ),
        ("postgresql://u:p@ss@h/db", "ss@h"),
        ("postgresql://u:Hunter%zz@h/db", "Hunter"),
        ("postgresql://u:Hunter@h:99999/db", "Hunter"),
        ("postgresql://u:pw@[::1/db", "pw"),
        ("postgresql://u:Topsecret@h/db?sslmode=verify", "Topsecret"),
    ] {
        let e = ConnInfo::parse(url).expect_err(url).to_string();
        assert!(!e.contains(secret), "{url}: {e}");
        assert!(!e.is_empty());
    }
    let e = ConnInfo::parse("postgresql://u:pw@h/db?sslmode=allow").unwrap_err();
    assert!(e.0.contains("sslmode=allow"), "{e}");
    let e = ConnInfo::parse("postgresql://u:pw@h/db?sslmod=require").unwrap_err();
    assert!(e.0.contains("\"sslmod\""), "{e}");
}

#[test]
fn default_sslmode_by_host() {
    let c = ConnInfo::parse("postgresql://u@h/d").unwrap();
    assert_eq!(
        c.ssl_mode(&tcp("db.example.com", 5432)),
        SslMode::VerifyFull
    );
    assert_eq!(c.ssl_mode(&tcp("127.0.0.1", 5432)), SslMode::Prefer);
    assert_eq!(c.ssl_mode(&tcp("::1", 5432)), SslMode::Prefer);
    assert_eq!(c.ssl_mode(&tcp("localhost", 5432)), SslMode::Prefer);
    let unix = Host::Unix {
        dir: "/tmp".into(),
        port: 5432,
    };
    assert_eq!(c.ssl_mode(&unix), SslMode::Disable);
    let c = ConnInfo::parse("postgresql://u@h/d?ssl=true").unwrap();
    assert_eq!(c.ssl_mode(&tcp("h", 1)), SslMode::Require);
}

#[test]
fn redacted_form_reparses_without_the_password() {
    let c =
        ConnInfo::parse("postgresql://us%2Fer:p%40ss@[::1]:5439/d%3Fb?sslmode=require").unwrap();
    let shown = c.redacted();
    assert_eq!(
        shown,
        "postgresql://us%2Fer:***@[::1]:5439/d%3Fb?sslmode=require"
    );
    assert!(!format!("{c:?}").contains("p@ss"));
    let back = ConnInfo::parse(&shown).unwrap();
    assert_eq!(back.user, c.user);
    assert_eq!(back.dbname, c.dbname);
    assert_eq!(back.hosts, c.hosts);
    assert_eq!(c.target(), "[::1]:5439/d?b as user us/er");
}
