//! `shiftload reconcile` on the real servers: the documents whose rows are
//! gone from the source are deleted (and only those), `--dry-run` names
//! them, the safety limit refuses a large deletion until `--force`, and
//! `[reconcile] after_run` does it after each complete run.

use std::collections::BTreeMap;

use crate::common::*;
use bson::{Bson, Document};

/// The collection as `_id` (as text) → `name`.
async fn copy(db: &str) -> BTreeMap<String, String> {
    mongo_docs(db, "items")
        .await
        .iter()
        .map(|d: &Document| {
            let id = match d.get("_id").unwrap() {
                Bson::Int32(v) => v.to_string(),
                Bson::Document(k) => format!(
                    "{}/{}",
                    k.get_str("region").unwrap(),
                    k.get_i32("n").unwrap()
                ),
                other => panic!("_id is {other:?}"),
            };
            (id, d.get_str("name").unwrap().to_string())
        })
        .collect()
}

/// The table as `copy` shows the collection.
async fn table_rows(table: &str, key: &str) -> BTreeMap<String, String> {
    pg_text_rows(&format!("SELECT {key} AS k, name FROM {table}"))
        .await
        .into_iter()
        .map(|r| (r["k"].clone().unwrap(), r["name"].clone().unwrap()))
        .collect()
}

fn items_job(query: &str, db: &str, tail: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"{query}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"items\"\n{tail}"
    ))
}

fn line<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"))
        .trim()
}

#[tokio::test]
async fn reconcile_deletes_what_the_source_lost_names_it_in_a_dry_run_and_keeps_a_limit() {
    let table = unique("rec");
    let db = unique("rec");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, 'name ' || g AS name FROM generate_series(1, 400) g"
    ))
    .await;
    let (_d, path) = items_job(
        &format!("SELECT id, name FROM {table}"),
        &db,
        "[mapping]\nid = [\"id\"]\n[partition]\ncolumn = \"id\"\ncount = 3\n",
    );
    let path = path.to_str().unwrap();
    assert_ok(&run_job(std::path::Path::new(path)));
    pg_exec(&format!("DELETE FROM {table} WHERE id BETWEEN 5 AND 14")).await;

    let out = assert_ok(&shiftload(&["reconcile", "--dry-run", path]));
    assert_eq!(line(&out, "would delete"), "would delete  10", "{out}");
    assert!(
        out.contains("_id: 5\n") && out.contains("_id: 14\n"),
        "{out}"
    );
    assert!(!out.contains("_id: 15\n"), "{out}");
    assert_eq!(
        mongo_count(&db, "items").await,
        400,
        "a dry run deletes nothing"
    );

    let out = assert_ok(&shiftload(&["reconcile", path]));
    assert_eq!(line(&out, "deleted"), "deleted       10", "{out}");
    assert_eq!(line(&out, "source"), "source        390 keys", "{out}");
    assert_eq!(copy(&db).await, table_rows(&table, "id").await);
    let out = assert_ok(&shiftload(&["reconcile", path]));
    assert_eq!(line(&out, "deleted"), "deleted       0", "{out}");

    // 100 of 390 (26 %) is above the default limit of 5 %: refused.
    pg_exec(&format!("DELETE FROM {table} WHERE id > 300")).await;
    let out = shiftload(&["reconcile", path]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("reconcile.max_delete_share"), "{text}");
    assert!(text.contains("would delete 100 of 390"), "{text}");
    assert_eq!(mongo_count(&db, "items").await, 390, "nothing deleted");
    let out = assert_ok(&shiftload(&["reconcile", "--force", path]));
    assert_eq!(line(&out, "deleted"), "deleted       100", "{out}");
    assert_eq!(copy(&db).await, table_rows(&table, "id").await);
    // `status` lists the reconciles that deleted (or tried to), newest
    // first; the dry run and the refused one are not there.
    let status = assert_ok(&shiftload(&["status", path]));
    let history: Vec<&str> = status
        .lines()
        .filter(|l| l.contains("  reconcile: ") || l.contains("  run 1"))
        .collect();
    assert_eq!(history.len(), 4, "{status}");
    assert!(history[0].contains("reconcile: 100 deleted in"), "{status}");
    assert!(history[1].contains("reconcile: 0 deleted in"), "{status}");
    assert!(history[2].contains("reconcile: 10 deleted in"), "{status}");
    assert!(
        history[3].contains("run 1, full load: 400 rows read"),
        "{status}"
    );
    drop_db(&db).await;
}

#[tokio::test]
async fn a_composite_text_key_is_reconciled_whatever_its_sort_order() {
    let table = unique("rec_text");
    let db = unique("rec_text");
    // Mixed case and accents: PostgreSQL's collation and BSON's byte order
    // sort them differently.
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT r AS region, g AS n, r || ' ' || g AS name
             FROM unnest(ARRAY['b', 'B', 'a', 'Ä', 'é', 'z']) r, generate_series(1, 50) g"
    ))
    .await;
    let (_d, path) = items_job(
        &format!("SELECT region, n, name FROM {table}"),
        &db,
        "[mapping]\nid = [\"region\", \"n\"]\n[reconcile]\nmax_delete_share = 0.5\n",
    );
    assert_ok(&run_job(&path));
    pg_exec(&format!(
        "DELETE FROM {table} WHERE (region = 'B' AND n < 4) OR (region = 'é' AND n = 50)"
    ))
    .await;
    let out = assert_ok(&shiftload(&["reconcile", path.to_str().unwrap()]));
    assert_eq!(line(&out, "deleted"), "deleted       4", "{out}");
    assert_eq!(
        copy(&db).await,
        table_rows(&table, "region || '/' || n").await
    );
    drop_db(&db).await;
}

#[tokio::test]
async fn after_run_an_incremental_run_also_deletes_what_is_gone() {
    let table = unique("rec_inc");
    let db = unique("rec_inc");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, 'name ' || g AS name,
             TIMESTAMP '2026-01-01' + g * INTERVAL '1 minute' AS updated_at
             FROM generate_series(1, 200) g"
    ))
    .await;
    let (_d, path) = items_job(
        &format!("SELECT id, name, updated_at FROM {table}"),
        &db,
        "[mapping]\nid = [\"id\"]\n[incremental]\ncolumn = \"updated_at\"\n\
         [reconcile]\nafter_run = true\n",
    );
    let out = assert_ok(&run_job(&path));
    assert!(line(&out, "reconcile").contains("0 deleted"), "{out}");
    pg_exec(&format!(
        "DELETE FROM {table} WHERE id IN (3, 30, 199);
         UPDATE {table} SET name = 'changed', updated_at = TIMESTAMP '2026-02-01' WHERE id = 7;"
    ))
    .await;
    let out = assert_ok(&run_job(&path));
    assert_eq!(line(&out, "rows read"), "rows read     1", "{out}");
    assert!(
        line(&out, "reconcile").starts_with("reconcile     3 deleted"),
        "{out}"
    );
    assert_eq!(copy(&db).await, table_rows(&table, "id").await);
    drop_db(&db).await;
}
