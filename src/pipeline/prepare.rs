//! Everything a run, a plan or a benchmark needs before data moves,
//! computed once: the budget, the source described and narrowed to what
//! the sink writes, the sink checked against the result.

use std::sync::Arc;

use arrow_schema::SchemaRef;

use crate::config::{fingerprint, JobConfig};
use crate::deadletter::DeadLetter;
use crate::error::{Error, Result};
use crate::filter::Expr;
use crate::memory::Budget;
use crate::sink::mongo::check_mapping;
use crate::sink::{MongoSink, Sink, Target};
use crate::source::{self, Source};

/// A job ready to run.
pub struct Prepared {
    /// The job's name in the checkpoint.
    pub name: String,
    /// The job's fingerprint (an edited job is noticed on resume).
    pub fingerprint: String,
    pub budget: Budget,
    pub source: Arc<dyn Source>,
    /// `None` for a plan or a benchmark, which write nothing.
    pub sink: Option<Arc<dyn Sink>>,
    /// The job as the source runs it: query with projection and filter
    /// pushed in, mapping narrowed to the columns fetched.
    pub job: JobConfig,
    /// Whether documents get a stable `_id` from key columns (rather than
    /// fresh ObjectIds), which makes resuming a partial run safe.
    pub stable_ids: bool,
    pub dead_letter: Option<Arc<DeadLetter>>,
    /// The MongoDB target, when the job writes to it (for the checkpoint).
    pub target: Option<Target>,
}

/// The job's memory budget, or the default share of this machine's memory.
pub fn budget_for(job: &JobConfig) -> Budget {
    Budget::new(
        job.memory_limit
            .unwrap_or_else(crate::memory::default_budget),
        job.target.writers * job.partition.as_ref().map_or(1, |p| p.parallel),
    )
}

pub(crate) fn job_name(job: &JobConfig) -> String {
    job.name.clone().unwrap_or_else(|| "job".into())
}

/// Prepare `job`. With `write`, connect the target first (a bad MongoDB
/// URI should not cost a Redshift query) and build the sink; without, only
/// check the mapping against the result.
pub async fn prepare(job: &JobConfig, write: bool) -> Result<Prepared> {
    let budget = budget_for(job);
    let target = match write {
        true => Some(Target::connect(&job.target).await?),
        false => None,
    };
    let full = source::describe(job).await?;
    check_mapping(&full, &job.mapping, target.as_ref().map(|t| &t.limits))?;
    if let Some(inc) = &job.incremental {
        super::incremental::column_kind(inc, &full)?;
    }
    let (pushed, schema) = pushed_down(job, &full)?;
    let name = job_name(job);
    let dead_letter = match (&job.dead_letter, write) {
        (Some(cfg), true) => Some(Arc::new(DeadLetter::open(cfg, &name)?)),
        _ => None,
    };
    let source = source::from_job(&pushed, schema.clone(), &budget, dead_letter.is_some())?;
    let sink: Option<Arc<dyn Sink>> = match &target {
        Some(t) => Some(Arc::new(
            MongoSink::new(t.clone(), &job.target, &pushed.mapping, &schema, &budget)?
                .with_dead_letter(dead_letter.clone()),
        )),
        None => None,
    };
    Ok(Prepared {
        fingerprint: fingerprint(job),
        stable_ids: !job.mapping.id.is_empty(),
        name,
        budget,
        source,
        sink,
        job: pushed,
        dead_letter,
        target,
    })
}

/// The job as its source runs it. For a query (and the UNLOAD of one):
/// the filter and the projection (the columns the mapping writes, the
/// partition key and the watermark column) pushed into the SQL text, so that Redshift reads and
/// sends only those. Staged parts that exist already keep the job's query
/// empty; their reader projects and filters on its own. The mapping is
/// narrowed to the columns fetched, and the returned schema is theirs.
fn pushed_down(job: &JobConfig, schema: &SchemaRef) -> Result<(JobConfig, SchemaRef)> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let used = job.mapping.columns_used(&names);
    let key = job.partition.as_ref().map(|p| p.column.as_str());
    let watermark = job.incremental.as_ref().map(|i| i.column.as_str());
    let fetched: Vec<String> = names
        .iter()
        .filter(|n| used.contains(n) || [key, watermark].contains(&Some(n.as_str())))
        .cloned()
        .collect();
    let mut out = job.clone();
    if !job.source.reads_existing_parts() {
        let predicate = match &job.source.filter {
            Some(f) => Some(Expr::parse(f)?.to_sql()?),
            None => None,
        };
        let projection = (fetched.len() < names.len()).then_some(fetched.as_slice());
        out.source.query =
            crate::sql::pushdown_sql(&job.source.query, projection, predicate.as_deref());
    }
    out.mapping = job.mapping.narrowed_to(&fetched);
    let indices: Vec<usize> = fetched
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    let projected = schema
        .project(&indices)
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok((out, Arc::new(projected)))
}
