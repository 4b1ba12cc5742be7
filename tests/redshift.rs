//! The reader against a server speaking Redshift's wire dialect
//! (tests/common/redshift.rs, in front of the project's PostgreSQL): NUMERIC
//! in each of its wire forms, Redshift's own types, SHA-256 digest login,
//! its cursor rules and errors, and transfers equal to the direct ones.

use crate::common::redshift::{run_job_async, DialectServer, Injection, Options};
use crate::common::*;
use bson::{Bson, Document};
use std::sync::atomic::Ordering;

fn options(max_protocol: u8) -> Options {
    Options {
        max_protocol,
        ..Default::default()
    }
}

fn by_id(mut docs: Vec<Document>) -> Vec<Document> {
    docs.sort_by_key(|d| format!("{:?}", d.get("_id")));
    docs
}

/// NUMERIC(8,2), (18,4), (19,0), (38,10), negatives and values whose
/// unscaled integer has zero high bytes, through Redshift's binary form
/// (protocol 2) and its text form (a server that confirms no protocol):
/// each value exactly as PostgreSQL prints it. Read as PostgreSQL's binary
/// form, Redshift's 8-byte 1234 is a silent 0. The second server also sends
/// every row at the first Execute, more than asked: still cut into batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numerics_in_each_redshift_wire_form() {
    let table = unique("rs_num");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int, n8 numeric(8,2), n18 numeric(18,4), n19 numeric(19,0), n38 numeric(38,10));
         INSERT INTO {table} VALUES
           (1, 12.34, 12345678901234.5678, 9223372036854775807, 1234567890123456789012345678.0123456789),
           (2, -12.34, -0.0001, -9223372036854775808, -9999999999999999999999999999.9999999999),
           (3, 0.01, 1, 0, 0.0000000001),
           (4, 999999.99, -99999999999999.9999, 1, -1),
           (5, 0, 0, NULL, 12.5);"
    ))
    .await;
    let expected = pg_text_rows(&format!(
        "SELECT id, n8::text, n18::text, n19::text, n38::text FROM {table} ORDER BY id"
    ))
    .await;
    for protocol in [2, 0] {
        let server = DialectServer::start(Options {
            max_protocol: protocol,
            ignore_max_rows: protocol == 0,
            ..Default::default()
        })
        .await;
        let db = unique("rs_num");
        // 8-byte forms alone first: read as PostgreSQL's form they would
        // all be zeros, and the run would report success.
        for (coll, columns) in [("narrow", "id, n8, n18, n19"), ("wide", "id, n38")] {
            let (_d, path) = job(&format!(
                "[source]\nurl = \"{}\"\nquery = \"SELECT {columns} FROM {table}\"\nfetch_rows = 2\n\n\
                 [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\n\n\
                 [mapping]\nid = [\"id\"]\ndecimal = \"string\"\n",
                server.default_url()
            ));
            let out = assert_ok(&run_job_async(&path).await);
            assert!(out.contains("in 3 batches"), "2 rows a batch: {out}");
            let docs = by_id(mongo_docs(&db, coll).await);
            assert_eq!(docs.len(), expected.len(), "protocol {protocol}");
            for (doc, row) in docs.iter().zip(&expected) {
                for col in columns.split(", ").skip(1) {
                    let got = doc.get(col).cloned();
                    let want = row[col].clone().map(Bson::String);
                    assert_eq!(got, want, "protocol {protocol}, row {:?}, {col}", row["id"]);
                }
            }
        }
        // The partition's connection asked for protocol 2 once the first
        // one had met Redshift.
        let asked = server.stats.protocols_asked.lock().unwrap().clone();
        assert_eq!(asked.first(), Some(&None), "{asked:?}");
        assert!(asked.contains(&Some(2)), "{asked:?}");
        drop_db(&db).await;
    }
}

/// Redshift's own types: INTERVAL YEAR TO MONTH / DAY TO SECOND, GEOMETRY
/// and GEOGRAPHY (EWKB bytes, or GeoJSON documents), HLLSKETCH, SUPER,
/// VARBYTE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_only_types_become_documents() {
    let server = DialectServer::start(options(2)).await;
    let db = unique("rs_types");
    let point = "0101000020e6100000000000000000f03f0000000000000040";
    let query = format!(
        "SELECT 1 AS id, interval '1 year 2 months' AS span__ym, \
         interval '3 days 04:05:06.5' AS span__ds, interval '-1 days -2 hours' AS span, \
         '{point}'::text AS pt__geometry, '{point}'::text AS pt__geography, \
         '{{\"version\":1,\"logm\":15}}'::text AS h__hllsketch, \
         '{{\"a\": [1, {{\"b\": null}}]}}'::json AS s, '\\\\x00ff'::bytea AS vb"
    );
    // The second run names the server `redshift://`: every connection,
    // the first one too, asks for protocol 2.
    let mut asked_before = 0;
    for (run, geometry) in [(0, "ewkb"), (1, "geojson")] {
        let url = match run {
            0 => server.default_url(),
            _ => {
                asked_before = server.stats.protocols_asked.lock().unwrap().len();
                server.default_url().replace("postgresql://", "redshift://")
            }
        };
        let (_d, path) = job(&format!(
            "[source]\nurl = \"{url}\"\nquery = \"\"\"{query}\"\"\"\n\n\
             [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c{run}\"\n\n\
             [mapping]\nid = [\"id\"]\nnull = \"null\"\ngeometry = \"{geometry}\"\n"
        ));
        assert_ok(&run_job_async(&path).await);
        let docs = mongo_docs(&db, &format!("c{run}")).await;
        let d = &docs[0];
        assert_eq!(d.get_str("span__ym").unwrap(), "P1Y2M");
        assert_eq!(d.get_str("span__ds").unwrap(), "P3DT4H5M6.5S");
        assert_eq!(d.get_str("span").unwrap(), "P-1DT-2H");
        let ewkb: Vec<u8> = (0..point.len() / 2)
            .map(|i| u8::from_str_radix(&point[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        for col in ["pt__geometry", "pt__geography"] {
            if geometry == "ewkb" {
                assert_eq!(d.get_binary_generic(col).unwrap(), &ewkb, "{col}");
            } else {
                let g = bson_to_json(&Bson::Document(d.get_document(col).unwrap().clone()));
                assert_eq!(
                    g,
                    serde_json::json!({"type": "Point", "coordinates": [1.0, 2.0]})
                );
            }
        }
        assert_eq!(
            d.get_str("h__hllsketch").unwrap(),
            "{\"version\":1,\"logm\":15}"
        );
        let s = d.get_document("s").unwrap();
        assert_eq!(
            bson_to_json(&Bson::Document(s.clone())),
            serde_json::json!({"a": [1, {"b": null}]})
        );
        assert_eq!(d.get_binary_generic("vb").unwrap(), &vec![0u8, 0xff]);
    }
    let asked = server.stats.protocols_asked.lock().unwrap().clone();
    assert!(asked[0].is_none(), "{asked:?}");
    assert!(
        asked[asked_before..].iter().all(|a| *a == Some(2)),
        "{asked:?}"
    );
    drop_db(&db).await;
}

/// SHA-256 digest login (code 13): the right password logs in, a wrong one
/// fails with the server's words and without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_digest_login() {
    let server = DialectServer::start(Options {
        max_protocol: 2,
        sha256_users: vec![("analyst".into(), "Dig3st-pw".into())],
        ..Default::default()
    })
    .await;
    let db = unique("rs_sha");
    let write = |url: String| {
        job(&format!(
            "[source]\nurl = \"{url}\"\nquery = \"SELECT 7 AS id, 'x' AS v\"\n\n\
             [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\n\
             [mapping]\nid = [\"id\"]\n"
        ))
    };
    let (_d, path) = write(server.url("analyst", "Dig3st-pw"));
    assert_ok(&run_job_async(&path).await);
    assert_eq!(mongo_docs(&db, "c").await[0].get_str("v").unwrap(), "x");

    let (_d, path) = write(server.url("analyst", "Wrong-pw-99"));
    let out = run_job_async(&path).await;
    assert!(!out.status.success());
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("password authentication failed for user \"analyst\""),
        "{all}"
    );
    assert!(!all.contains("Wrong-pw-99"), "{all}");
    drop_db(&db).await;
}

/// The reference table through the dialect server equals the direct
/// transfer document for document — with a serializable conflict (XX000
/// 1023) and a statement cancel (57014) injected on the way, both retried —
/// and the reader kept Redshift's cursor rules: a named portal, one Execute
/// at a time, no Parse while a portal was suspended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_through_the_dialect_server_equals_the_direct_one() {
    let table = seed_reference(3000).await;
    let server = DialectServer::start(options(2)).await;
    server.inject(Injection {
        after_rows: 700,
        code: "XX000",
        message: "1023".into(),
        detail: Some("Serializable isolation violation on table - 123456, transactions forming the cycle are: 1, 2 (pid:1)".into()),
    });
    server.inject(Injection {
        after_rows: 400,
        code: "57014",
        message: "Query (4242) cancelled on user's request".into(),
        detail: None,
    });
    let db = unique("rs_ref");
    for (coll, url) in [("direct", pg_url()), ("dialect", server.default_url())] {
        let (_d, path) = job(&format!(
            r#"[source]
url = "{url}"
query = "SELECT * FROM {table}"
fetch_rows = 250

[partition]
column = "order_id"
count = 3

[target]
uri = "{{MONGO}}"
database = "{db}"
collection = "{coll}"

[mapping]
id = ["order_id"]
decimal = "string"
"#
        ));
        let out = run_job_async(&path).await;
        assert_ok(&out);
    }
    let direct = by_id(mongo_docs(&db, "direct").await);
    let dialect = by_id(mongo_docs(&db, "dialect").await);
    assert_eq!(direct.len(), 3000);
    assert_eq!(dialect.len(), direct.len());
    for (a, b) in direct.iter().zip(&dialect) {
        assert_eq!(a, b);
    }
    let s = &server.stats;
    assert_eq!(
        s.injected.load(Ordering::Relaxed),
        2,
        "both errors were sent"
    );
    assert_eq!(s.max_executes_in_flight.load(Ordering::Relaxed), 1);
    assert_eq!(s.executes_on_unnamed_portal.load(Ordering::Relaxed), 0);
    assert_eq!(s.parse_while_suspended.load(Ordering::Relaxed), 0);
    drop_db(&db).await;
}

/// The dialect server alone, for scripts/bench-redshift.sh: prints its port
/// (the project's user and password log in through it) and serves for SHIFTLOAD_DIALECT_SECONDS (default 3600).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a server for scripts/bench-redshift.sh"]
async fn serve_dialect_server() {
    let server = DialectServer::start(options(2)).await;
    println!("dialect server port: {}", server.port);
    let secs = std::env::var("SHIFTLOAD_DIALECT_SECONDS").map_or(3600, |v| v.parse().unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
}

/// `POST /moto-api/seed?a=N`: moto's random values repeat from here.
async fn seed_moto(n: u32) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let endpoint = std::env::var("SHIFTLOAD_S3_ENDPOINT").unwrap();
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /moto-api/seed?a={n} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// IAM login end to end against moto's `GetClusterCredentials`: the
/// temporary user and password it returns (predicted by seeding moto, then
/// given to a PostgreSQL role) log in, the rows arrive, and the password
/// appears nowhere in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_login_with_temporary_credentials() {
    let endpoint = std::env::var("SHIFTLOAD_S3_ENDPOINT").unwrap();
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .load()
        .await;
    let redshift = aws_sdk_redshift::Client::new(&aws);
    let cluster = unique("iam-cluster").replace('_', "-");
    redshift
        .create_cluster()
        .cluster_identifier(&cluster)
        .node_type("ra3.xlplus")
        .master_username("admin")
        .master_user_password("Adm1n-pass")
        .send()
        .await
        .unwrap();
    let db_user = unique("loader");
    let pg: tokio_postgres::Config = pg_url().parse().unwrap();
    let database = pg.get_dbname().unwrap().to_string();
    let seed = 4000 + std::process::id() % 1000;
    seed_moto(seed).await;
    let creds = redshift
        .get_cluster_credentials()
        .cluster_identifier(&cluster)
        .db_user(&db_user)
        .db_name(&database)
        .auto_create(false)
        .duration_seconds(900)
        .send()
        .await
        .unwrap();
    let (iam_user, password) = (creds.db_user.unwrap(), creds.db_password.unwrap());
    assert_eq!(iam_user, format!("IAM:{db_user}"));
    let table = unique("iam_rows");
    pg_exec(&format!(
        "CREATE ROLE \"{iam_user}\" LOGIN PASSWORD '{password}';
         CREATE TABLE {table} AS SELECT g AS id, 'row ' || g AS v FROM generate_series(1, 25) g;
         GRANT SELECT ON {table} TO \"{iam_user}\";"
    ))
    .await;
    seed_moto(seed).await;

    let db = unique("rs_iam");
    let (_d, path) = job(&format!(
        "[source]\nurl = \"postgresql://{db_user}@127.0.0.1:{}/{database}?sslmode=disable\"\n\
         query = \"SELECT * FROM {table}\"\n\n[source.iam]\ncluster = \"{cluster}\"\nregion = \"us-east-1\"\n\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\n\
         [mapping]\nid = [\"id\"]\n",
        pg.get_ports()[0]
    ));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shiftload"))
            .args(["run", "--no-progress", path.to_str().unwrap()])
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("SHIFTLOAD_LOG", "debug")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(&password), "the IAM password leaked:\n{all}");
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(docs.len(), 25);
    assert_eq!(docs[24].get_str("v").unwrap(), "row 25");
    drop_db(&db).await;
}

/// The same types on a real Redshift, when `REDSHIFT_URL` names a user that
/// may create a table (`sslmode=disable` or `prefer` for this test's own
/// setup connection, which logs in with MD5): each value read back as
/// Redshift prints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Redshift cluster: REDSHIFT_URL"]
async fn types_on_redshift() {
    let url = std::env::var("REDSHIFT_URL").expect("REDSHIFT_URL is not set");
    let table = unique("shiftload_types");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to Redshift");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int, n8 numeric(8,2), n18 numeric(18,4), n19 numeric(19,0),
               n38 numeric(38,10), r real, d double precision, b boolean, c char(4), v varchar(20),
               dt date, ts timestamp, tz timestamptz, t time, ttz timetz,
               ym interval year to month, ds interval day to second, vb varbyte(8), s super,
               g geometry);
             INSERT INTO {table} VALUES
               (1, 12.34, -0.0001, 9223372036854775807, -1234567890123456789012345678.0123456789,
                1.5, -2.25, true, 'ab', 'héllo', '2024-02-29', '2024-02-29 13:14:15.123456',
                '2024-02-29 13:14:15.654321+02', '08:30:00.000001', '12:00:00+05:30',
                interval '1 year 2 months', interval '3 days 04:05:06.5', 'ab'::varbyte,
                json_parse('{{\"a\": [1, 2]}}'), ST_GeomFromText('POINT(1 2)'));"
        ))
        .await
        .unwrap();
    let db = unique("t_redshift_types");
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{url}\"\nquery = \"SELECT * FROM {table}\"\n\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\n\
         [mapping]\nid = [\"id\"]\ndecimal = \"string\"\ntimestamp = \"string\"\n"
    ));
    let out = run_job_async(&path).await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    assert_ok(&out);
    let d = &mongo_docs(&db, "c").await[0];
    let s = |k: &str| d.get_str(k).unwrap().to_string();
    assert_eq!(s("n8"), "12.34");
    assert_eq!(s("n18"), "-0.0001");
    assert_eq!(s("n19"), "9223372036854775807");
    assert_eq!(s("n38"), "-1234567890123456789012345678.0123456789");
    assert_eq!(d.get_f64("r").unwrap(), 1.5);
    assert_eq!(d.get_f64("d").unwrap(), -2.25);
    assert!(d.get_bool("b").unwrap());
    assert_eq!(s("c"), "ab");
    assert_eq!(s("v"), "héllo");
    assert_eq!(s("dt"), "2024-02-29");
    assert_eq!(s("ts"), "2024-02-29T13:14:15.123456");
    assert_eq!(s("tz"), "2024-02-29T11:14:15.654321Z");
    assert_eq!(s("t"), "08:30:00.000001");
    assert_eq!(s("ttz"), "06:30:00.000000");
    assert_eq!(s("ym"), "P1Y2M");
    assert_eq!(s("ds"), "P3DT4H5M6.5S");
    assert_eq!(d.get_binary_generic("vb").unwrap(), b"ab");
    assert_eq!(
        bson_to_json(&Bson::Document(d.get_document("s").unwrap().clone())),
        serde_json::json!({"a": [1, 2]})
    );
    // POINT(1 2) as EWKB (little-endian, no SRID).
    let mut ewkb = vec![1u8, 1, 0, 0, 0];
    ewkb.extend(1f64.to_le_bytes());
    ewkb.extend(2f64.to_le_bytes());
    assert_eq!(d.get_binary_generic("g").unwrap(), &ewkb);
    drop_db(&db).await;
}
