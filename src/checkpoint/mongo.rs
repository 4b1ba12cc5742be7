//! The checkpoint in a collection of the target MongoDB database.
//!
//! One document per job (`kind: "job"`, `_id: "job:<name>"`) holds the
//! current generation, the job's fingerprint and the generation's
//! [`JobState`]; one document per partition (`kind: "partition"`) its range
//! (or staged part) and [`PartitionState`]; one document per complete run
//! or reconcile (`kind: "history"`, [`super::history`]). Workers claim
//! partitions with an atomic find-and-modify.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bson::{doc, Bson, DateTime, Document};
use futures_util::TryStreamExt;
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};

use super::{
    changed_job, document, history, Begin, CheckpointStore, Claim, JobState, JobStatus,
    PartitionState, PartitionStats, PartitionStatus, Planned, Watermark, Window,
};
use crate::error::{Error, Result};
use crate::plan::Range;
use crate::retry::patient;

/// The checkpoint collection of one job.
#[derive(Clone)]
pub struct MongoStore {
    coll: Collection<Document>,
    job: String,
    owner: String,
    lease: Duration,
}

fn db_err(e: mongodb::error::Error) -> Error {
    crate::mongo::driver_error("checkpoint", &e)
}

fn state<T: serde::de::DeserializeOwned>(d: &Document, key: &str) -> Option<T> {
    d.get(key)
        .and_then(|b| bson::deserialize_from_bson::<T>(b.clone()).ok())
}

fn as_bson<T: serde::Serialize>(v: T) -> Bson {
    bson::serialize_to_bson(&v).expect("a state serialises")
}

impl MongoStore {
    pub fn new(db: &Database, collection: &str, job: &str, owner: &str, lease: Duration) -> Self {
        MongoStore {
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

    /// Take the planning turn atomically: insert the job document, or move
    /// it from `current`'s state to planning. False when another worker
    /// was faster.
    async fn take_planning_turn(&self, current: Option<&Document>) -> Result<bool> {
        let id = self.job_id();
        let planning = as_bson(JobState::Planning);
        let Some(d) = current else {
            let inserted = self
                .coll
                .insert_one(
                    doc! {"_id": &id, "kind": "job", "job": &self.job, "state": planning,
                    "generation": 0i64, "owner": &self.owner, "since": DateTime::now(),
                    "beat": 0i64},
                )
                .await;
            // A duplicate `_id`: another worker inserted it first. Any other
            // error is one (retried by the caller), not a lost turn to spin on.
            return match inserted {
                Ok(_) => Ok(true),
                Err(e) if crate::mongo::is_duplicate_key(&e) => Ok(false),
                Err(e) => Err(db_err(e)),
            };
        };
        // Conditional on what was read, the planner's beat included: of
        // two workers taking over one stale turn, one wins.
        let mut filter = doc! {"_id": &id, "state": d.get("state").cloned().unwrap_or(Bson::Null),
        "generation": d.get_i64("generation").unwrap_or(0)};
        match d.get("beat") {
            Some(beat) => filter.insert("beat", beat.clone()),
            None => filter.insert("beat", doc! {"$exists": false}),
        };
        let r = self
            .coll
            .update_one(
                filter,
                doc! {"$set": {"state": planning, "owner": &self.owner, "since": DateTime::now(),
                "beat": 0i64}},
            )
            .await
            .map_err(db_err)?;
        Ok(r.modified_count == 1)
    }

    /// The job document while this worker holds the turn to plan the
    /// generation after `previous`.
    fn planning_turn(&self, previous: i64) -> Document {
        doc! {"_id": self.job_id(), "state": as_bson(JobState::Planning),
        "owner": &self.owner, "generation": previous}
    }

    async fn set_job_complete(&self) -> Result<()> {
        self.coll
            .update_one(
                doc! {"_id": self.job_id()},
                doc! {"$set": {"state": as_bson(JobState::Complete)}},
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn try_claim(
        &self,
        generation: i64,
        token: bson::oid::ObjectId,
    ) -> Result<Option<Claim>> {
        let to_claim = |d: Document| Claim {
            id: d.get_str("_id").unwrap_or_default().to_string(),
            generation,
            token: token.to_hex(),
            work: document::planned(&d),
            attempts: d.get_i32("attempts").unwrap_or(1),
            timeouts: d.get_i32("timeouts").unwrap_or(0).max(0) as u32,
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
                {"state": as_bson(PartitionState::Pending)},
                {"state": as_bson(PartitionState::Running), "lease_until": {"$lt": now}},
                {"state": as_bson(PartitionState::Failed), "failed_by": {"$ne": &self.owner}},
            ],
        };
        let update = doc! {
            "$set": {"state": as_bson(PartitionState::Running), "owner": &self.owner,
                     "lease_until": self.lease_until(), "heartbeat": now, "claim_token": token},
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

    /// The filter that matches `claim`'s partition only while the claim
    /// holds it: same document, same claim token.
    fn mine(claim: &Claim) -> Document {
        // A token that does not parse matches nothing (never a missing one).
        let token = bson::oid::ObjectId::parse_str(&claim.token)
            .unwrap_or_else(|_| bson::oid::ObjectId::new());
        doc! {"_id": &claim.id, "generation": claim.generation, "claim_token": token}
    }

    async fn update_mine(&self, claim: &Claim, update: Document) -> Result<u64> {
        let r = self
            .coll
            .update_one(Self::mine(claim), update)
            .await
            .map_err(db_err)?;
        if r.matched_count == 0 {
            self.not_mine(claim).await?;
        }
        Ok(r.matched_count)
    }

    /// A state change of `claim` matched nothing: another worker took the
    /// partition over after our lease expired (it finishes it; the writes
    /// are idempotent), or the checkpoint changed under the run (an error:
    /// the run can no longer tell what is done).
    async fn not_mine(&self, claim: &Claim) -> Result<()> {
        let current = self
            .coll
            .find_one(doc! {"_id": &claim.id})
            .await
            .map_err(db_err)?;
        match current {
            Some(d) if d.get_i64("generation").ok() == Some(claim.generation) => {
                tracing::warn!(partition = %claim.id, "the partition was taken over by another worker");
                Ok(())
            }
            _ => Err(Error::Checkpoint(format!(
                "partition {} of job `{}` is no longer in the checkpoint collection `{}`: it was \
                 dropped or the run was restarted while this worker ran; nothing is marked complete, \
                 run the job again",
                claim.id,
                self.job,
                self.coll.name()
            ))),
        }
    }

    /// The job document of `generation`, or the error that says it changed.
    async fn job_of(&self, generation: i64) -> Result<Document> {
        let job = self
            .coll
            .find_one(doc! {"_id": self.job_id()})
            .await
            .map_err(db_err)?;
        match job {
            Some(d) if d.get_i64("generation").ok() == Some(generation) => Ok(d),
            _ => Err(Error::Checkpoint(format!(
                "the job `{}` has no run {generation} in the checkpoint collection `{}` any more: \
                 it was dropped or restarted while this worker ran; run the job again",
                self.job,
                self.coll.name()
            ))),
        }
    }
}

#[async_trait]
impl CheckpointStore for MongoStore {
    async fn begin(&self, fingerprint: &str, restart: bool) -> Result<Begin> {
        let id = self.job_id();
        if restart {
            // The partitions go; the job document stays, so that the next
            // run's generation is higher than any a worker still holds.
            self.coll
                .delete_many(doc! {"job": &self.job, "kind": "partition"})
                .await
                .map_err(db_err)?;
            self.set_job_complete().await?;
        }
        let mut watched = None;
        loop {
            let current = self
                .coll
                .find_one(doc! {"_id": &id})
                .await
                .map_err(db_err)?;
            let job_state = current.as_ref().and_then(|d| state::<JobState>(d, "state"));
            let generation = current
                .as_ref()
                .and_then(|d| d.get_i64("generation").ok())
                .unwrap_or(0);
            match job_state {
                Some(JobState::Running) => {
                    let hash = current.as_ref().and_then(|d| d.get_str("config_hash").ok());
                    if hash != Some(fingerprint) {
                        return Err(changed_job(&self.job));
                    }
                    return Ok(Begin::Resume { generation });
                }
                Some(JobState::Planning) => {
                    // The planner renews its turn every third of a lease.
                    // Stale: unrenewed for a whole lease, as this worker's
                    // own monotonic clock measures it (no two machines'
                    // clocks are compared).
                    let beat = current
                        .as_ref()
                        .map(|d| (d.get("owner").cloned(), d.get("beat").cloned(), generation));
                    let seen_since = match &watched {
                        Some((b, at)) if Some(b) == beat.as_ref() => *at,
                        _ => {
                            watched = beat.map(|b| (b, Instant::now()));
                            Instant::now()
                        }
                    };
                    if seen_since.elapsed() < self.lease {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    tracing::warn!(job = %self.job, "the planning worker stopped renewing its turn; planning instead");
                }
                Some(JobState::Complete) | None => {}
            }
            if self.take_planning_turn(current.as_ref()).await? {
                return Ok(Begin::Plan {
                    previous: generation,
                });
            }
        }
    }

    async fn commit_plan(
        &self,
        fingerprint: &str,
        previous: i64,
        partitions: &[Planned],
        window: Option<&Window>,
    ) -> Result<i64> {
        let next = previous + 1;
        let docs: Vec<Document> = partitions
            .iter()
            .map(|p| document::partition(&self.job, p, next))
            .collect();
        let turn = self.planning_turn(previous);
        let lost = || {
            Error::Checkpoint(format!(
                "job `{}`: this worker's planning turn was taken (a restart or another worker) \
                 before its plan was stored; run the job again",
                self.job
            ))
        };
        if self
            .coll
            .count_documents(turn.clone())
            .await
            .map_err(db_err)?
            == 0
        {
            return Err(lost());
        }
        self.coll
            .delete_many(doc! {"job": &self.job, "kind": "partition"})
            .await
            .map_err(db_err)?;
        if !docs.is_empty() {
            self.coll.insert_many(docs).await.map_err(db_err)?;
        }
        let r = self
            .coll
            .update_one(
                turn,
                doc! {"$set": {"state": as_bson(JobState::Running), "generation": next,
                "config_hash": fingerprint, "partitions": partitions.len() as i64,
                "started": DateTime::now(), "window": window.map(Window::to_doc)}},
            )
            .await
            .map_err(db_err)?;
        if r.matched_count == 0 {
            return Err(lost());
        }
        Ok(next)
    }

    async fn renew_plan(&self, previous: i64) -> Result<bool> {
        let r = self
            .coll
            .update_one(
                self.planning_turn(previous),
                doc! {"$inc": {"beat": 1i64}, "$set": {"since": DateTime::now()}},
            )
            .await
            .map_err(db_err)?;
        Ok(r.matched_count == 1)
    }

    async fn abandon_plan(&self, previous: i64) {
        // Only a turn this worker still holds is given back.
        let given = self
            .coll
            .update_one(
                self.planning_turn(previous),
                doc! {"$set": {"state": as_bson(JobState::Complete)}},
            )
            .await;
        if let Err(e) = given {
            tracing::warn!(error = %db_err(e), "cannot give the planning turn back");
        }
    }

    /// Safe to retry: each claim carries a token of its own, so when the
    /// answer to a claim is lost (the server applied it, the connection
    /// dropped), the retry finds the partition it already took instead of
    /// taking a second one and leaving the first orphaned.
    async fn claim(&self, generation: i64) -> Result<Option<Claim>> {
        let token = bson::oid::ObjectId::new();
        patient(|| self.try_claim(generation, token)).await
    }

    async fn heartbeat(&self, claim: &Claim) -> Result<bool> {
        let mut filter = Self::mine(claim);
        filter.insert("state", as_bson(PartitionState::Running));
        let r = self
            .coll
            .update_one(
                filter,
                doc! {"$set": {"lease_until": self.lease_until(), "heartbeat": DateTime::now()}},
            )
            .await
            .map_err(db_err)?;
        Ok(r.matched_count == 1)
    }

    async fn retrying(&self, claim: &Claim, error: &str, timeout: bool) -> Result<()> {
        self.update_mine(
            claim,
            doc! {"$inc": {"attempts": 1i32, "timeouts": timeout as i32},
            "$set": {"last_error": error, "lease_until": self.lease_until()}},
        )
        .await?;
        Ok(())
    }

    async fn done(&self, claim: &Claim, s: &PartitionStats) -> Result<()> {
        self.update_mine(
            claim,
            doc! {"$set": {"state": as_bson(PartitionState::Done), "rows": s.rows as i64,
                     "inserted": s.inserted as i64, "already_present": s.already_present as i64,
                     "replaced": s.replaced as i64, "merged": s.merged as i64,
                     "bytes": s.bytes as i64, "duration_ms": s.duration.as_millis() as i64,
                     "finished": DateTime::now()},
            "$unset": {"lease_until": ""}},
        )
        .await?;
        Ok(())
    }

    async fn failed(&self, claim: &Claim, error: &str) -> Result<()> {
        self.update_mine(
            claim,
            doc! {"$set": {"state": as_bson(PartitionState::Failed), "error": error,
                           "failed_by": &self.owner},
            "$unset": {"lease_until": ""}},
        )
        .await?;
        Ok(())
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        let mut filter = Self::mine(claim);
        filter.insert("state", as_bson(PartitionState::Running));
        let r = self
            .coll
            .update_one(
                filter,
                doc! {"$set": {"state": as_bson(PartitionState::Pending)},
                "$unset": {"lease_until": "", "owner": "", "claim_token": ""}},
            )
            .await
            .map_err(db_err)?;
        if r.matched_count == 0 {
            self.not_mine(claim).await?;
        }
        Ok(())
    }

    async fn split(&self, claim: &Claim, halves: (Range, Range)) -> Result<()> {
        let (a, b) = halves;
        let mut second = document::partition(&self.job, &Planned::range(b), claim.generation);
        second.insert("split_from", &claim.id);
        self.coll.insert_one(second).await.map_err(db_err)?;
        self.coll
            .update_one(
                doc! {"_id": self.job_id(), "generation": claim.generation},
                doc! {"$inc": {"partitions": 1i64}},
            )
            .await
            .map_err(db_err)?;
        self.update_mine(
            claim,
            doc! {"$set": {"hi": a.hi, "state": as_bson(PartitionState::Pending), "timeouts": 0i32},
            "$unset": {"lease_until": "", "owner": "", "claim_token": ""}},
        )
        .await?;
        Ok(())
    }

    async fn complete_if_done(&self, generation: i64) -> Result<bool> {
        let job = self.job_of(generation).await?;
        let planned = job.get_i64("partitions").unwrap_or(i64::MAX) as u64;
        let done = self
            .coll
            .count_documents(
                doc! {"job": &self.job, "kind": "partition", "generation": generation,
                "state": as_bson(PartitionState::Done)},
            )
            .await
            .map_err(db_err)?;
        if done < planned {
            return Ok(false);
        }
        let r = self
            .coll
            .update_one(
                doc! {"_id": self.job_id(), "generation": generation,
                "state": as_bson(JobState::Running)},
                complete(&job),
            )
            .await
            .map_err(db_err)?;
        // Complete only if the job document is still this generation's.
        self.job_of(generation).await?;
        if r.modified_count == 1 {
            history::record_run(&self.coll, &self.job, generation, &job).await;
        }
        Ok(true)
    }

    async fn status(&self) -> Result<Option<JobStatus>> {
        let Some(job) = self
            .coll
            .find_one(doc! {"_id": self.job_id()})
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let generation = job.get_i64("generation").unwrap_or(0);
        let docs: Vec<Document> = self
            .coll
            .find(doc! {"job": &self.job, "kind": "partition", "generation": generation})
            .await
            .map_err(db_err)?
            .try_collect()
            .await
            .map_err(db_err)?;
        let mut partitions: Vec<PartitionStatus> = docs
            .iter()
            .map(|d| PartitionStatus {
                work: document::planned(d),
                state: state(d, "state").unwrap_or(PartitionState::Pending),
                attempts: d.get_i32("attempts").unwrap_or(0),
                rows: d.get_i64("rows").unwrap_or(0),
                owner: d.get_str("owner").ok().map(str::to_string),
                error: match d.get("error").or(d.get("last_error")) {
                    Some(Bson::String(s)) => Some(s.clone()),
                    _ => None,
                },
            })
            .collect();
        partitions.sort_by_key(|p| (p.work.range.null, p.work.range.lo));
        Ok(Some(JobStatus {
            job: self.job.clone(),
            generation,
            state: state(&job, "state").unwrap_or(JobState::Complete),
            partitions,
            window: job.get_document("window").ok().and_then(Window::from_doc),
            watermark: job
                .get_document("watermark")
                .ok()
                .and_then(Watermark::from_doc),
            history: history::recent(&self.coll, &self.job).await?,
        }))
    }

    async fn record(&self, entry: &history::Entry) -> Result<()> {
        self.coll
            .insert_one(entry.to_doc(&self.job))
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

/// The change that marks a job document's generation complete; an
/// incremental generation's window leaves its watermark.
fn complete(job: &Document) -> Document {
    let mut set = doc! {"state": as_bson(JobState::Complete), "finished": DateTime::now()};
    let window = job.get_document("window").ok().and_then(Window::from_doc);
    if let Some(w) = window.as_ref().and_then(Window::watermark) {
        set.insert("watermark", w.to_doc());
    }
    doc! {"$set": set}
}
