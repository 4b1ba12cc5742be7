//! S3 (moto) for the staged-path tests: buckets, and Parquet parts written
//! from PostgreSQL with shiftload's own reader.

use std::io::{Read, Write};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use shiftload::config::SourceConfig;
use shiftload::memory::{Budget, ByteSize};
use shiftload::source::PgSource;

use super::pg_url;

pub fn s3_endpoint() -> String {
    std::env::var("SHIFTLOAD_S3_ENDPOINT")
        .expect("SHIFTLOAD_S3_ENDPOINT is not set: run the tests with scripts/test.sh")
}

/// A fresh bucket on the S3 endpoint (moto takes an unsigned PUT).
pub fn create_bucket(name: &str) {
    let endpoint = s3_endpoint();
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host).expect("connect to S3 endpoint");
    write!(
        conn,
        "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "create bucket {name}: {reply}"
    );
}

pub fn store(bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_endpoint(s3_endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("S3 client"),
    )
}

/// Read `sql` from PostgreSQL with shiftload's own reader and write it as
/// one Parquet object at `key` (as it is: no character encoded); the rows
/// written.
pub async fn stage_part(store: &Arc<dyn ObjectStore>, key: &str, sql: &str) -> u64 {
    let cfg = SourceConfig {
        url: pg_url(),
        query: sql.to_string(),
        statement_timeout_ms: None,
        fetch_rows: 700,
        filter: None,
        staging: None,
        iam: None,
    };
    let budget = Budget::new(ByteSize(64 << 20), 1);
    let mut source = PgSource::open(&cfg, sql, &budget, false).await.unwrap();
    let mut out = Vec::new();
    let mut rows = 0;
    {
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut out, source.schema(), None).unwrap();
        while let Some(b) = source.next_batch().await {
            let batch = b.unwrap().batch;
            rows += batch.num_rows() as u64;
            writer.write(&batch).unwrap();
        }
        writer.close().unwrap();
    }
    store
        .put(&ObjectPath::parse(key).unwrap(), PutPayload::from(out))
        .await
        .unwrap();
    rows
}

/// A Redshift `MANIFEST VERBOSE` for `parts` (key, rows) of `bucket`, with
/// `total` as its record count.
pub fn manifest(bucket: &str, parts: &[(String, u64)], total: u64) -> String {
    let entries: Vec<String> = parts
        .iter()
        .map(|(key, rows)| {
            format!(
                r#"{{"url": "s3://{bucket}/{key}", "meta": {{"content_length": 1, "record_count": {rows}}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"entries": [{}], "schema": {{"elements": []}}, "meta": {{"content_length": 1, "record_count": {total}}}}}"#,
        entries.join(", ")
    )
}
