//! `shiftload verify`: a copy proved equal to its source, or the
//! documents that differ named, by partition.

use crate::common::*;
use bson::doc;

/// A reference table loaded into its own database, partitioned: the job
/// file and the names.
async fn loaded(rows: u64) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let table = seed_reference(rows).await;
    let db = unique("verify");
    let (dir, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\nfetch_rows = 500\n\n\
         [partition]\ncolumn = \"order_id\"\ncount = 4\n\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"orders\"\n\n\
         [mapping]\nid = [\"order_id\"]\ndecimal = \"string\"\n\
         [mapping.rename]\ncustomer_name = \"customer.name\"\n"
    ));
    assert_ok(&run_job(&path));
    assert_eq!(mongo_count(&db, "orders").await, rows);
    (dir, path, db)
}

fn verify(path: &std::path::Path) -> std::process::Output {
    shiftload(&["verify", path.to_str().unwrap()])
}

#[tokio::test]
async fn an_exact_copy_verifies() {
    let (_dir, path, db) = loaded(3_000).await;
    let out = verify(&path);
    let text = assert_ok(&out);
    assert!(text.contains("equal"), "{text}");
    assert!(text.contains("3,000"), "{text}");
    drop_db(&db).await;
}

#[tokio::test]
async fn a_deleted_a_changed_and_an_extra_document_are_named() {
    let (_dir, path, db) = loaded(3_000).await;
    let orders = mongo()
        .await
        .database(&db)
        .collection::<bson::Document>("orders");
    orders.delete_one(doc! {"_id": 1_234i64}).await.unwrap();
    orders
        .update_one(
            doc! {"_id": 2_345i64},
            doc! {"$set": {"customer.name": "someone else"}},
        )
        .await
        .unwrap();
    orders
        .insert_one(doc! {"_id": 99_999i64, "note": "not from the source"})
        .await
        .unwrap();
    let out = verify(&path);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(5), "{text}{}", stderr(&out));
    assert!(text.contains("1 missing"), "{text}");
    assert!(text.contains("1 changed"), "{text}");
    assert!(text.contains("1 extra"), "{text}");
    // Each named with its key, the source's under its partition.
    let line = |needle: &str| text.lines().find(|l| l.contains(needle)).map(str::to_owned);
    let missing = line("_id: 1234").expect("the deleted document named");
    assert!(missing.contains("missing"), "{missing}");
    let changed = line("_id: 2345").expect("the changed document named");
    assert!(changed.contains("changed"), "{changed}");
    let extra = line("_id: 99999").expect("the extra document named");
    assert!(extra.contains("extra"), "{extra}");
    assert!(
        text.contains("order_id"),
        "partitions named by their key range: {text}"
    );

    // The same document put back as it was: equal again.
    let restored = mongo()
        .await
        .database(&db)
        .collection::<bson::Document>("orders");
    restored.delete_one(doc! {"_id": 99_999i64}).await.unwrap();
    restored.delete_one(doc! {"_id": 2_345i64}).await.unwrap();
    assert_ok(&shiftload(&[
        "run",
        "--no-progress",
        "--restart",
        path.to_str().unwrap(),
    ]));
    assert_ok(&verify(&path));
    drop_db(&db).await;
}

#[tokio::test]
async fn a_job_without_stable_ids_cannot_be_verified() {
    let db = unique("verify_oid");
    let (_dir, path) = simple_job("SELECT 1 AS a", &db, "c", "");
    let out = verify(&path);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("mapping.id"), "{}", stderr(&out));
}
