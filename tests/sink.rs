//! The MongoDB sink through the library, with the driver's command
//! monitoring: what is sent to the real server, not only what lands.

use std::sync::{Arc, Mutex};

use crate::common::*;
use arrow_array::{Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bson::{doc, Document};
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::ClientOptions;
use shiftload::memory::{Budget, ByteSize};
use shiftload::sink::{MongoSink, PartitionSink, Sink, Target};
use shiftload::JobConfig;

/// A partition of the MongoDB sink for `(id int, s text)` rows, through a
/// client made from `options`, and the budget its permits come from.
async fn open_partition(
    job: &JobConfig,
    options: ClientOptions,
) -> (Arc<Schema>, Budget, Box<dyn PartitionSink>) {
    let client = mongodb::Client::with_options(options).unwrap();
    let target = Target::with_client(client, &job.target).await.unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("s", DataType::Utf8, true),
    ]));
    let budget = Budget::new(ByteSize(64 << 20), 1);
    let sink = MongoSink::new(target, &job.target, &job.mapping, &schema, &budget).unwrap();
    let partition = sink.open("p", schema.clone()).await.unwrap();
    (schema, budget, partition)
}

/// Write three rows with `send` through a client whose URI asks for
/// `w=majority`; the `insert` commands the driver saw go out.
async fn insert_commands(send: &str) -> (String, Vec<Document>) {
    let db = unique("wc");
    let text = format!(
        "[source]\nurl = \"postgresql://u@h/d\"\nquery = \"SELECT 1\"\n\
         [target]\nuri = \"{}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nsend = \"{send}\"\n\
         [mapping]\nid = [\"id\"]\n",
        mongo_uri()
    );
    let job = JobConfig::parse(&text, std::path::Path::new("wc.toml")).unwrap();
    let base = mongo_uri();
    let uri = if base.contains('?') {
        format!("{base}&w=majority")
    } else {
        format!("{}/?w=majority", base.trim_end_matches('/'))
    };
    let mut options = ClientOptions::parse(&uri).await.unwrap();
    let seen: Arc<Mutex<Vec<Document>>> = Arc::default();
    let sink_seen = seen.clone();
    options.command_event_handler = Some(EventHandler::callback(move |e: CommandEvent| {
        if let CommandEvent::Started(s) = e {
            if s.command_name == "insert" {
                sink_seen.lock().unwrap().push(s.command.clone());
            }
        }
    }));
    let (schema, budget, mut partition) = open_partition(&job, options).await;
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
        ],
    )
    .unwrap();
    let permit = budget.acquire(batch.get_array_memory_size()).await;
    partition.write(batch, permit, Vec::new()).await.unwrap();
    partition.finish(true).await.unwrap();
    assert_eq!(partition.stats().inserted, 3);
    let commands = seen.lock().unwrap().clone();
    (db, commands)
}

#[tokio::test]
async fn the_uri_write_concern_goes_with_every_send_mode() {
    for send in ["insert_many", "command"] {
        let (db, commands) = insert_commands(send).await;
        assert!(!commands.is_empty(), "{send}: no insert command seen");
        for c in &commands {
            assert_eq!(
                c.get_document("writeConcern").ok(),
                Some(&doc! {"w": "majority"}),
                "{send}: {c}"
            );
        }
        let docs = mongo_docs(&db, "c").await;
        assert_eq!(
            docs,
            vec![
                doc! {"_id": 1, "id": 1, "s": "a"},
                doc! {"_id": 2, "id": 2, "s": "b"},
                doc! {"_id": 3, "id": 3, "s": "c"},
            ]
        );
        drop_db(&db).await;
    }
}

/// `target.writers` bounds the requests in flight against the server, in
/// both send modes, and every row of every request lands: 2,000 rows in
/// two batches, 20 documents a request, two writers. The driver's command
/// events count the inserts started and not yet answered.
#[tokio::test]
async fn requests_in_flight_never_exceed_writers() {
    for send in ["command", "insert_many"] {
        let db = unique("inflight");
        let text = format!(
            "[source]\nurl = \"postgresql://u@h/d\"\nquery = \"SELECT 1\"\n\
             [target]\nuri = \"{}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
             send = \"{send}\"\nwriters = 2\nwrite_batch_docs = 20\n\
             [mapping]\nid = [\"id\"]\n",
            mongo_uri()
        );
        let job = JobConfig::parse(&text, std::path::Path::new("inflight.toml")).unwrap();
        let mut options = ClientOptions::parse(mongo_uri()).await.unwrap();
        // (inserts in flight now, most at once, inserts started)
        let tally: Arc<Mutex<(usize, usize, usize)>> = Arc::default();
        let seen = tally.clone();
        options.command_event_handler = Some(EventHandler::callback(move |e: CommandEvent| {
            let mut t = seen.lock().unwrap();
            match e {
                CommandEvent::Started(s) if s.command_name == "insert" => {
                    t.0 += 1;
                    t.1 = t.1.max(t.0);
                    t.2 += 1;
                }
                CommandEvent::Succeeded(s) if s.command_name == "insert" => t.0 -= 1,
                CommandEvent::Failed(f) if f.command_name == "insert" => t.0 -= 1,
                _ => {}
            }
        }));
        let (schema, budget, mut partition) = open_partition(&job, options).await;
        for part in 0..2 {
            let ids: Vec<i32> = (part * 1000..(part + 1) * 1000).collect();
            let text: Vec<String> = ids.iter().map(|i| format!("row {i}")).collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int32Array::from(ids)),
                    Arc::new(StringArray::from(text)),
                ],
            )
            .unwrap();
            let permit = budget.acquire(batch.get_array_memory_size()).await;
            partition.write(batch, permit, Vec::new()).await.unwrap();
        }
        partition.finish(true).await.unwrap();
        assert_eq!(partition.stats().inserted, 2000, "{send}");
        let (now, most, started) = *tally.lock().unwrap();
        assert_eq!(
            (now, started),
            (0, 100),
            "{send}: inserts left open, inserts sent"
        );
        // Two at once: the bound is reached (the next request is filled in
        // microseconds, an insert takes milliseconds), and never passed.
        assert_eq!(most, 2, "{send}: most inserts in flight at once");
        let docs = mongo_docs(&db, "c").await;
        assert_eq!(docs.len(), 2000, "{send}");
        for (i, d) in docs.iter().enumerate() {
            let i = i as i32;
            assert_eq!(
                d,
                &doc! {"_id": i, "id": i, "s": format!("row {i}")},
                "{send}"
            );
        }
        drop_db(&db).await;
    }
}
