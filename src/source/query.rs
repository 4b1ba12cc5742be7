//! The job's query as a source: partitions are key ranges pushed into the
//! SQL, each read through the wire reader ([`super::PgSource`]).

use arrow_schema::SchemaRef;
use async_trait::async_trait;

use super::{BatchStream, PgSource, Preview, Source, SourceBatch};
use crate::config::{JobConfig, SourceConfig};
use crate::error::{Error, Result};
use crate::memory::Budget;
use crate::plan::Planned;
use crate::plan::{self, KeyType, PartitionConfig, Range};
use crate::retry::{with_retries, RetryConfig};

/// The query path of a job.
pub struct QuerySource {
    cfg: SourceConfig,
    retry: RetryConfig,
    partition: Option<PartitionConfig>,
    key: Option<(String, KeyType)>,
    schema: SchemaRef,
    budget: Budget,
    lenient: bool,
}

/// The Arrow schema of the job's query, asked of the server.
pub(crate) async fn describe(job: &JobConfig) -> Result<SchemaRef> {
    with_retries(&job.retry, "describe the query", || {
        PgSource::describe(&job.source, &job.source.query)
    })
    .await
}

/// The job's partition key and its type, from the result's schema.
pub fn key_type(job: &JobConfig, schema: &SchemaRef) -> Result<Option<(String, KeyType)>> {
    let Some(p) = &job.partition else {
        return Ok(None);
    };
    let field = schema.field_with_name(&p.column).map_err(|_| {
        Error::config(
            "partition.column",
            format!("column `{}` is not in the query result", p.column),
        )
    })?;
    let key = KeyType::of(field.data_type()).ok_or_else(|| {
        Error::config(
            "partition.column",
            format!(
                "column `{}` is {}; partition on an integer, DATE or TIMESTAMP column",
                p.column,
                field.data_type()
            ),
        )
    })?;
    Ok(Some((p.column.clone(), key)))
}

/// Key statistics and the ranges cut from them.
struct Ranges {
    min: Option<i64>,
    max: Option<i64>,
    rows: Option<u64>,
    ranges: Vec<Range>,
}

impl QuerySource {
    pub fn new(job: &JobConfig, schema: SchemaRef, budget: &Budget, lenient: bool) -> Result<Self> {
        Ok(QuerySource {
            key: key_type(job, &schema)?,
            cfg: job.source.clone(),
            retry: job.retry.clone(),
            partition: job.partition.clone(),
            schema,
            budget: budget.clone(),
            lenient,
        })
    }

    async fn ranges(&self) -> Result<Ranges> {
        let (Some(p), Some((column, key))) = (&self.partition, &self.key) else {
            return Ok(Ranges {
                min: None,
                max: None,
                rows: None,
                ranges: vec![Range::ALL],
            });
        };
        let query = &self.cfg.query;
        let row = PgSource::query_row(&self.cfg, &KeyType::stats_sql(query, column)).await?;
        let get = |i: usize| row.get(i).cloned().flatten();
        let min = get(0).and_then(|t| key.parse(&t));
        let max = get(1).and_then(|t| key.parse(&t));
        let rows = get(2).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        let sample = if p.split == plan::SplitMode::Quantiles && p.boundaries.is_empty() {
            let sql = KeyType::sample_sql(query, column, rows);
            let keys = PgSource::query_column(&self.cfg, &sql).await?;
            Some(
                keys.iter()
                    .filter_map(|t| key.parse(t))
                    .collect::<Vec<i64>>(),
            )
        } else {
            None
        };
        let ranges = plan::ranges(p, *key, min, max, rows, sample.as_deref())?;
        Ok(Ranges {
            min,
            max,
            rows: Some(rows),
            ranges,
        })
    }

    fn partition_sql(&self, r: &Range) -> String {
        match &self.key {
            Some((column, key)) => plan::partition_sql(&self.cfg.query, Some(column), *key, r),
            None => plan::partition_sql(&self.cfg.query, None, KeyType::Int, r),
        }
    }
}

#[async_trait]
impl Source for QuerySource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn plan(&self) -> Result<Vec<Planned>> {
        let r = with_retries(&self.retry, "plan the partitions", || self.ranges()).await?;
        let n = r.ranges.len() as u64;
        // The key statistics' count, shared out evenly: what the progress
        // shows an ETA from (the partitions' own sizes are not counted).
        Ok(r.ranges
            .into_iter()
            .enumerate()
            .map(|(i, range)| match r.rows {
                Some(rows) => {
                    let share = rows / n + u64::from((i as u64) < rows % n);
                    Planned::range(range).expecting(share)
                }
                None => Planned::range(range),
            })
            .collect())
    }

    async fn preview(&self) -> Result<Preview> {
        let r = self.ranges().await?;
        Ok(Preview {
            key: self.key.clone(),
            min: r.min,
            max: r.max,
            rows: r.rows,
            staged: false,
            partitions: r
                .ranges
                .iter()
                .map(|range| (Planned::range(*range), self.partition_sql(range)))
                .collect(),
        })
    }

    async fn open(&self, work: &Planned) -> Result<Box<dyn BatchStream>> {
        let sql = self.partition_sql(&work.range);
        let source = PgSource::open(&self.cfg, &sql, &self.budget, self.lenient).await?;
        Ok(Box::new(source))
    }

    async fn split(&self, work: &Planned) -> Result<Option<(Range, Range)>> {
        let Some((column, key)) = &self.key else {
            return Ok(None);
        };
        if work.range.null {
            return Ok(None);
        }
        // The partition's own smallest and largest key: the bounds a
        // planning worker knew are not known to a worker that resumed.
        let sql = KeyType::stats_sql(&self.partition_sql(&work.range), column);
        let row = PgSource::query_row(&self.cfg, &sql).await?;
        let get = |i: usize| row.get(i).cloned().flatten().and_then(|t| key.parse(&t));
        match (get(0), get(1)) {
            (Some(min), Some(max)) => Ok(work.range.split(min, max)),
            _ => Ok(None),
        }
    }

    async fn cleanup(&self, _done: &[Planned]) -> Result<()> {
        Ok(())
    }

    fn describe(&self, work: &Planned) -> String {
        work.range.describe(self.key.as_ref().map(|(_, k)| *k))
    }
}

#[async_trait]
impl BatchStream for PgSource {
    fn schema(&self) -> SchemaRef {
        PgSource::schema(self)
    }

    async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        PgSource::next_batch(self).await
    }

    fn rows_seen(&self) -> u64 {
        PgSource::rows_seen(self)
    }
}
