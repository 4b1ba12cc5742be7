//! A partition cancelled for time is cut in half from its own keys, on any
//! worker: here a source that never planned (as on a worker that resumed
//! the run) cuts open-ended ranges of integer and DATE keys.

use std::sync::Arc;

use crate::common::*;
use arrow_schema::{DataType, Field, Schema};
use shiftload::memory::{Budget, ByteSize};
use shiftload::plan::{Planned, Range};
use shiftload::source::query::QuerySource;
use shiftload::source::Source;
use shiftload::JobConfig;

async fn rows_in(source: &QuerySource, range: Range) -> usize {
    let mut stream = source.open(&Planned::range(range)).await.unwrap();
    let mut rows = 0;
    while let Some(b) = stream.next_batch().await {
        rows += b.unwrap().batch.num_rows();
    }
    rows
}

async fn source_of(table: &str, column: &str, data_type: DataType) -> QuerySource {
    let text = format!(
        "[source]\nurl = \"{}\"\nquery = \"SELECT {column} FROM {table}\"\n\
         [target]\nuri = \"mongodb://h/\"\ndatabase = \"d\"\ncollection = \"c\"\n\
         [mapping]\nid = [\"{column}\"]\n[partition]\ncolumn = \"{column}\"\ncount = 4\n",
        pg_url()
    );
    let job = JobConfig::parse(&text, std::path::Path::new("split.toml")).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(column, data_type, true)]));
    QuerySource::new(&job, schema, &Budget::new(ByteSize(64 << 20), 1), false).unwrap()
}

#[tokio::test]
async fn a_source_that_did_not_plan_splits_from_the_partitions_own_keys() {
    let table = unique("split");
    pg_exec(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, DATE '2020-01-01' + g AS d
         FROM generate_series(1001, 2000) g"
    ))
    .await;
    for (column, data_type) in [("id", DataType::Int32), ("d", DataType::Date32)] {
        let source = source_of(&table, column, data_type).await;
        // The first partition of a plan: everything below a boundary.
        let whole = Range {
            lo: i64::MIN,
            hi: i64::MAX,
            null: false,
        };
        let (a, b) = source
            .split(&Planned::range(whole))
            .await
            .unwrap()
            .expect("a range of 1,000 keys can be cut");
        assert_eq!(
            (a.lo, b.hi),
            (i64::MIN, i64::MAX),
            "{column}: outer ends kept"
        );
        assert_eq!(a.hi, b.lo, "{column}");
        let (na, nb) = (rows_in(&source, a).await, rows_in(&source, b).await);
        assert_eq!(na + nb, 1000, "{column}");
        assert!(
            (400..=600).contains(&na),
            "{column}: halves of {na} and {nb} rows"
        );
    }
}
