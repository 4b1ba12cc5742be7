//! What operators and their scripts read: `run --summary-json` and
//! `status --json`, checked against the collection and the committed
//! schemas, for a finished, a failed and an interrupted job.

use std::time::Duration;

use crate::common::*;
use bson::doc;
use serde_json::Value;

fn schema(name: &str) -> Value {
    let path = format!("{}/schemas/{name}.schema.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every key of `value` is a property of `schema` (following `$ref`s and
/// nullable `anyOf`s into `$defs`), recursively; every required one is there.
fn conforms(value: &Value, schema: &Value, root: &Value, at: &str) {
    let schema = resolve(schema, root);
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if value.is_null() {
            return;
        }
        let inner = any.iter().find(|s| s.get("type") != Some(&"null".into()));
        return conforms(value, inner.unwrap(), root, at);
    }
    match value {
        Value::Object(map) => {
            let props = schema["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{at}: an object where the schema has none: {schema}"));
            for (k, v) in map {
                let s = props
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k}: not in the schema"));
                conforms(v, s, root, &format!("{at}.{k}"));
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                assert!(map.contains_key(r.as_str().unwrap()), "{at}: {r} missing");
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                conforms(v, &schema["items"], root, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &root["$defs"][r.trim_start_matches("#/$defs/")],
        None => schema,
    }
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    let root = schema("summary");
    conforms(&value, &root, &root, "summary");
    value
}

fn status_json(job: &std::path::Path) -> Value {
    let out = assert_ok(&shiftload(&["status", "--json", job.to_str().unwrap()]));
    let value: Value = serde_json::from_str(&out).unwrap();
    let root = schema("status");
    conforms(&value, &root, &root, "status");
    value
}

#[tokio::test]
async fn the_summary_json_counts_what_the_collection_holds() {
    let table = seed_reference(3000).await;
    let db = unique("ops_sum");
    let (dir, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"orders\"\n\
         [mapping]\nid = [\"order_id\"]\ndecimal = \"string\"\n\
         [partition]\ncolumn = \"order_id\"\ncount = 3\n"
    ));
    let file = dir.path().join("summary.json");
    let args = |p: &std::path::Path| {
        vec![
            "run".to_string(),
            "--summary-json".into(),
            p.display().to_string(),
            path.display().to_string(),
        ]
    };
    let a = args(&file);
    let out = shiftload(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ok(&out);
    let s = read_json(&file);
    assert_eq!(s["outcome"], "complete");
    assert_eq!(s["exit_code"], 0);
    let run = &s["run"];
    let held = mongo_count(&db, "orders").await;
    assert_eq!(held, 3000);
    assert_eq!(run["rows_read"], held);
    assert_eq!(run["documents"]["inserted"], held);
    assert_eq!(run["documents"]["already_present"], 0);
    // Three key ranges and the partition of NULL keys.
    assert_eq!(run["partitions"]["total"], 4);
    assert_eq!(run["partitions"]["done"], 4);
    assert_eq!(run["namespace"], format!("{db}.orders"));
    assert!(run["bytes"].as_u64().unwrap() > 3000 * 100);
    assert_reference_copy(&table, &mongo_uri(), &db).await;

    // The same job again: a new generation, every document already there.
    let out = shiftload(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ok(&out);
    let s = read_json(&file);
    assert_eq!(s["run"]["generation"], 2);
    assert_eq!(s["run"]["documents"]["inserted"], 0);
    assert_eq!(s["run"]["documents"]["already_present"], held);

    // A run that stops on an error writes JSON too, without the password.
    let (dir2, bad) = job(&format!(
        "[source]\nurl = \"postgresql://nobody:s3cret-pw@127.0.0.1:1/x?connect_timeout=2\"\n\
         query = \"SELECT 1 AS id\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"orders\"\n\
         [mapping]\nid = [\"id\"]\n"
    ));
    let file = dir2.path().join("failed.json");
    let out = shiftload(&[
        "run",
        "--summary-json",
        file.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("s3cret-pw"), "{text}");
    let s = read_json(&file);
    assert_eq!(s["outcome"], "error");
    assert_eq!(s["exit_code"], 1);
    assert!(s["run"].is_null());
    assert!(s["error"].as_str().unwrap().contains("127.0.0.1:1"), "{s}");
    drop_db(&db).await;
}

#[tokio::test]
async fn status_json_of_a_finished_a_failed_and_an_interrupted_job() {
    // Failed: one partition holds a NaN the target cannot store.
    let table = unique("ops_nan");
    let db = unique("ops_st");
    pg_exec(&format!(
        "CREATE TABLE {table} (id int, amount numeric(10,2));
         INSERT INTO {table} SELECT i, i FROM generate_series(1, 100) i;
         UPDATE {table} SET amount = 'NaN' WHERE id = 80;"
    ))
    .await;
    let (_d, failing) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"nan\"\n\
         [mapping]\nid = [\"id\"]\ndecimal = \"string\"\n\
         [partition]\ncolumn = \"id\"\ncount = 2\n"
    ));
    assert_eq!(run_job(&failing).status.code(), Some(3));
    let s = status_json(&failing);
    assert_eq!(s["state"], "running");
    assert_eq!(s["condition"], "failed");
    // Two key ranges and the partition of NULL keys (empty).
    assert_eq!(s["totals"]["partitions"], 3);
    assert_eq!(s["totals"]["done"], 2);
    assert_eq!(s["totals"]["failed"], 1);
    assert_eq!(s["totals"]["rows"], 50);
    let failed: Vec<&Value> = s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("column `amount`"),
        "{s}"
    );
    assert_eq!(s["history"].as_array().unwrap().len(), 0, "not complete");

    // Finished: the fixed row, run again; the history has the run.
    pg_exec(&format!("UPDATE {table} SET amount = 80 WHERE id = 80")).await;
    assert_ok(&run_job(&failing));
    let s = status_json(&failing);
    assert_eq!(
        (&s["state"], &s["condition"]),
        (&"complete".into(), &"complete".into())
    );
    assert_eq!(s["totals"]["done"], 3);
    assert_eq!(s["totals"]["rows"], 100);
    assert_eq!(mongo_count(&db, "nan").await, 100);
    let history = s["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{s}");
    assert_eq!(history[0]["what"], "run");
    assert_eq!(history[0]["generation"], 1);
    // The totals of the generation's partitions, whichever run did them:
    // 50 rows the first time, 50 the second.
    assert_eq!(history[0]["rows_read"], 100, "{s}");

    // Interrupted: SIGTERM once a partition of five is done.
    let big = seed_reference(40_000).await;
    let db2 = unique("ops_int");
    let (_d2, slow) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {big}\"\nfetch_rows = 1000\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db2}\"\ncollection = \"orders\"\nwriters = 1\n\
         [mapping]\nid = [\"order_id\"]\ndecimal = \"string\"\n\
         [partition]\ncolumn = \"order_id\"\ncount = 4\n"
    ));
    let child = spawn_run(&slow);
    let checkpoints = mongo()
        .await
        .database(&db2)
        .collection::<bson::Document>("shiftload_checkpoints");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while checkpoints
        .count_documents(doc! {"kind": "partition", "state": "done"})
        .await
        .unwrap()
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "no partition done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let s = status_json(&slow);
    assert_eq!(s["state"], "running");
    assert_eq!(s["condition"], "unfinished", "{s}");
    let t = &s["totals"];
    assert!(t["done"].as_u64().unwrap() >= 1, "{s}");
    assert!(t["pending"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(t["running"], 0, "given back: {s}");
    assert_eq!(
        t["done"].as_u64().unwrap() + t["pending"].as_u64().unwrap(),
        5
    );
    drop_db(&db).await;
    drop_db(&db2).await;
}
