//! `run --metrics-addr`: `/metrics` parses as Prometheus text (with an
//! independent parser) and counts what the run's summary says; `/health`
//! answers; the progress lines of a run off a terminal.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use prometheus_parse::{Sample, Scrape, Value};

/// `GET path` over HTTP/1.0: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap();
    Ok((code, body.to_string()))
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    let found = samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)));
    match found
        .unwrap_or_else(|| panic!("{name} {label:?} is not in /metrics"))
        .value
    {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_what_the_summary_says() {
    let table = seed_reference(30_000).await;
    let db = unique("metrics");
    let (dir, path) = job(&format!(
        "name = \"nightly\"\n[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\n\
         fetch_rows = 2000\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"orders\"\n\
         [mapping]\nid = [\"order_id\"]\ndecimal = \"string\"\n\
         [partition]\ncolumn = \"order_id\"\ncount = 6\n"
    ));
    let summary = dir.path().join("summary.json");
    let addr = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(["run", "--no-progress", "--metrics-addr", &addr.to_string()])
        .args(["--metrics-linger", "5m", "--summary-json"])
        .args([&summary, &path])
        .env_remove("SHIFTLOAD_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the run goes on, and after it.
    let started = Instant::now();
    let mut scraped_during = false;
    while !summary.exists() {
        assert!(started.elapsed() < Duration::from_secs(300), "the run ends");
        if let Ok((200, body)) = get(addr, "/metrics") {
            Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
            scraped_during = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(scraped_during, "/metrics answered while the run went on");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["outcome"], "complete");

    let (code, body) = get(addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let m = &scrape.samples;
    let run = &s["run"];
    let rows = run["rows_read"].as_u64().unwrap();
    assert_eq!(rows, 30_000);
    assert_eq!(value(m, "shiftload_rows_read_total", None), rows as f64);
    let inserted = Some(("result", "inserted"));
    assert_eq!(value(m, "shiftload_documents_total", inserted), 30_000.0);
    let present = Some(("result", "already_present"));
    assert_eq!(value(m, "shiftload_documents_total", present), 0.0);
    let bytes = run["bytes"].as_u64().unwrap() as f64;
    assert_eq!(value(m, "shiftload_bson_bytes_total", None), bytes);
    let batches = run["batches"].as_u64().unwrap() as f64;
    assert_eq!(value(m, "shiftload_batches_total", None), batches);
    // Six key ranges and the partition of NULL keys, all done.
    let done = Some(("state", "done"));
    assert_eq!(value(m, "shiftload_partitions", done), 7.0);
    let pending = Some(("state", "pending"));
    assert_eq!(value(m, "shiftload_partitions", pending), 0.0);
    assert_eq!(value(m, "shiftload_rows_done", None), 30_000.0);
    // The plan counted the rows: the ETA's basis.
    assert_eq!(value(m, "shiftload_rows_expected", None), 30_000.0);
    let rss = value(m, "shiftload_peak_rss_bytes", None);
    assert!(rss > 1e6 && rss < 4e9, "{rss}");
    assert!(value(m, "shiftload_memory_budget_bytes", None) > 0.0);
    // Every sample carries the job's name; each stage's time is there.
    assert!(m
        .iter()
        .all(|s| s.labels.get("shiftload_job") == Some("nightly")));
    for stage in ["read", "write", "finish"] {
        let count = m.iter().find(|s| {
            s.metric == "shiftload_stage_seconds_count" && s.labels.get("stage") == Some(stage)
        });
        assert!(count.is_some(), "stage {stage}: {body}");
    }
    let (code, body) = get(addr, "/health").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(get(addr, "/nothing").unwrap().0, 404);

    // SIGTERM ends the lingering at once; the exit code is the run's.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(term.unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(get(addr, "/health").is_err(), "no longer served");
    assert_reference_copy(&table, &mongo_uri(), &db).await;
    drop_db(&db).await;
}

#[tokio::test]
async fn a_run_off_a_terminal_logs_its_progress() {
    let table = seed_reference(20_000).await;
    let db = unique("progress");
    let (_dir, path) = job(&format!(
        "[source]\nurl = \"{{PG}}\"\nquery = \"SELECT * FROM {table}\"\nfetch_rows = 500\n\
         [target]\nuri = \"{{MONGO}}\"\ndatabase = \"{db}\"\ncollection = \"orders\"\n\
         [mapping]\nid = [\"order_id\"]\ndecimal = \"string\"\n\
         [partition]\ncolumn = \"order_id\"\ncount = 8\n"
    ));
    let out = shiftload(&[
        "run",
        "--log-format=json",
        "--progress-every=1s",
        path.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["target"] == "shiftload::progress")
        .collect();
    // One line a second at most; the run lasts more than a second here.
    assert!(!lines.is_empty(), "{}", stderr(&out));
    let mut last_rows = 0;
    for l in &lines {
        let f = &l["fields"];
        assert_eq!(f["partitions"], 9, "{l}");
        let rows = f["rows"].as_u64().unwrap();
        assert!(rows >= last_rows && rows <= 20_000, "{l}");
        last_rows = rows;
        let message = f["message"].as_str().unwrap();
        assert!(message.contains("of ~20,000"), "{message}");
    }
    // --quiet: nothing at all on success.
    let out = shiftload(&[
        "run",
        "--quiet",
        "--progress-every=1s",
        path.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "");
    drop_db(&db).await;
}
