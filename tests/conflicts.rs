//! Duplicate keys told apart: a document already there and equal is "already
//! present" (a resumed run); a different document under the same `_id`, or
//! a row refused by another unique index, is never taken for one.

use crate::common::*;
use bson::{doc, Bson, Document};

/// A table `(id int, s text)` with `rows`, and a database name.
async fn table_of(prefix: &str, rows: &str) -> (String, String) {
    let table = unique(prefix);
    pg_exec(&format!(
        "CREATE TABLE {table} (id int, s text); INSERT INTO {table} VALUES {rows};"
    ))
    .await;
    (table, unique(prefix))
}

fn conflict_job(table: &str, db: &str, extra_target: &str, tail: &str) -> String {
    format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT id, s FROM {table}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n{extra_target}\
         [mapping]\nid = [\"id\"]\n[retry]\nmax_attempts = 2\ninitial_delay_ms = 10\n{tail}"
    )
}

async fn s_of(db: &str, id: i32) -> Option<String> {
    mongo()
        .await
        .database(db)
        .collection::<Document>("c")
        .find_one(doc! {"_id": id})
        .await
        .unwrap()
        .and_then(|d| d.get_str("s").ok().map(str::to_string))
}

#[tokio::test]
async fn a_non_unique_mapping_id_fails_and_names_the_key() {
    let (table, db) = table_of("dupid", "(1, 'first'), (1, 'second'), (2, 'two')").await;
    let (_d, path) = job(&conflict_job(&table, &db, "", ""));
    let out = run_job(&path);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(!text.contains("transfer complete"), "{text}");
    assert!(text.contains("_id: 1"), "{text}");
    assert!(text.contains("different document"), "{text}");
    // What was written stays: rows 1 (one of the two) and 2.
    assert_eq!(mongo_count(&db, "c").await, 2);
    assert_eq!(s_of(&db, 2).await.as_deref(), Some("two"));
    drop_db(&db).await;
}

#[tokio::test]
async fn a_different_existing_document_is_a_conflict_set_aside_kept_or_replaced() {
    let (table, db) = table_of("differ", "(1, 'one'), (2, 'two'), (3, 'three')").await;
    let coll = mongo().await.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 2, "s": "old"}).await.unwrap();

    // Default: the partition fails, naming the key; nothing is overwritten.
    let (_d, path) = job(&conflict_job(&table, &db, "", ""));
    let out = run_job(&path);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("_id: 2"), "{text}");
    assert_eq!(s_of(&db, 2).await.as_deref(), Some("old"));
    assert_eq!(s_of(&db, 3).await.as_deref(), Some("three"));

    // With a dead-letter file: set aside, exit 4, the rest complete.
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("rejected.jsonl");
    let tail = format!("[dead_letter]\npath = \"{}\"\n", dl.display());
    let (_d, path) = job(&conflict_job(&table, &db, "", &tail));
    let out = shiftload(&["run", "--no-progress", "--restart", path.to_str().unwrap()]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(4), "{text}");
    let rejected = std::fs::read_to_string(&dl).unwrap();
    assert_eq!(rejected.lines().count(), 1, "{rejected}");
    assert!(rejected.contains("_id: 2"), "{rejected}");
    assert!(rejected.contains("different document"), "{rejected}");
    assert_eq!(s_of(&db, 2).await.as_deref(), Some("old"));

    // skip: the document there is kept, and the summary says so.
    let (_d, path) = job(&conflict_job(&table, &db, "on_conflict = \"skip\"\n", ""));
    let out = shiftload(&["run", "--no-progress", "--restart", path.to_str().unwrap()]);
    let text = assert_ok(&out);
    assert!(text.contains("1 kept (different)"), "{text}");
    assert!(text.contains("2 already present"), "{text}");
    assert_eq!(s_of(&db, 2).await.as_deref(), Some("old"));

    // replace: every document upserted by `_id`; the old one is replaced.
    let (_d, path) = job(&conflict_job(
        &table,
        &db,
        "on_conflict = \"replace\"\n",
        "",
    ));
    let out = shiftload(&["run", "--no-progress", "--restart", path.to_str().unwrap()]);
    let text = assert_ok(&out);
    assert!(text.contains("1 replaced"), "{text}");
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(docs.len(), 3);
    for d in &docs {
        let id = d.get_i32("_id").unwrap();
        let want = ["one", "two", "three"][id as usize - 1];
        assert_eq!(d, &doc! {"_id": id, "id": id, "s": want});
    }
    drop_db(&db).await;
}

#[tokio::test]
async fn a_row_refused_by_another_unique_index_is_not_already_present() {
    let (table, db) = table_of("uniq", "(1, 'a'), (2, 'b'), (3, 'a')").await;
    mongo()
        .await
        .database(&db)
        .run_command(doc! {"createIndexes": "c", "indexes": [
        {"key": {"s": 1}, "name": "s_1", "unique": true}]})
        .await
        .unwrap();
    let (_d, path) = job(&conflict_job(&table, &db, "", ""));
    let out = run_job(&path);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(!text.contains("1 already present"), "{text}");
    assert!(text.contains("another unique index"), "{text}");
    let ids: Vec<Bson> = mongo_docs(&db, "c")
        .await
        .iter()
        .map(|d| d.get("_id").unwrap().clone())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    drop_db(&db).await;
}

/// A resumed run meets its own documents: equal, so already present.
#[tokio::test]
async fn the_same_documents_again_are_already_present() {
    let (table, db) = table_of("again", "(1, 'one'), (2, 'two')").await;
    let (_d, path) = job(&conflict_job(&table, &db, "", ""));
    assert_ok(&run_job(&path));
    let out = shiftload(&["run", "--no-progress", "--restart", path.to_str().unwrap()]);
    let text = assert_ok(&out);
    assert!(text.contains("0 inserted, 2 already present"), "{text}");
    drop_db(&db).await;
}

/// On a small budget the duplicates of a partition are judged in several
/// rounds: every one of them still counted, and a different one found in
/// whichever round it falls.
#[tokio::test]
async fn duplicates_judged_in_rounds_on_a_small_budget() {
    let table = unique("rounds");
    let db = unique("rounds");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, 'row ' || g AS s FROM generate_series(1, 5000) g"
    ))
    .await;
    // 8 MiB with 4 writers: a request's share is 256 KiB, 2,048 pending.
    let text = format!(
        "memory_limit = \"8MiB\"\n{}",
        conflict_job(&table, &db, "", "")
    );
    let (_d, path) = job(&text);
    assert_ok(&run_job(&path));
    let again = || shiftload(&["run", "--no-progress", "--restart", path.to_str().unwrap()]);
    let out = assert_ok(&again());
    assert!(out.contains("0 inserted, 5,000 already present"), "{out}");
    pg_exec(&format!("UPDATE {table} SET s = 'changed' WHERE id = 4321")).await;
    let out = again();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("_id: 4321"), "{text}");
    assert!(text.contains("different document"), "{text}");
    assert_eq!(s_of(&db, 4321).await.as_deref(), Some("row 4321"));
    drop_db(&db).await;
}

/// Upserts in requests of many statements: a server that holds one
/// connection per statement of a command until the command ends (FerretDB
/// v1 on SQLite, a pool of 100 per database) would wait for itself
/// forever. Every row still lands, replaced field by field.
#[tokio::test]
async fn many_upserts_in_flight_all_land() {
    let table = unique("upserts");
    let db = unique("upserts");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, 'row ' || g AS s FROM generate_series(1, 600) g"
    ))
    .await;
    let (_d, path) = job(&conflict_job(
        &table,
        &db,
        "on_conflict = \"replace\"\nwriters = 4\n",
        "",
    ));
    let limit = std::time::Duration::from_secs(120);
    let run = |args: &[&str]| shiftload_within(args, limit);
    let path = path.to_str().unwrap();
    let out = assert_ok(&run(&["run", "--no-progress", path]));
    assert!(out.contains("600 inserted"), "{out}");
    pg_exec(&format!(
        "UPDATE {table} SET s = 'new ' || id WHERE id % 2 = 0"
    ))
    .await;
    let out = assert_ok(&run(&["run", "--no-progress", "--restart", path]));
    assert!(out.contains("300 already present, 300 replaced"), "{out}");
    let docs = mongo_docs(&db, "c").await;
    assert_eq!(docs.len(), 600);
    for d in &docs {
        let id = d.get_i32("_id").unwrap();
        let s = match id % 2 {
            0 => format!("new {id}"),
            _ => format!("row {id}"),
        };
        assert_eq!(d, &doc! {"_id": id, "id": id, "s": s});
    }
    drop_db(&db).await;
}
