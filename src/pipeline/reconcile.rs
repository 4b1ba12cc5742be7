//! `shiftload reconcile`: delete the documents whose key the source no
//! longer has — the deletions an incremental run cannot see.
//!
//! Both key sets are reduced the way `verify` reduces documents: each
//! `_id` goes into one of [`BUCKETS`] buckets by its hash, a bucket keeps
//! its count and the sum of its keys' hashes. Only the buckets that differ
//! are read again and compared key by key, in rounds that hold at most
//! [`KEYS_PER_ROUND`] keys, so memory stays bounded whatever the size of
//! the collection; the order of either side does not matter (a text key
//! sorts differently in Redshift and in MongoDB). Each pass reads the
//! collection before the source: a row inserted in the source meanwhile
//! (and copied by a concurrent run) is then in the later read, never taken
//! for a deleted one.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::doc;

use super::prepare::prepare;
use super::verify::{bucket, describe, id_value, read_source, read_target, BUCKETS};
use crate::checkpoint::{history, CheckpointStore};
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::mongo::driver_error;
use crate::retry::with_retries;
use crate::sink::Target;

/// Keys (both sides) compared at once in a second pass: about 100 MB.
const KEYS_PER_ROUND: u64 = 1_000_000;
/// Keys named in the report.
const SAMPLES: usize = 20;
/// `_id`s per delete request.
const DELETE_BATCH: usize = 1000;

/// What to do with the documents found gone.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReconcileOptions {
    /// Only count and name them.
    pub dry_run: bool,
    /// Delete them even above `reconcile.max_delete_share`.
    pub force: bool,
}

/// What reconcile found and did.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    pub namespace: String,
    pub dry_run: bool,
    pub source_keys: u64,
    pub target_docs: u64,
    /// Documents whose key the source no longer has.
    pub gone: u64,
    pub deleted: u64,
    /// The first of them, as `_id: …`.
    pub samples: Vec<String>,
    pub elapsed: Duration,
}

impl fmt::Display for Reconciled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = crate::thousands;
        match self.dry_run {
            true => writeln!(f, "shiftload reconcile: dry run, nothing deleted")?,
            false => writeln!(f, "shiftload reconcile: done")?,
        }
        writeln!(f, "  target        {}", self.namespace)?;
        writeln!(f, "  source        {} keys", n(self.source_keys))?;
        writeln!(f, "  collection    {} documents", n(self.target_docs))?;
        match self.dry_run {
            true => writeln!(f, "  would delete  {}", n(self.gone))?,
            false => writeln!(f, "  deleted       {}", n(self.deleted))?,
        }
        for key in &self.samples {
            writeln!(f, "    {key}")?;
        }
        if self.gone > self.samples.len() as u64 {
            writeln!(
                f,
                "    … and {} more",
                n(self.gone - self.samples.len() as u64)
            )?;
        }
        writeln!(f, "  elapsed       {:.2} s", self.elapsed.as_secs_f64())
    }
}

/// Per bucket: keys and the wrapping sum of their hashes.
type Tally = Vec<(u64, u128)>;

fn add(tally: &mut Tally, id: &[u8]) {
    let cell = &mut tally[bucket(id)];
    cell.0 += 1;
    cell.1 = cell.1.wrapping_add(twox_hash::XxHash3_128::oneshot(id));
}

/// Delete from `job`'s collection the documents whose key its source no
/// longer gives.
pub async fn reconcile(job: &JobConfig, options: ReconcileOptions) -> Result<Reconciled> {
    let started = Instant::now();
    if job.mapping.id.is_empty() {
        return Err(Error::config(
            "mapping.id",
            "reconcile finds deleted rows by their `_id`, which this job leaves to the server \
             (fresh ObjectIds): set mapping.id to the source's key columns",
        ));
    }
    let target = Target::connect(&job.target).await?;
    let keys = KeySource::new(job, &target).await?;
    let mut out = Reconciled {
        namespace: target.namespace().to_string(),
        dry_run: options.dry_run,
        ..Reconciled::default()
    };

    let mut theirs: Tally = vec![(0, 0); BUCKETS];
    read_target(&target, true, |id, _| add(&mut theirs, id)).await?;
    let mut ours: Tally = vec![(0, 0); BUCKETS];
    keys.each(|id| add(&mut ours, id)).await?;
    out.source_keys = ours.iter().map(|c| c.0).sum();
    out.target_docs = theirs.iter().map(|c| c.0).sum();

    let mut gone: Vec<Vec<u8>> = Vec::new();
    for round in rounds(&ours, &theirs) {
        let mut found: Vec<Vec<u8>> = Vec::new();
        read_target(&target, true, |id, _| {
            if round.contains(&bucket(id)) {
                found.push(id.to_vec());
            }
        })
        .await?;
        let mut present: HashSet<Vec<u8>> = HashSet::new();
        keys.each(|id| {
            if round.contains(&bucket(id)) {
                present.insert(id.to_vec());
            }
        })
        .await?;
        gone.extend(found.into_iter().filter(|id| !present.contains(id)));
    }
    out.gone = gone.len() as u64;
    out.samples = gone.iter().take(SAMPLES).map(|id| describe(id)).collect();
    let limit = job.reconcile.max_delete_share;
    let share = out.gone as f64 / out.target_docs.max(1) as f64;
    if !options.dry_run && !options.force && share > limit {
        return Err(Error::config(
            "reconcile.max_delete_share",
            format!(
                "reconcile would delete {} of {} documents ({:.1} %), more than the limit of \
                 {:.1} %; nothing was deleted. Check the source query, then run \
                 `shiftload reconcile --dry-run` to see them and `--force` to delete them",
                crate::thousands(out.gone),
                crate::thousands(out.target_docs),
                share * 100.0,
                limit * 100.0
            ),
        ));
    }
    if !options.dry_run {
        out.deleted = delete(&target, job, &gone).await?;
    }
    keys.cleanup().await;
    out.elapsed = started.elapsed();
    if !options.dry_run {
        let store = super::mongo_store(job, &target, &super::prepare::job_name(job), "reconcile");
        let entry = history::Entry::reconcile(out.deleted, out.elapsed);
        if let Err(e) = store.record(&entry).await {
            tracing::warn!(error = %e, "reconcile: cannot record it in the job's history");
        }
    }
    Ok(out)
}

/// The buckets that differ, grouped so that a round compares at most
/// [`KEYS_PER_ROUND`] keys.
fn rounds(ours: &Tally, theirs: &Tally) -> Vec<HashSet<usize>> {
    let mut out: Vec<HashSet<usize>> = Vec::new();
    let mut held = 0u64;
    for b in (0..BUCKETS).filter(|&b| ours[b] != theirs[b]) {
        let keys = ours[b].0 + theirs[b].0;
        if out.is_empty() || held + keys > KEYS_PER_ROUND {
            out.push(HashSet::new());
            held = 0;
        }
        held += keys;
        out.last_mut().expect("a round").insert(b);
    }
    out
}

/// Delete the documents of `ids` (`_id` elements' bytes), a batch per
/// request; the number deleted.
async fn delete(target: &Target, job: &JobConfig, ids: &[Vec<u8>]) -> Result<u64> {
    let ns = target.namespace();
    let coll = target
        .database
        .collection::<bson::Document>(&job.target.collection);
    let mut deleted = 0;
    for batch in ids.chunks(DELETE_BATCH) {
        // A key that cannot be read back is never skipped: its document
        // would stay while the count says it went.
        let values = batch
            .iter()
            .map(|id| {
                id_value(id).ok_or_else(|| {
                    Error::Internal(format!(
                        "reconcile: an `_id` that cannot be decoded: {id:02x?}"
                    ))
                })
            })
            .collect::<Result<Vec<bson::Bson>>>()?;
        let filter = doc! {"_id": {"$in": values}};
        let res = with_retries(
            &job.retry,
            "delete documents gone from the source",
            || async {
                coll.delete_many(filter.clone())
                    .await
                    .map_err(|e| driver_error(ns, &e))
            },
        )
        .await?;
        deleted += res.deleted_count;
    }
    Ok(deleted)
}

/// The source's keys as `_id` elements: the job's query and filter, its
/// partitions, only the key columns fetched.
struct KeySource {
    source: Arc<dyn crate::source::Source>,
    encoder: Arc<crate::encode::Encoder>,
    plan: Vec<crate::plan::Planned>,
}

impl KeySource {
    async fn new(job: &JobConfig, target: &Target) -> Result<Self> {
        let mut keyed = job.clone();
        keyed.mapping = job.mapping.narrowed_to(&job.mapping.id);
        keyed.mapping.include = Some(job.mapping.id.clone());
        keyed.incremental = None;
        keyed.dead_letter = None;
        let prepared = prepare(&keyed, false).await?;
        let source = prepared.source.clone();
        let encoder = Arc::new(target.encoder(&source.schema(), &prepared.job.mapping)?);
        let plan = source.plan().await?;
        Ok(KeySource {
            source,
            encoder,
            plan,
        })
    }

    async fn each(&self, mut f: impl FnMut(&[u8])) -> Result<()> {
        for work in &self.plan {
            read_source(self.source.as_ref(), &self.encoder, work, |id, _| f(id)).await?;
        }
        Ok(())
    }

    async fn cleanup(&self) {
        if let Err(e) = self.source.cleanup(&self.plan).await {
            tracing::warn!(error = %e, "reconcile: cannot remove what the source staged");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_hold_only_the_buckets_that_differ_and_at_most_a_rounds_keys() {
        let mut ours: Tally = vec![(10, 1); BUCKETS];
        let theirs = ours.clone();
        assert!(rounds(&ours, &theirs).is_empty());
        ours[3] = (600_000, 7);
        ours[9] = (300_000, 8);
        ours[20] = (200_000, 9);
        let r = rounds(&ours, &theirs);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0], HashSet::from([3, 9]));
        assert_eq!(r[1], HashSet::from([20]));
    }

    #[test]
    fn an_id_element_reads_back_as_its_value() {
        let doc = bson::rawdoc! {"_id": 42i64, "x": 1};
        let id = crate::sink::mongo::id_key(doc.as_bytes());
        assert_eq!(id_value(&id), Some(bson::Bson::Int64(42)));
    }
}
