//! Durable progress: the job's partitions and their states, in a collection
//! of the target MongoDB database, shared by every worker of the job.
//!
//! One document per job (`kind: "job"`) holds the current generation (one
//! complete pass over the query), the hash of the job's configuration and
//! whether the generation is being planned, running or complete. One
//! document per partition holds its key range and state:
//! `pending → running (owner, lease) → done (rows, bytes, duration)` or
//! `failed (error, attempts)`. Workers claim partitions with an atomic
//! find-and-modify; a running partition's lease is renewed by a heartbeat,
//! and one whose lease expired (its worker was killed) is claimed again.
//!
//! A finished generation is not done again; the next run starts a new one
//! (a fresh copy). An unfinished one is resumed: only partitions not done
//! are transferred.

use std::time::Duration;

use bson::{doc, Bson, DateTime, Document};
use futures_util::TryStreamExt;
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};

use crate::error::{Error, Result};
use crate::plan::Range;

/// States of a partition.
pub const PENDING: &str = "pending";
pub const RUNNING: &str = "running";
pub const DONE: &str = "done";
pub const FAILED: &str = "failed";

/// The checkpoint collection of one job.
#[derive(Clone)]
pub struct CheckpointStore {
    coll: Collection<Document>,
    job: String,
    owner: String,
    lease: Duration,
}

/// A claimed partition.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: String,
    pub range: Range,
    pub attempts: i32,
    pub timeouts: i32,
}

/// What a finished partition wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionStats {
    pub rows: u64,
    pub inserted: u64,
    pub already_present: u64,
    pub bytes: u64,
    pub duration: Duration,
}

/// One partition as `status` shows it.
#[derive(Debug, Clone)]
pub struct PartitionStatus {
    pub range: Range,
    pub state: String,
    pub attempts: i32,
    pub rows: i64,
    pub owner: Option<String>,
    pub error: Option<String>,
}

/// Where a job stands.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub generation: i64,
    pub state: String,
    pub partitions: Vec<PartitionStatus>,
}

impl JobStatus {
    pub fn count(&self, state: &str) -> usize {
        self.partitions.iter().filter(|p| p.state == state).count()
    }
}

fn db_err(e: mongodb::error::Error) -> Error {
    let message = format!("checkpoint: {}", crate::redact::scrub(&e.to_string()));
    if crate::sink::mongo::transient(&e) {
        Error::Unavailable {
            system: "MongoDB",
            message,
        }
    } else {
        Error::Write {
            namespace: "checkpoint".into(),
            message,
        }
    }
}

fn range_of(d: &Document) -> Range {
    Range {
        lo: d.get_i64("lo").unwrap_or(i64::MIN),
        hi: d.get_i64("hi").unwrap_or(i64::MAX),
        null: d.get_bool("null").unwrap_or(false),
    }
}

impl CheckpointStore {
    pub fn new(db: &Database, collection: &str, job: &str, owner: &str, lease: Duration) -> Self {
        CheckpointStore {
            coll: db.collection(collection),
            job: job.to_string(),
            owner: owner.to_string(),
            lease,
        }
    }

    fn job_id(&self) -> String {
        format!("job:{}", self.job)
    }

    fn lease_until(&self) -> DateTime {
        DateTime::from_millis(DateTime::now().timestamp_millis() + self.lease.as_millis() as i64)
    }

    /// Join the job's unfinished generation, or plan a new one with `plan`
    /// when the last one is complete (or there is none). Only one worker
    /// plans; the others wait for it. Returns the generation, and whether
    /// it was already running (a resumed run), and the staged parts the
    /// plan listed (partition `lo` is an index into them).
    pub async fn begin<F, Fut>(
        &self,
        config_hash: &str,
        restart: bool,
        plan: F,
    ) -> Result<(i64, bool, Vec<String>)>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<Range>, Vec<String>)>>,
    {
        let id = self.job_id();
        if restart {
            self.coll
                .delete_many(doc! {"job": &self.job})
                .await
                .map_err(db_err)?;
            self.coll
                .update_one(doc! {"_id": &id}, doc! {"$set": {"state": "complete"}})
                .await
                .map_err(db_err)?;
        }
        let mut plan = Some(plan);
        loop {
            let current = self
                .coll
                .find_one(doc! {"_id": &id})
                .await
                .map_err(db_err)?;
            let state = current
                .as_ref()
                .and_then(|d| d.get_str("state").ok())
                .unwrap_or("complete");
            let generation = current
                .as_ref()
                .and_then(|d| d.get_i64("generation").ok())
                .unwrap_or(0);
            match state {
                "running" => {
                    let hash = current
                        .as_ref()
                        .and_then(|d| d.get_str("config_hash").ok())
                        .unwrap_or("");
                    if hash != config_hash {
                        return Err(Error::config(
                            "job",
                            format!(
                                "the job `{}` changed since its unfinished run began (source, query, mapping \
                                 or partitioning); finish it with the previous job file, or start over with \
                                 `shiftload run --restart`",
                                self.job
                            ),
                        ));
                    }
                    let parts = current
                        .as_ref()
                        .and_then(|d| d.get_array("parts").ok())
                        .map(|a| {
                            a.iter()
                                .filter_map(|b| b.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    return Ok((generation, true, parts));
                }
                "planning" => {
                    let since = current
                        .as_ref()
                        .and_then(|d| d.get_datetime("since").ok())
                        .copied();
                    let stale = since.is_none_or(|s| {
                        DateTime::now().timestamp_millis() - s.timestamp_millis() > 10 * 60 * 1000
                    });
                    if !stale {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
                _ => {}
            }
            // Take the planning turn atomically: insert the job document, or
            // move it from complete (or a stale planning) to planning.
            let taken = match current {
                None => self
                    .coll
                    .insert_one(doc! {"_id": &id, "kind": "job", "job": &self.job, "state": "planning",
                        "generation": 0i64, "owner": &self.owner, "since": DateTime::now()})
                    .await
                    .is_ok(),
                Some(d) => self
                    .coll
                    .update_one(
                        doc! {"_id": &id, "state": d.get_str("state").unwrap_or("complete"),
                              "generation": generation},
                        doc! {"$set": {"state": "planning", "owner": &self.owner, "since": DateTime::now()}},
                    )
                    .await
                    .map_err(db_err)?
                    .modified_count
                    == 1,
            };
            if !taken {
                continue;
            }
            let ranges = match plan.take() {
                Some(p) => p().await,
                None => unreachable!("planning happens once"),
            };
            let (ranges, parts) = match ranges {
                Ok(r) => r,
                Err(e) => {
                    let _ = self
                        .coll
                        .update_one(doc! {"_id": &id}, doc! {"$set": {"state": "complete"}})
                        .await;
                    return Err(e);
                }
            };
            let next = generation + 1;
            let docs: Vec<Document> = ranges
                .iter()
                .map(|r| {
                    doc! {
                        "_id": format!("{}/{}/{}{}", self.job, next, if r.null { "null" } else { "" }, r.lo),
                        "kind": "partition", "job": &self.job, "generation": next,
                        "lo": r.lo, "hi": r.hi, "null": r.null,
                        "state": PENDING, "attempts": 0i32, "timeouts": 0i32,
                    }
                })
                .collect();
            self.coll
                .delete_many(doc! {"job": &self.job, "kind": "partition"})
                .await
                .map_err(db_err)?;
            if !docs.is_empty() {
                self.coll.insert_many(docs).await.map_err(db_err)?;
            }
            self.coll
                .update_one(
                    doc! {"_id": &id},
                    doc! {"$set": {"state": "running", "generation": next, "config_hash": config_hash,
                                   "partitions": ranges.len() as i64, "started": DateTime::now(),
                                   "parts": &parts}},
                )
                .await
                .map_err(db_err)?;
            return Ok((next, false, parts));
        }
    }

    /// Claim the next partition: pending, or running under an expired
    /// lease, or failed by another worker. `None` when there is none now.
    ///
    /// Safe to retry: each claim carries a token of its own, so when the
    /// answer to a claim is lost (the server applied it, the connection
    /// dropped), the retry finds the partition it already took instead of
    /// taking a second one and leaving the first orphaned.
    pub async fn claim(&self, generation: i64) -> Result<Option<Claim>> {
        let token = bson::oid::ObjectId::new();
        patient(|| self.try_claim(generation, token)).await
    }

    async fn try_claim(
        &self,
        generation: i64,
        token: bson::oid::ObjectId,
    ) -> Result<Option<Claim>> {
        let to_claim = |d: Document| Claim {
            id: d.get_str("_id").unwrap_or_default().to_string(),
            range: range_of(&d),
            attempts: d.get_i32("attempts").unwrap_or(1),
            timeouts: d.get_i32("timeouts").unwrap_or(0),
        };
        // An earlier try of this claim may have been applied.
        let mine = self
            .coll
            .find_one(doc! {"job": &self.job, "kind": "partition", "claim_token": token})
            .await
            .map_err(db_err)?;
        if let Some(d) = mine {
            return Ok(Some(to_claim(d)));
        }
        let now = DateTime::now();
        let filter = doc! {
            "job": &self.job, "kind": "partition", "generation": generation,
            "$or": [
                {"state": PENDING},
                {"state": RUNNING, "lease_until": {"$lt": now}},
                {"state": FAILED, "failed_by": {"$ne": &self.owner}},
            ],
        };
        let update = doc! {
            "$set": {"state": RUNNING, "owner": &self.owner, "lease_until": self.lease_until(),
                     "heartbeat": now, "claim_token": token},
            "$inc": {"attempts": 1i32},
        };
        let claimed = self
            .coll
            .find_one_and_update(filter, update)
            .sort(doc! {"null": 1, "lo": 1})
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_err)?;
        Ok(claimed.map(to_claim))
    }

    /// Renew the lease; false when the partition is no longer ours (our
    /// lease expired and another worker took it).
    pub async fn heartbeat(&self, id: &str) -> Result<bool> {
        let r = self
            .coll
            .update_one(
                doc! {"_id": id, "owner": &self.owner, "state": RUNNING},
                doc! {"$set": {"lease_until": self.lease_until(), "heartbeat": DateTime::now()}},
            )
            .await
            .map_err(db_err)?;
        Ok(r.matched_count == 1)
    }

    /// Record another attempt of a partition we hold (after a retryable
    /// error), and whether the error was a statement timeout.
    pub async fn retrying(&self, id: &str, error: &str, timeout: bool) -> Result<()> {
        self.coll
            .update_one(
                doc! {"_id": id, "owner": &self.owner},
                doc! {"$inc": {"attempts": 1i32, "timeouts": timeout as i32},
                "$set": {"last_error": error, "lease_until": self.lease_until()}},
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    pub async fn done(&self, id: &str, s: &PartitionStats) -> Result<()> {
        self.coll
            .update_one(
                doc! {"_id": id, "owner": &self.owner},
                doc! {"$set": {"state": DONE, "rows": s.rows as i64, "inserted": s.inserted as i64,
                         "already_present": s.already_present as i64, "bytes": s.bytes as i64,
                         "duration_ms": s.duration.as_millis() as i64, "finished": DateTime::now()},
                "$unset": {"lease_until": ""}},
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    pub async fn failed(&self, id: &str, error: &str) -> Result<()> {
        self.coll
            .update_one(
                doc! {"_id": id, "owner": &self.owner},
                doc! {"$set": {"state": FAILED, "error": error, "failed_by": &self.owner},
                "$unset": {"lease_until": ""}},
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Give a partition back (interrupted): pending again, lease dropped.
    pub async fn release(&self, id: &str) -> Result<()> {
        self.coll
            .update_one(
                doc! {"_id": id, "owner": &self.owner, "state": RUNNING},
                doc! {"$set": {"state": PENDING}, "$unset": {"lease_until": "", "owner": ""}},
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Replace a partition by its two halves, both pending.
    pub async fn split(
        &self,
        claim: &Claim,
        generation: i64,
        halves: (Range, Range),
    ) -> Result<()> {
        let (a, b) = halves;
        self.coll
            .insert_one(doc! {
                "_id": format!("{}/{}/{}", self.job, generation, b.lo),
                "kind": "partition", "job": &self.job, "generation": generation,
                "lo": b.lo, "hi": b.hi, "null": false,
                "state": PENDING, "attempts": 0i32, "timeouts": 0i32, "split_from": &claim.id,
            })
            .await
            .map_err(db_err)?;
        self.coll
            .update_one(
                doc! {"_id": &claim.id, "owner": &self.owner},
                doc! {"$set": {"hi": a.hi, "state": PENDING, "timeouts": 0i32},
                "$unset": {"lease_until": "", "owner": ""}},
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Mark the generation complete if every partition is done.
    pub async fn complete_if_done(&self, generation: i64) -> Result<bool> {
        let open = self
            .coll
            .count_documents(
                doc! {"job": &self.job, "kind": "partition", "generation": generation,
                "state": {"$ne": DONE}},
            )
            .await
            .map_err(db_err)?;
        if open > 0 {
            return Ok(false);
        }
        self.coll
            .update_one(
                doc! {"_id": self.job_id(), "generation": generation, "state": "running"},
                doc! {"$set": {"state": "complete", "finished": DateTime::now()}},
            )
            .await
            .map_err(db_err)?;
        Ok(true)
    }

    /// The job's current generation and its partitions.
    pub async fn status(&self) -> Result<Option<JobStatus>> {
        let Some(job) = self
            .coll
            .find_one(doc! {"_id": self.job_id()})
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let generation = job.get_i64("generation").unwrap_or(0);
        let mut partitions: Vec<PartitionStatus> = self
            .coll
            .find(doc! {"job": &self.job, "kind": "partition", "generation": generation})
            .await
            .map_err(db_err)?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(db_err)?
            .iter()
            .map(|d| PartitionStatus {
                range: range_of(d),
                state: d.get_str("state").unwrap_or("?").to_string(),
                attempts: d.get_i32("attempts").unwrap_or(0),
                rows: d.get_i64("rows").unwrap_or(0),
                owner: d.get_str("owner").ok().map(str::to_string),
                error: match d.get("error").or(d.get("last_error")) {
                    Some(Bson::String(s)) => Some(s.clone()),
                    _ => None,
                },
            })
            .collect();
        partitions.sort_by_key(|p| (p.range.null, p.range.lo));
        Ok(Some(JobStatus {
            generation,
            state: job.get_str("state").unwrap_or("?").to_string(),
            partitions,
        }))
    }
}

/// Run a checkpoint operation, waiting out a target that is briefly away
/// (restart, failover) for up to a minute before giving up.
pub async fn patient<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut delay = Duration::from_millis(200);
    loop {
        match op().await {
            Err(Error::Unavailable { message, .. }) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %message, ?delay, "checkpoint store unavailable, waiting");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
