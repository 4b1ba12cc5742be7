//! The job's last runs and reconciles, for `shiftload status`.
//!
//! One entry per complete generation (written once, by the worker whose
//! change marked it complete, with the totals of all its partitions,
//! whichever workers transferred them) and one per reconcile that ran
//! (not a dry run). In the checkpoint collection each entry is a document
//! of its own (`kind: "history"`), so entries are only ever inserted: no
//! two writers update the same document.

use std::fmt;
use std::time::Duration;

use bson::{doc, DateTime, Document};
use futures_util::TryStreamExt;
use mongodb::Collection;

use super::{PartitionState, PartitionStats, Window};
use crate::error::Result;

/// Entries `status` shows.
pub const SHOWN: usize = 10;

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// A complete generation: `"full load"` or `"incremental"`.
    Run { generation: i64, mode: String },
    /// A `reconcile` (or `[reconcile] after_run`).
    Reconcile,
}

/// One run or reconcile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub kind: Kind,
    pub finished: DateTime,
    pub duration: Duration,
    /// Rows read and what became of them (a run).
    pub written: PartitionStats,
    /// Documents deleted (a reconcile).
    pub deleted: u64,
}

impl Entry {
    /// A complete generation planned at `started`, with the totals of its
    /// partitions' `written`.
    pub fn run(generation: i64, full: bool, started: DateTime, written: PartitionStats) -> Entry {
        let finished = DateTime::now();
        Entry {
            kind: Kind::Run {
                generation,
                mode: if full { "full load" } else { "incremental" }.into(),
            },
            duration: elapsed(started, finished),
            finished,
            written,
            deleted: 0,
        }
    }

    pub fn reconcile(deleted: u64, duration: Duration) -> Entry {
        Entry {
            kind: Kind::Reconcile,
            finished: DateTime::now(),
            duration,
            written: PartitionStats::default(),
            deleted,
        }
    }

    /// The entry as a document of the checkpoint collection of `job`.
    pub(super) fn to_doc(&self, job: &str) -> Document {
        let w = &self.written;
        let mut d = doc! {"job": job, "kind": "history", "finished": self.finished,
        "duration_ms": self.duration.as_millis() as i64};
        match &self.kind {
            Kind::Run { generation, mode } => d.extend(doc! {
                "what": "run", "generation": generation, "mode": mode,
                "rows": w.rows as i64, "inserted": w.inserted as i64,
                "already_present": w.already_present as i64, "replaced": w.replaced as i64,
                "merged": w.merged as i64, "bytes": w.bytes as i64,
            }),
            Kind::Reconcile => d.extend(doc! {"what": "reconcile", "deleted": self.deleted as i64}),
        }
        d
    }

    pub(super) fn from_doc(d: &Document) -> Option<Entry> {
        let n = |k: &str| d.get_i64(k).unwrap_or(0).max(0) as u64;
        let kind = match d.get_str("what").ok()? {
            "run" => Kind::Run {
                generation: d.get_i64("generation").ok()?,
                mode: d.get_str("mode").unwrap_or_default().to_string(),
            },
            "reconcile" => Kind::Reconcile,
            _ => return None,
        };
        Some(Entry {
            kind,
            finished: *d.get_datetime("finished").ok()?,
            duration: Duration::from_millis(n("duration_ms")),
            written: PartitionStats {
                duration: Duration::ZERO,
                ..stats_of(d)
            },
            deleted: n("deleted"),
        })
    }
}

/// Record generation `generation` of `job` (its job document: `job_doc`)
/// as complete, with its partitions' totals. The history is for people: a
/// complete run stays complete (and exits 0) when its entry cannot be
/// written, with a warning.
pub(super) async fn record_run(
    coll: &Collection<Document>,
    job: &str,
    generation: i64,
    job_doc: &Document,
) {
    if let Err(e) = try_record_run(coll, job, generation, job_doc).await {
        tracing::warn!(error = %e, generation, "cannot record the run in the job's history");
    }
}

async fn try_record_run(
    coll: &Collection<Document>,
    job: &str,
    generation: i64,
    job_doc: &Document,
) -> Result<()> {
    let parts: Vec<Document> = coll
        .find(
            doc! {"job": job, "kind": "partition", "generation": generation,
            "state": PartitionState::Done.as_str()},
        )
        .await
        .map_err(db_err)?
        .try_collect()
        .await
        .map_err(db_err)?;
    let stats: Vec<PartitionStats> = parts.iter().map(stats_of).collect();
    let full = job_doc
        .get_document("window")
        .ok()
        .and_then(Window::from_doc)
        .is_none_or(|w| w.is_full());
    let started = job_doc
        .get_datetime("started")
        .copied()
        .unwrap_or_else(|_| DateTime::now());
    let entry = Entry::run(generation, full, started, total(&stats));
    coll.insert_one(entry.to_doc(job)).await.map_err(db_err)?;
    Ok(())
}

/// The last [`SHOWN`] entries of `job`, newest first.
pub(super) async fn recent(coll: &Collection<Document>, job: &str) -> Result<Vec<Entry>> {
    let docs: Vec<Document> = coll
        .find(doc! {"job": job, "kind": "history"})
        .sort(doc! {"finished": -1})
        .limit(SHOWN as i64)
        .await
        .map_err(db_err)?
        .try_collect()
        .await
        .map_err(db_err)?;
    Ok(docs.iter().filter_map(Entry::from_doc).collect())
}

fn stats_of(d: &Document) -> PartitionStats {
    let n = |k: &str| d.get_i64(k).unwrap_or(0).max(0) as u64;
    PartitionStats {
        rows: n("rows"),
        inserted: n("inserted"),
        already_present: n("already_present"),
        replaced: n("replaced"),
        merged: n("merged"),
        bytes: n("bytes"),
        duration: Duration::from_millis(n("duration_ms")),
    }
}

fn db_err(e: mongodb::error::Error) -> crate::error::Error {
    crate::mongo::driver_error("checkpoint", &e)
}

fn elapsed(from: DateTime, to: DateTime) -> Duration {
    Duration::from_millis((to.timestamp_millis() - from.timestamp_millis()).max(0) as u64)
}

/// The totals of partitions' `written`.
pub fn total<'a>(parts: impl IntoIterator<Item = &'a PartitionStats>) -> PartitionStats {
    parts
        .into_iter()
        .fold(PartitionStats::default(), |mut t, p| {
            t.add(p);
            t
        })
}

/// `2026-11-28 14:02:11 UTC  run 3, incremental: 45 rows read (5 inserted,
/// 30 already present, 10 replaced) in 1.24 s`.
impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = crate::thousands;
        let secs = self.finished.timestamp_millis().max(0) as u64 / 1000;
        let at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
        let when = humantime::format_rfc3339_seconds(at)
            .to_string()
            .replace('T', " ")
            .replace('Z', " UTC");
        let secs = self.duration.as_secs_f64();
        match &self.kind {
            Kind::Run { generation, mode } => {
                let w = &self.written;
                write!(
                    f,
                    "{when}  run {generation}, {mode}: {} rows read ({} inserted, {} already present",
                    n(w.rows),
                    n(w.inserted),
                    n(w.already_present)
                )?;
                if w.replaced > 0 {
                    write!(f, ", {} replaced", n(w.replaced))?;
                }
                if w.merged > 0 {
                    write!(f, ", {} merged", n(w.merged))?;
                }
                write!(f, ") in {secs:.2} s")
            }
            Kind::Reconcile => write!(
                f,
                "{when}  reconcile: {} deleted in {secs:.2} s",
                n(self.deleted)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_survives_its_document() {
        let written = PartitionStats {
            rows: 45,
            inserted: 5,
            already_present: 30,
            replaced: 10,
            merged: 0,
            bytes: 4096,
            duration: Duration::ZERO,
        };
        let started = DateTime::from_millis(DateTime::now().timestamp_millis() - 1500);
        let run = Entry::run(3, false, started, written);
        assert!(run.duration >= Duration::from_millis(1500));
        let back = Entry::from_doc(&run.to_doc("j")).unwrap();
        assert_eq!(back, run);
        let text = back.to_string();
        assert!(
            text.contains("run 3, incremental: 45 rows read (5 inserted, 30 already present, 10 replaced) in 1.5"),
            "{text}"
        );
        let rec = Entry::reconcile(7, Duration::from_millis(250));
        let back = Entry::from_doc(&rec.to_doc("j")).unwrap();
        assert_eq!(back, rec);
        assert!(back.to_string().ends_with("reconcile: 7 deleted in 0.25 s"));
    }

    #[test]
    fn totals_add_every_partition() {
        let p = |rows| PartitionStats {
            rows,
            inserted: rows,
            ..PartitionStats::default()
        };
        let t = total(&[p(2), p(3)]);
        assert_eq!((t.rows, t.inserted), (5, 5));
    }
}
