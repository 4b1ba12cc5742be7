//! The job's filter and projection, on both paths: pushed into the SQL sent
//! to PostgreSQL, and evaluated with the Arrow kernels on Parquet parts
//! staged on S3 (moto). PostgreSQL itself, running the filter text as a
//! WHERE clause, is the oracle for which rows are kept.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::s3::*;
use crate::common::*;
use bson::{Bson, Document};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

/// The reference table staged as `parts` Parquet parts under
/// `s3://<bucket>/parts/`; returns the table and the bucket.
async fn staged_reference(rows: u64, parts: u64) -> (String, String) {
    staged_reference_with(rows, parts, true).await
}

/// The same, with or without a manifest beside the parts.
async fn staged_reference_with(rows: u64, parts: u64, with_manifest: bool) -> (String, String) {
    let table = seed_reference(rows).await;
    let bucket = unique("stage").replace('_', "-");
    create_bucket(&bucket);
    let s = store(&bucket);
    let mut staged = Vec::new();
    for k in 0..parts {
        let key = format!("parts/part-{k:04}.parquet");
        let sql = format!("SELECT * FROM {table} WHERE order_id % {parts} = {k}");
        let n = stage_part(&s, &key, &sql).await;
        staged.push((key, n));
    }
    // Not parts: the manifest (checked against the parts) and an empty
    // marker object.
    if with_manifest {
        let text = manifest(&bucket, &staged, rows);
        s.put(&ObjectPath::from("parts/manifest"), PutPayload::from(text))
            .await
            .unwrap();
    }
    s.put(&ObjectPath::from("parts/_SUCCESS"), PutPayload::from(""))
        .await
        .unwrap();
    (table, bucket)
}

const MAPPING: &str = r#"
[mapping]
id = ["order_id"]
include = ["order_id", "customer_id", "amount", "status", "order_date", "updated_at"]
decimal = "string"
"#;

fn sql_job(
    table: &str,
    filter: &str,
    db: &str,
    coll: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\nfilter = \"\"\"{filter}\"\"\"\n\
         fetch_rows = 500\n\n[target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\n{MAPPING}"
    ))
}

fn staged_job(
    bucket: &str,
    filter: &str,
    db: &str,
    coll: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    job(&format!(
        "[source]\nfilter = \"\"\"{filter}\"\"\"\nfetch_rows = 500\n\n\
         [source.staging]\nlocation = \"s3://{bucket}/parts/\"\nmode = \"existing\"\nendpoint = \"${{SHIFTLOAD_S3_ENDPOINT}}\"\n\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\n{MAPPING}"
    ))
}

fn id_of(d: &Document) -> i64 {
    match d.get("_id") {
        Some(Bson::Int64(v)) => *v,
        other => panic!("_id {other:?}"),
    }
}

#[tokio::test]
async fn filter_keeps_what_postgres_keeps_on_both_paths() {
    let (table, bucket) = staged_reference(3000, 3).await;
    let db = unique("t_filter");
    // Each filter is also valid SQL: PostgreSQL running it is the oracle.
    let filters = [
        "status IN ('paid', 'shipped') AND amount >= 50000.5",
        "NOT (quantity < 10) OR note IS NULL",
        "order_date >= DATE '2022-06-01' AND is_paid AND score <> 4.5",
        "created_at < TIMESTAMP '2020-01-01 00:30:00' OR customer_name = 'customer 62' \
         OR status NOT IN ('new', 'paid', 'closed')",
        "updated_at >= TIMESTAMP '2020-01-01 02:00:00+00' AND discount > 0.35",
    ];
    for (k, filter) in filters.iter().enumerate() {
        let expected: BTreeMap<i64, BTreeMap<String, Option<String>>> = pg_text_rows(&format!(
            "SELECT order_id, customer_id, amount, rtrim(status) AS status,
                    (order_date - date '1970-01-01') * 86400000::bigint AS order_date,
                    floor(extract(epoch FROM updated_at) * 1000)::bigint AS updated_at
             FROM {table} WHERE {filter}"
        ))
        .await
        .into_iter()
        .map(|r| (r["order_id"].as_ref().unwrap().parse().unwrap(), r))
        .collect();
        assert!(
            !expected.is_empty() && expected.len() < 3000,
            "filter {filter} should keep some rows and drop others ({})",
            expected.len()
        );

        let (_a, sql_path) = sql_job(&table, filter, &db, &format!("sql_{k}"));
        let (_b, parquet_path) = staged_job(&bucket, filter, &db, &format!("parquet_{k}"));
        if k == 0 {
            // Pushed down: Redshift gets the projection and the predicate.
            let plan = assert_ok(&shiftload(&["plan", sql_path.to_str().unwrap()]));
            assert!(
                plan.contains(&format!(
                    "SELECT \"order_id\", \"customer_id\", \"amount\", \"status\", \"order_date\", \"updated_at\" \
                     FROM (\nSELECT * FROM {table}\n) AS shiftload_src \
                     WHERE (\"status\" IN ('paid', 'shipped')) AND (\"amount\" >= 50000.5)"
                )),
                "{plan}"
            );
        }
        let sql_out = assert_ok(&run_job(&sql_path));
        let parquet_out = assert_ok(&run_job(&parquet_path));
        let n = shiftload::thousands(expected.len() as u64);
        assert!(
            sql_out.contains(&format!("{n} inserted")),
            "{filter}:\n{sql_out}"
        );
        assert!(
            parquet_out.contains(&format!("{n} inserted")),
            "{filter}:\n{parquet_out}"
        );

        let from_sql = mongo_docs(&db, &format!("sql_{k}")).await;
        let from_parquet = mongo_docs(&db, &format!("parquet_{k}")).await;
        let ids: BTreeSet<i64> = from_parquet.iter().map(id_of).collect();
        assert_eq!(
            ids,
            expected.keys().copied().collect::<BTreeSet<_>>(),
            "rows kept from the staged parts by {filter}"
        );
        assert_eq!(
            from_sql.iter().map(id_of).collect::<BTreeSet<_>>(),
            ids,
            "rows kept by the pushed-down {filter}"
        );
        for (a, b) in from_sql.iter().zip(&from_parquet) {
            assert_eq!(a, b, "the same row through both paths");
            let row = &expected[&id_of(b)];
            // Projection: exactly the included columns, `_id` first.
            let keys: Vec<&str> = b.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "_id",
                    "order_id",
                    "customer_id",
                    "amount",
                    "status",
                    "order_date",
                    "updated_at"
                ]
            );
            assert_eq!(b.get_i64("order_id").unwrap(), id_of(b));
            let text = |f: &str| row[f].clone().unwrap();
            assert_eq!(
                b.get_i32("customer_id").unwrap().to_string(),
                text("customer_id")
            );
            assert_eq!(b.get_str("amount").unwrap(), text("amount"));
            assert_eq!(b.get_str("status").unwrap(), text("status"));
            assert_eq!(
                b.get_datetime("order_date")
                    .unwrap()
                    .timestamp_millis()
                    .to_string(),
                text("order_date")
            );
            assert_eq!(
                b.get_datetime("updated_at")
                    .unwrap()
                    .timestamp_millis()
                    .to_string(),
                text("updated_at")
            );
        }
    }
    drop_db(&db).await;
}

#[tokio::test]
async fn staged_parts_are_checkpointed_partitions() {
    let (_table, bucket) = staged_reference(1200, 3).await;
    let db = unique("t_parts");
    let (_d, path) = staged_job(&bucket, "customer_id >= 0", &db, "orders");
    let p = path.to_str().unwrap();

    let plan = assert_ok(&shiftload(&["plan", p]));
    for k in 0..3 {
        assert!(
            plan.contains(&format!("s3://{bucket}/parts/part-{k:04}.parquet")),
            "{plan}"
        );
    }
    assert!(
        !plan.contains("manifest") && !plan.contains("_SUCCESS"),
        "{plan}"
    );

    let first = assert_ok(&run_job(&path));
    assert!(
        first.contains("1,200 inserted, 0 already present"),
        "{first}"
    );
    let status = assert_ok(&shiftload(&["status", p]));
    assert!(status.contains("3 done"), "{status}");
    assert_eq!(mongo_count(&db, "orders").await, 1200);

    // The next run is a new generation over the same parts: nothing doubles.
    let second = assert_ok(&run_job(&path));
    assert!(
        second.contains("0 inserted, 1,200 already present"),
        "{second}"
    );
    assert_eq!(mongo_count(&db, "orders").await, 1200);
    drop_db(&db).await;
}

#[tokio::test]
async fn bad_filters_and_staging_are_named() {
    let table = seed_reference(10).await;
    let db = unique("t_badfilter");
    let fails = |path: &std::path::Path| {
        let out = run_job(path);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
        stderr(&out)
    };

    let (_d, path) = sql_job(&table, "nope = 1", &db, "c");
    let err = fails(&path);
    assert!(
        err.contains("source.filter: column `nope` is not in the result"),
        "{err}"
    );

    let (_d, path) = sql_job(&table, "customer_id = 'x'", &db, "c");
    let err = fails(&path);
    assert!(err.contains("column `customer_id` is Int32"), "{err}");

    // A syntax error is found without touching any server.
    let (_d, path) = sql_job(&table, "amount >", &db, "c");
    let out = shiftload(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("source.filter"), "{}", stderr(&out));

    let bucket = unique("empty").replace('_', "-");
    create_bucket(&bucket);
    let (_d, path) = staged_job(&bucket, "customer_id > 0", &db, "c");
    let err = fails(&path);
    assert!(
        err.contains(&format!(
            "source.staging.location: s3://{bucket}/parts/: no Parquet part is there"
        )),
        "{err}"
    );

    let (_d, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\n\
         [source.staging]\nlocation = \"s3://{bucket}/x/\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n"
    ));
    let out = shiftload(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("source.staging.iam_role"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mongo_count(&db, "c").await, 0);
}

/// The UNLOAD path on a real Redshift: `REDSHIFT_URL` (a user that may
/// create a table), `SHIFTLOAD_REDSHIFT_S3` (`s3://bucket/prefix/`) and
/// `SHIFTLOAD_REDSHIFT_IAM_ROLE` (a role Redshift assumes to write there),
/// with AWS credentials for the bucket in the environment.
#[tokio::test]
#[ignore = "needs a Redshift cluster: REDSHIFT_URL, SHIFTLOAD_REDSHIFT_S3, SHIFTLOAD_REDSHIFT_IAM_ROLE"]
async fn unload_on_redshift() {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let (url, location, role) = (
        env("REDSHIFT_URL"),
        env("SHIFTLOAD_REDSHIFT_S3"),
        env("SHIFTLOAD_REDSHIFT_IAM_ROLE"),
    );
    let table = unique("shiftload_unload");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to Redshift (use sslmode=disable for this test's setup connection)");
    tokio::spawn(conn);
    let values: Vec<String> = (1..=1000).map(|i| format!("({i}, 'row {i}')")).collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int, label varchar(20));
             INSERT INTO {table} VALUES {};",
            values.join(",")
        ))
        .await
        .unwrap();
    let db = unique("t_unload");
    let (_d, path) = job(&format!(
        "[source]\nurl = \"{url}\"\nquery = \"SELECT * FROM {table}\"\nfilter = \"id > 100\"\n\
         [source.staging]\nlocation = \"{location}\"\niam_role = \"{role}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [mapping]\nid = [\"id\"]\n"
    ));
    let out = run_job(&path);
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    assert_ok(&out);
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(docs.len(), 900);
    for d in &docs {
        let id = d.get_i32("_id").unwrap();
        assert!(id > 100);
        assert_eq!(d.get_str("label").unwrap(), format!("row {id}"));
    }
    drop_db(&db).await;
}

/// For `scripts/bench-staging.sh`: stage SHIFTLOAD_VOLUME_ROWS rows of the
/// reference table as 8 Parquet parts on the S3 endpoint, and write two job
/// files with the same filter and mapping into SHIFTLOAD_BENCH_DIR: the
/// query path (`query.toml`) and the staged path (`staged.toml`).
#[tokio::test]
#[ignore = "volume: run by scripts/bench-staging.sh"]
async fn stage_for_bench() {
    let rows = std::env::var("SHIFTLOAD_VOLUME_ROWS").map_or(1_000_000, |v| v.parse().unwrap());
    let dir = std::path::PathBuf::from(std::env::var("SHIFTLOAD_BENCH_DIR").unwrap());
    let (table, bucket) = staged_reference(rows, 8).await;
    let filter = "status IN ('paid', 'shipped') AND note IS NOT NULL";
    let db = unique("bench_staging");
    for (name, path) in [
        ("query", sql_job(&table, filter, &db, "query")),
        ("staged", staged_job(&bucket, filter, &db, "staged")),
    ] {
        let text = std::fs::read_to_string(&path.1).unwrap();
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
    println!("staged {rows} rows of {table} as 8 parts in s3://{bucket}/parts/, database {db}");
}

#[tokio::test]
async fn a_bad_part_fails_alone_and_the_next_run_resumes_it() {
    // No manifest: the listing cannot tell a bad part before it is read.
    let (table, bucket) = staged_reference_with(1600, 4, false).await;
    let s = store(&bucket);
    let bad = "parts/part-0003.parquet";
    s.put(
        &ObjectPath::from(bad),
        PutPayload::from("not parquet at all"),
    )
    .await
    .unwrap();
    let db = unique("t_badpart");
    let (_d, path) = staged_job(&bucket, "customer_id >= 0", &db, "orders");
    let text = std::fs::read_to_string(&path).unwrap() + "\n[retry]\nmax_attempts = 1\n";
    std::fs::write(&path, text).unwrap();

    let out = run_job(&path);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report = stdout(&out) + &stderr(&out);
    assert!(report.contains(bad), "the failed part is named:\n{report}");
    assert_eq!(
        mongo_count(&db, "orders").await,
        1200,
        "the three good parts are written"
    );

    // The part is written again (say, the export re-run); the same command
    // resumes: only that part is read, from the part list of the run.
    stage_part(
        &s,
        bad,
        &format!("SELECT * FROM {table} WHERE order_id % 4 = 3"),
    )
    .await;
    let again = assert_ok(&run_job(&path));
    assert!(again.contains("400 inserted, 0 already present"), "{again}");
    assert_eq!(mongo_count(&db, "orders").await, 1600);
    let status = assert_ok(&shiftload(&["status", path.to_str().unwrap()]));
    assert!(status.contains("4 done"), "{status}");
    drop_db(&db).await;
}
