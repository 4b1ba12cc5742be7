//! `shiftload verify`: prove the target equal to what the job writes from
//! the source now, or name the documents that differ.
//!
//! Both sides are reduced to the same tally: each document, as the job
//! encodes it from the source and as the target returns it, goes into one
//! of [`BUCKETS`] buckets by a hash of its `_id`; a bucket keeps its count
//! and the wrapping sum of its documents' 128-bit hashes (an order-free
//! digest: the same documents in any order, the same sum). Equal tallies:
//! equal copies, proved in one read of each side. Otherwise only the
//! buckets that differ are read again, their documents compared one by one
//! and named: missing from the target (under their partition), changed,
//! or extra (in the target, from no partition of the source).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::doc;
use futures_util::TryStreamExt;

use super::prepare::prepare;
use crate::config::{JobConfig, OnConflict};
use crate::encode::{EncodedBatch, Encoder, Fields};
use crate::error::{Error, Result};
use crate::mongo::driver_error;
use crate::plan::Planned;
use crate::sink::mongo::{document_hash, id_key};
use crate::sink::Target;
use crate::source::Source;

/// Buckets of the tally: the cost of a second pass is the documents of the
/// buckets that differ, about 1/4096 of the collection per difference.
pub(super) const BUCKETS: usize = 4096;
/// Keys named per partition and kind of difference.
const SAMPLES: usize = 5;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Cell {
    count: u64,
    sum: u128,
}

pub(super) fn bucket(id: &[u8]) -> usize {
    (twox_hash::XxHash3_128::oneshot(id) as u64 % BUCKETS as u64) as usize
}

/// What verify found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub namespace: String,
    pub partitions: usize,
    /// Documents the job writes from the source now.
    pub source_docs: u64,
    /// Rows the job's rules set aside (dead-letter mode): not expected.
    pub set_aside: u64,
    pub target_docs: u64,
    pub missing: u64,
    pub changed: u64,
    pub extra: u64,
    /// `(where, kind, key)` of the differences named.
    pub samples: Vec<(String, &'static str, String)>,
    pub elapsed: Duration,
}

impl Verdict {
    pub fn equal(&self) -> bool {
        self.missing == 0 && self.changed == 0 && self.extra == 0
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = crate::thousands;
        match self.equal() {
            true => writeln!(f, "shiftload verify: equal")?,
            false => writeln!(f, "shiftload verify: DIFFERENT")?,
        }
        writeln!(f, "  target        {}", self.namespace)?;
        writeln!(
            f,
            "  source        {} documents from {} partitions{}",
            n(self.source_docs),
            self.partitions,
            match self.set_aside {
                0 => String::new(),
                k => format!(" ({} rows set aside by the job's rules)", n(k)),
            }
        )?;
        writeln!(f, "  target        {} documents", n(self.target_docs))?;
        if !self.equal() {
            writeln!(
                f,
                "  differences   {} missing, {} changed, {} extra",
                n(self.missing),
                n(self.changed),
                n(self.extra)
            )?;
            for (place, kind, key) in &self.samples {
                writeln!(f, "    {kind:<8} {key}  ({place})")?;
            }
        }
        writeln!(f, "  elapsed       {:.2} s", self.elapsed.as_secs_f64())
    }
}

/// Compare the job's target with its source.
pub async fn verify(job: &JobConfig) -> Result<Verdict> {
    let started = Instant::now();
    if job.mapping.id.is_empty() {
        return Err(Error::config(
            "mapping.id",
            "verify compares documents by their `_id`, which this job leaves to the server \
             (fresh ObjectIds): set mapping.id to the source's key columns",
        ));
    }
    let target = Target::connect(&job.target).await?;
    let prepared = prepare(job, false).await?;
    let source = prepared.source.clone();
    let encoder = Arc::new(
        target
            .encoder(&source.schema(), &prepared.job.mapping)?
            .with_dead_letter(job.dead_letter.is_some()),
    );
    let fields = (prepared.job.target.on_conflict == OnConflict::Merge).then(|| encoder.fields());
    let hash_of = |doc: &[u8]| digest(fields.as_ref(), doc);
    let plan = source.plan().await?;
    let mut verdict = Verdict {
        namespace: target.namespace().to_string(),
        partitions: plan.len(),
        ..Verdict::default()
    };

    // First pass: both tallies.
    let mut ours = vec![Cell::default(); BUCKETS];
    let mut theirs = vec![Cell::default(); BUCKETS];
    for work in &plan {
        let aside = read_source(source.as_ref(), &encoder, work, |id, doc| {
            let c = &mut ours[bucket(id)];
            c.count += 1;
            c.sum = c.sum.wrapping_add(hash_of(doc));
        })
        .await?;
        verdict.set_aside += aside;
    }
    read_target(&target, false, |id, doc| {
        let c = &mut theirs[bucket(id)];
        c.count += 1;
        c.sum = c.sum.wrapping_add(hash_of(doc));
    })
    .await?;
    verdict.source_docs = ours.iter().map(|c| c.count).sum();
    verdict.target_docs = theirs.iter().map(|c| c.count).sum();
    let differ: HashSet<usize> = (0..BUCKETS).filter(|&b| ours[b] != theirs[b]).collect();

    // Second pass, only over the buckets that differ.
    if !differ.is_empty() {
        let mut wanted: HashMap<Vec<u8>, (u128, usize)> = HashMap::new();
        for (i, work) in plan.iter().enumerate() {
            read_source(source.as_ref(), &encoder, work, |id, doc| {
                if differ.contains(&bucket(id)) {
                    wanted.insert(id.to_vec(), (hash_of(doc), i));
                }
            })
            .await?;
        }
        let mut found: Vec<(Vec<u8>, u128)> = Vec::new();
        read_target(&target, false, |id, doc| {
            if differ.contains(&bucket(id)) {
                found.push((id.to_vec(), hash_of(doc)));
            }
        })
        .await?;
        let key = prepared.job.partition.as_ref().map(|p| p.column.as_str());
        compare(
            &mut verdict,
            &places(source.as_ref(), &plan, key),
            wanted,
            found,
        );
    }
    if let Some(staged) = source.cleanup(&plan).await.err() {
        tracing::warn!(error = %staged, "verify: cannot remove what the source staged");
    }
    verdict.elapsed = started.elapsed();
    Ok(verdict)
}

/// The hash a document is compared by: of the whole document or, for a
/// merge job (which owns only its fields of each document), of `fields`
/// projected from it; a document that cannot be projected hashes whole.
fn digest(fields: Option<&Fields>, doc: &[u8]) -> u128 {
    match fields.map(|f| f.project(doc)) {
        Some(Ok(projected)) => document_hash(&projected),
        _ => document_hash(doc),
    }
}

/// `partition 2 of 5: order_id in [751, 1501)`, for each partition.
fn places(source: &dyn Source, plan: &[Planned], key: Option<&str>) -> Vec<String> {
    let n = plan.len();
    plan.iter()
        .enumerate()
        .map(|(i, work)| {
            let what = source.describe(work);
            match key {
                Some(k) => format!("partition {} of {n}: {k} in {what}", i + 1),
                None => format!("partition {} of {n}: {what}", i + 1),
            }
        })
        .collect()
}

/// Name what differs between the source's documents (`wanted`: key → hash,
/// partition) and the target's (`found`); `places` names the partitions.
fn compare(
    verdict: &mut Verdict,
    places: &[String],
    mut wanted: HashMap<Vec<u8>, (u128, usize)>,
    found: Vec<(Vec<u8>, u128)>,
) {
    let mut named: HashMap<(String, &'static str), usize> = HashMap::new();
    let mut name = |verdict: &mut Verdict, place: String, kind: &'static str, id: &[u8]| {
        let seen = named.entry((place.clone(), kind)).or_default();
        *seen += 1;
        if *seen <= SAMPLES {
            verdict.samples.push((place, kind, describe(id)));
        }
    };
    for (id, hash) in found {
        match wanted.remove(&id) {
            Some((h, _)) if h == hash => {}
            Some((_, p)) => {
                verdict.changed += 1;
                name(verdict, places[p].clone(), "changed", &id);
            }
            None => {
                verdict.extra += 1;
                name(verdict, "from no partition".into(), "extra", &id);
            }
        }
    }
    let mut missing: Vec<_> = wanted.into_iter().collect();
    missing.sort_by_key(|(_, (_, p))| *p);
    for (id, (_, p)) in missing {
        verdict.missing += 1;
        name(verdict, places[p].clone(), "missing", &id);
    }
}

/// `_id: 42` from an `_id` element's bytes.
pub(super) fn describe(id: &[u8]) -> String {
    match id_value(id) {
        Some(v) => format!("_id: {v}"),
        None => "_id unreadable".into(),
    }
}

/// The value of an `_id` element from its bytes.
pub(super) fn id_value(id: &[u8]) -> Option<bson::Bson> {
    let mut doc = Vec::with_capacity(id.len() + 5);
    doc.extend_from_slice(&((id.len() + 5) as i32).to_le_bytes());
    doc.extend_from_slice(id);
    doc.push(0);
    let raw = bson::RawDocument::from_bytes(&doc).ok()?;
    bson::Bson::try_from(raw.get("_id").ok()??).ok()
}

/// Every document the job writes from partition `work`, as `(id, bytes)`;
/// the rows set aside by the job's rules.
pub(super) async fn read_source(
    source: &dyn Source,
    encoder: &Arc<Encoder>,
    work: &Planned,
    mut each: impl FnMut(&[u8], &[u8]),
) -> Result<u64> {
    let mut stream = source.open(work).await?;
    let mut rows = 0u64;
    let mut aside = 0u64;
    while let Some(next) = stream.next_batch().await {
        let next = next?;
        let n = next.batch.num_rows() as u64;
        let encoder = encoder.clone();
        let encoded: EncodedBatch = tokio::task::spawn_blocking(move || {
            encoder.encode_skipping(&next.batch, rows, next.rejects)
        })
        .await
        .map_err(|e| Error::Internal(format!("encoder task: {e}")))??;
        rows += n;
        aside += encoded.rejects.len() as u64;
        for chunk in &encoded.chunks {
            for doc in chunk.iter() {
                each(&id_key(doc), doc);
            }
        }
    }
    Ok(aside)
}

/// Every document of the target collection, as `(id, bytes)`; with
/// `ids_only`, the documents hold only their `_id`.
pub(super) async fn read_target(
    target: &Target,
    ids_only: bool,
    mut each: impl FnMut(&[u8], &[u8]),
) -> Result<()> {
    let ns = target.namespace();
    let mut find = target.collection().find(doc! {}).batch_size(10_000);
    if ids_only {
        find = find.projection(doc! {"_id": 1});
    }
    let mut cursor = find.await.map_err(|e| driver_error(ns, &e))?;
    while let Some(doc) = cursor.try_next().await.map_err(|e| driver_error(ns, &e))? {
        each(&id_key(doc.as_bytes()), doc.as_bytes());
    }
    Ok(())
}
