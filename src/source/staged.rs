//! Staged Parquet parts as a source: one partition per part. With
//! `mode = "unload"` the plan runs Redshift's `UNLOAD ... FORMAT PARQUET`
//! (filter and projection inside) under `<location>/<job>/<run id>/` and
//! lists what it wrote; with `mode = "existing"` the parts under the
//! location are read, projected and filtered here.

use arrow_schema::SchemaRef;
use async_trait::async_trait;

use super::parquet::unload_sql;
use super::{BatchStream, ParquetSource, PgSource, Preview, Source, SourceBatch, Staging};
use crate::config::{JobConfig, SourceConfig, StagingConfig, StagingMode};
use crate::error::{Error, Result};
use crate::filter::Expr;
use crate::memory::Budget;
use crate::plan::Planned;
use crate::plan::Range;
use crate::retry::{with_retries, RetryConfig};

/// The staged path of a job.
pub struct StagedSource {
    staging: Staging,
    cfg: StagingConfig,
    source: SourceConfig,
    retry: RetryConfig,
    job: String,
    schema: SchemaRef,
    /// Columns read from a part, and the filter evaluated on its batches
    /// (parts that were not unloaded with the filter pushed in).
    read_columns: Vec<String>,
    read_filter: Option<Expr>,
    budget: Budget,
}

/// The staging location of a job whose parts exist already.
pub(crate) fn existing(job: &JobConfig) -> Result<Option<Staging>> {
    match &job.source.staging {
        Some(cfg) if cfg.mode == StagingMode::Existing => Ok(Some(Staging::new(cfg)?)),
        _ => Ok(None),
    }
}

/// The schema of the first part under the location.
pub(crate) async fn first_part_schema(job: &JobConfig, staging: &Staging) -> Result<SchemaRef> {
    let parts = staging.parts("").await?;
    let Some(first) = parts.first() else {
        let location = job
            .source
            .staging
            .as_ref()
            .map_or("", |s| s.location.as_str());
        return Err(Error::config(
            "source.staging.location",
            format!("no Parquet parts under {location}"),
        ));
    };
    staging.schema(first).await
}

impl StagedSource {
    pub fn new(job: &JobConfig, schema: SchemaRef, budget: &Budget) -> Result<Self> {
        let cfg =
            job.source.staging.clone().ok_or_else(|| {
                Error::Internal("a staged source without [source.staging]".into())
            })?;
        let read_filter = match (&job.source.filter, cfg.mode) {
            (Some(f), StagingMode::Existing) => Some(Expr::parse(f)?),
            _ => None,
        };
        Ok(StagedSource {
            staging: Staging::new(&cfg)?,
            read_columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            cfg,
            source: job.source.clone(),
            retry: job.retry.clone(),
            job: job.name.clone().unwrap_or_else(|| "job".into()),
            schema,
            read_filter,
            budget: budget.clone(),
        })
    }

    /// The UNLOAD of the job's query (pushed down) for run `run`.
    fn unload_statement(&self, run: &str) -> String {
        unload_sql(
            &self.source.query,
            &self.staging.url(&format!("{}/{run}", self.job)),
            self.cfg.iam_role.as_deref().unwrap_or_default(),
            self.cfg.max_file_size.0,
        )
    }

    /// Run the UNLOAD; the sub-location it wrote under.
    async fn unload(&self) -> Result<String> {
        let run = format!("{}", bson::DateTime::now().timestamp_millis());
        let sql = self.unload_statement(&run);
        let sub = format!("{}/{run}", self.job);
        tracing::info!(to = %self.staging.url(&sub), "unloading");
        with_retries(&self.retry, "unload the query", || {
            PgSource::query_row(&self.source, &sql)
        })
        .await?;
        Ok(sub)
    }
}

#[async_trait]
impl Source for StagedSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn plan(&self) -> Result<Vec<Planned>> {
        let sub = match self.cfg.mode {
            StagingMode::Unload => self.unload().await?,
            StagingMode::Existing => String::new(),
        };
        let parts = with_retries(&self.retry, "list the staged parts", || {
            self.staging.parts(&sub)
        })
        .await?;
        Ok(parts
            .into_iter()
            .enumerate()
            .map(|(i, key)| Planned::part(i, key))
            .collect())
    }

    async fn preview(&self) -> Result<Preview> {
        let partitions = match self.cfg.mode {
            StagingMode::Existing => self
                .staging
                .parts("")
                .await?
                .into_iter()
                .enumerate()
                .map(|(i, key)| {
                    let note = format!("Parquet part {}", self.staging.object_url(&key));
                    (Planned::part(i, key), note)
                })
                .collect(),
            StagingMode::Unload => {
                let note = format!(
                    "{}\n  then each Parquet part under {} is one partition",
                    self.unload_statement("<run id>"),
                    self.staging.url(&format!("{}/<run id>", self.job))
                );
                vec![(Planned::range(Range::ALL), note)]
            }
        };
        Ok(Preview {
            key: None,
            min: None,
            max: None,
            rows: None,
            staged: true,
            partitions,
        })
    }

    async fn open(&self, work: &Planned) -> Result<Box<dyn BatchStream>> {
        let part = work.part.as_deref().ok_or_else(|| {
            Error::Internal(format!(
                "partition {} names no staged part",
                work.range.describe(None)
            ))
        })?;
        let source = ParquetSource::open(
            &self.staging,
            part,
            &self.read_columns,
            self.read_filter.as_ref(),
            &self.budget,
            self.source.fetch_rows as usize,
        )
        .await?;
        Ok(Box::new(source))
    }

    async fn split(&self, _work: &Planned) -> Result<Option<(Range, Range)>> {
        Ok(None)
    }

    async fn cleanup(&self, done: &[Planned]) -> Result<()> {
        if self.cfg.mode != StagingMode::Unload || self.cfg.keep {
            return Ok(());
        }
        let mut parts: Vec<String> = done.iter().filter_map(|p| p.part.clone()).collect();
        // The run's manifest lies beside its parts.
        if let Some(dir) = parts
            .first()
            .and_then(|p| p.rsplit_once('/'))
            .map(|(d, _)| d)
        {
            parts.push(format!("{dir}/manifest"));
        }
        self.staging.delete(&parts).await
    }

    fn describe(&self, work: &Planned) -> String {
        format!("part {}", work.range.lo + 1)
    }
}

#[async_trait]
impl BatchStream for ParquetSource {
    fn schema(&self) -> SchemaRef {
        ParquetSource::schema(self)
    }

    async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        ParquetSource::next_batch(self).await
    }

    fn rows_seen(&self) -> u64 {
        ParquetSource::rows_seen(self)
    }
}
