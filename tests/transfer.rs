//! Whole transfers of the reference table through the real binary, read back
//! and compared with the source row by row.

use std::collections::HashMap;

use crate::common::*;
use bson::{Bson, Document};

fn get<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_document()?.get(p)?;
    }
    Some(cur)
}

#[tokio::test]
async fn reference_table_transfers_exactly_and_reruns_idempotently() {
    let out = transfer_and_compare(20_000, 3000).await;
    assert!(out.contains("in 7 batches"), "{out}");
}

/// The volume run (`scripts/bench-transfer.sh`): SHIFTLOAD_VOLUME_ROWS rows
/// (default 1,000,000), compared document by document.
#[tokio::test]
#[ignore = "volume: run by scripts/bench-transfer.sh"]
async fn volume_transfer_matches_the_source() {
    let rows = std::env::var("SHIFTLOAD_VOLUME_ROWS").map_or(1_000_000, |v| v.parse().unwrap());
    let out = transfer_and_compare(rows, 65_536).await;
    println!("first run:\n{out}");
}

/// Transfer the reference table, compare every document with its row, run
/// again and check nothing is duplicated. Returns the first run's summary.
async fn transfer_and_compare(rows: u64, fetch_rows: u64) -> String {
    let table = seed_reference(rows).await;
    let db = unique("t_ref");
    let (_d, path) = job(&format!(
        r#"[source]
url = "{{PG}}"
query = "SELECT * FROM {table}"
fetch_rows = {fetch_rows}

[target]
uri = "{{MONGO}}"
database = "{db}"
collection = "orders"
write_batch_docs = 1000
send = "command"

[mapping]
id = ["order_id"]
exclude = ["order_id"]
decimal = "string"

[mapping.rename]
customer_id = "customer.id"
customer_name = "customer.name"
"#
    ));
    let first = assert_ok(&run_job(&path));
    eprintln!("{first}");
    assert!(
        first.contains(&format!(
            "{} inserted, 0 already present",
            shiftload::thousands(rows)
        )),
        "{first}"
    );
    assert!(first.contains("peak RSS"), "{first}");

    let expected = pg_text_rows(&format!(
        "SELECT order_id, customer_id, quantity, amount, discount::float8 AS discount, score, is_paid,
                rtrim(status) AS status, customer_name, note,
                (order_date - date '1970-01-01') * 86400000::bigint AS order_date,
                floor(extract(epoch FROM created_at) * 1000)::bigint AS created_at,
                floor(extract(epoch FROM updated_at) * 1000)::bigint AS updated_at
         FROM {table} ORDER BY order_id"
    ))
    .await;
    let docs = mongo_docs(&db, "orders").await;
    assert_eq!(docs.len() as u64, rows);
    for (doc, row) in docs.iter().zip(&expected) {
        let v = |c: &str| row[c].clone();
        assert_eq!(
            doc.get("_id"),
            Some(&Bson::Int64(v("order_id").unwrap().parse().unwrap()))
        );
        assert_eq!(
            get(doc, "customer.id"),
            Some(&Bson::Int32(v("customer_id").unwrap().parse().unwrap()))
        );
        assert_eq!(
            get(doc, "customer.name"),
            Some(&Bson::String(v("customer_name").unwrap()))
        );
        assert_eq!(
            doc.get("quantity"),
            v("quantity")
                .map(|q| Bson::Int32(q.parse().unwrap()))
                .as_ref()
        );
        assert_eq!(doc.get("amount"), Some(&Bson::String(v("amount").unwrap())));
        assert_eq!(
            doc.get("discount"),
            Some(&Bson::Double(v("discount").unwrap().parse().unwrap()))
        );
        assert_eq!(
            doc.get("score"),
            Some(&Bson::Double(v("score").unwrap().parse().unwrap()))
        );
        assert_eq!(
            doc.get("is_paid"),
            Some(&Bson::Boolean(v("is_paid").unwrap() == "t"))
        );
        assert_eq!(doc.get("status"), Some(&Bson::String(v("status").unwrap())));
        assert_eq!(doc.get("note"), v("note").map(Bson::String).as_ref());
        for c in ["order_date", "created_at", "updated_at"] {
            let ms: i64 = v(c).unwrap().parse().unwrap();
            assert_eq!(
                doc.get(c),
                Some(&Bson::DateTime(bson::DateTime::from_millis(ms))),
                "{c}"
            );
        }
        // _id, customer, and the 10 other columns less those that are NULL.
        let nulls = v("quantity").is_none() as usize + v("note").is_none() as usize;
        assert_eq!(doc.len(), 12 - nulls, "{doc:?}");
    }

    // A second run finds every document already there and writes nothing new.
    let again = assert_ok(&run_job(&path));
    assert!(
        again.contains(&format!(
            "0 inserted, {} already present",
            shiftload::thousands(rows)
        )),
        "{again}"
    );
    assert_eq!(mongo_count(&db, "orders").await, rows);
    drop_db(&db).await;
    pg_exec(&format!("DROP TABLE {table}")).await;
    first
}

#[tokio::test]
async fn include_rename_and_composite_id() {
    let table = seed_reference(100).await;
    let db = unique("t_map");
    let (_d, path) = simple_job(
        &format!("SELECT * FROM {table}"),
        &db,
        "c",
        "id = [\"customer_id\", \"order_id\"]\ninclude = [\"status\", \"note\", \"order_date\"]\n\
         timestamp = \"string\"\ntrim_char = false\n[mapping.rename]\nstatus = \"meta.state\"\nnote = \"meta.text.note\"",
    );
    assert_ok(&run_job(&path));
    let want: HashMap<i64, _> = pg_text_rows(&format!(
        "SELECT order_id, customer_id, status, note, order_date FROM {table}"
    ))
    .await
    .into_iter()
    .map(|r| (r["order_id"].as_ref().unwrap().parse().unwrap(), r))
    .collect();
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(docs.len(), 100);
    for doc in &docs {
        let id = doc.get_document("_id").unwrap();
        assert_eq!(
            id.keys().collect::<Vec<_>>(),
            ["customer_id", "order_id"],
            "key order kept"
        );
        let row = &want[&id.get_i64("order_id").unwrap()];
        assert_eq!(
            id.get_i32("customer_id").unwrap().to_string(),
            *row["customer_id"].as_ref().unwrap()
        );
        let mut keys: Vec<&String> = doc.keys().collect();
        keys.sort();
        assert_eq!(keys, ["_id", "meta", "order_date"]);
        // trim_char = false keeps CHAR(8) padding.
        assert_eq!(
            get(doc, "meta.state").unwrap().as_str().unwrap(),
            row["status"].as_ref().unwrap()
        );
        assert_eq!(get(doc, "meta.state").unwrap().as_str().unwrap().len(), 8);
        assert_eq!(
            get(doc, "meta.text.note").and_then(Bson::as_str),
            row["note"].as_deref()
        );
        assert_eq!(
            doc.get_str("order_date").unwrap(),
            row["order_date"].as_ref().unwrap()
        );
    }
    // A NULL note leaves out the whole `meta.text` sub-document under null = "omit".
    let null_note = docs
        .iter()
        .find(|d| get(d, "meta.text").is_none())
        .expect("a row with a NULL note");
    assert!(get(null_note, "meta.state").is_some());
    drop_db(&db).await;
}

#[tokio::test]
async fn without_id_each_document_gets_an_object_id() {
    let table = seed_reference(500).await;
    let db = unique("t_oid");
    let (_d, path) = simple_job(
        &format!("SELECT order_id, status FROM {table}"),
        &db,
        "c",
        "",
    );
    assert_ok(&run_job(&path));
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(docs.len(), 500);
    assert!(docs
        .iter()
        .all(|d| matches!(d.get("_id"), Some(Bson::ObjectId(_)))));
    let mut orders: Vec<i64> = docs
        .iter()
        .map(|d| d.get_i64("order_id").unwrap())
        .collect();
    orders.sort();
    assert_eq!(orders, (1..=500).collect::<Vec<_>>());
    drop_db(&db).await;
}

#[tokio::test]
async fn json_kept_as_text_or_parsed() {
    let table = unique("j");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int, j jsonb, t json);
         INSERT INTO {table} VALUES
           (1, '{{\"b\": [1, 2.5, \"x\"], \"a\": {{\"n\": null}}}}', '[true, {{\"k\": \"v\"}}]'),
           (2, '\"just text\"', '12345678901'),
           (3, NULL, 'null')"
    ))
    .await;
    let want: HashMap<i32, (Option<String>, Option<String>)> = pg_text_rows(&format!(
        "SELECT id, j::text AS j, t::text AS t FROM {table}"
    ))
    .await
    .into_iter()
    .map(|r| {
        (
            r["id"].as_ref().unwrap().parse().unwrap(),
            (r["j"].clone(), r["t"].clone()),
        )
    })
    .collect();
    let db = unique("t_json");
    for policy in ["string", "parse"] {
        let (_d, path) = simple_job(
            &format!("SELECT * FROM {table}"),
            &db,
            policy,
            &format!("id = [\"id\"]\njson = \"{policy}\""),
        );
        assert_ok(&run_job(&path));
        let docs = mongo_docs(&db, policy).await;
        assert_eq!(docs.len(), 3);
        for doc in &docs {
            let (j, t) = &want[&doc.get_i32("_id").unwrap()];
            for (field, text) in [("j", j), ("t", t)] {
                match (policy, text) {
                    (_, None) => assert_eq!(doc.get(field), None, "{doc:?}"),
                    // The server's own text of the value, byte for byte.
                    ("string", Some(text)) => {
                        assert_eq!(doc.get_str(field).unwrap(), text, "{doc:?}")
                    }
                    (_, Some(text)) => {
                        let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
                        let got = doc.get(field).map_or(serde_json::Value::Null, bson_to_json);
                        assert_eq!(got, parsed, "{doc:?}");
                    }
                }
            }
        }
    }
    // Parsed JSON keeps key order and makes embedded documents and arrays.
    let one = mongo_docs(&db, "parse").await.remove(0);
    let j = one.get_document("j").unwrap();
    assert_eq!(
        j.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "jsonb orders its keys"
    );
    assert_eq!(j.get_array("b").unwrap().len(), 3);
    drop_db(&db).await;
    pg_exec(&format!("DROP TABLE {table}")).await;
}
