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
use shiftload::sink::{MongoSink, Sink, Target};
use shiftload::JobConfig;

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
    let client = mongodb::Client::with_options(options).unwrap();
    let target = Target::with_client(client, &job.target).await.unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("s", DataType::Utf8, true),
    ]));
    let budget = Budget::new(ByteSize(64 << 20), 1);
    let sink = MongoSink::new(target, &job.target, &job.mapping, &schema, &budget).unwrap();
    let mut partition = sink.open("p", schema.clone()).await.unwrap();
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
