//! The checkpoint as one state with the same rules as the MongoDB store:
//! kept in this process's memory (tests of the pipeline, runs that need no
//! resume), or persisted in an object store beside an export's parts
//! ([`MemoryStore::in_objects`]), where every change is a new version
//! written only if no other worker wrote it first (see
//! [`super::objects`]), so workers on several machines share it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::objects::Versions;
use super::{
    changed_job, history, Begin, CheckpointStore, Claim, JobState, JobStatus, PartitionState,
    PartitionStats, PartitionStatus, Planned, Watermark, Window,
};
use crate::error::{Error, Result};
use crate::objects::Location;
use crate::plan::Range;

#[derive(Clone, Serialize, Deserialize)]
struct Partition {
    work: Planned,
    state: PartitionState,
    attempts: i32,
    timeouts: u32,
    owner: Option<String>,
    /// The token of the claim that holds the partition.
    token: Option<String>,
    /// When the lease ends, in milliseconds since the epoch (the clock of
    /// the worker that took or renewed it, as the MongoDB store does).
    lease_until: Option<i64>,
    failed_by: Option<String>,
    rows: i64,
    written: PartitionStats,
    error: Option<String>,
}

#[derive(Default, Clone, Serialize, Deserialize)]
struct State {
    generation: i64,
    job: Option<JobState>,
    fingerprint: String,
    window: Option<Window>,
    watermark: Option<Watermark>,
    /// Partitions of the generation: planned, plus one per split.
    planned: usize,
    /// Claims made so far: the next claim's token.
    claims: u64,
    /// The worker holding the planning turn, and its renewals.
    planner: Option<String>,
    beat: u64,
    /// By key; ids sort as the MongoDB store claims (null keys last).
    #[serde(with = "by_key")]
    partitions: BTreeMap<(bool, i64), (String, Partition)>,
    /// When the generation was planned.
    started: Option<bson::DateTime>,
    /// Runs and reconciles, oldest first.
    history: Vec<history::Entry>,
}

/// The partitions as a list (a map keyed by a pair has no JSON form).
mod by_key {
    use super::*;

    type Map = BTreeMap<(bool, i64), (String, Partition)>;

    pub fn serialize<S: serde::Serializer>(
        map: &Map,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Map, D::Error> {
        let list: Vec<(String, Partition)> = Deserialize::deserialize(d)?;
        Ok(list
            .into_iter()
            .map(|(id, p)| ((p.work.range.null, p.work.range.lo), (id, p)))
            .collect())
    }
}

fn now_ms() -> i64 {
    bson::DateTime::now().timestamp_millis()
}

enum Backing {
    Memory(Arc<Mutex<State>>),
    Objects(Arc<Versions>),
}

/// A checkpoint store in memory or in an object store. Workers of one job
/// share its state through [`MemoryStore::worker`] (in memory) or the
/// location (in objects); each has its own `owner`.
pub struct MemoryStore {
    job: String,
    owner: String,
    lease: Duration,
    backing: Backing,
}

impl MemoryStore {
    pub fn new(job: &str, owner: &str, lease: Duration) -> Self {
        MemoryStore {
            job: job.into(),
            owner: owner.into(),
            lease,
            backing: Backing::Memory(Default::default()),
        }
    }

    /// The job's checkpoint kept under `<location>_shiftload/<job>/`.
    pub fn in_objects(location: &Location, job: &str, owner: &str, lease: Duration) -> Self {
        MemoryStore {
            job: job.into(),
            owner: owner.into(),
            lease,
            backing: Backing::Objects(Arc::new(Versions::new(location, job, owner))),
        }
    }

    /// Another worker of the same job, sharing this store's state.
    pub fn worker(&self, owner: &str) -> Self {
        MemoryStore {
            job: self.job.clone(),
            owner: owner.into(),
            lease: self.lease,
            backing: match &self.backing {
                Backing::Memory(m) => Backing::Memory(m.clone()),
                Backing::Objects(v) => Backing::Objects(v.clone()),
            },
        }
    }

    /// Apply `f` to the state. In objects: to the latest version, written
    /// back as the next one only if `f` changed it; when another worker
    /// wrote that version first, `f` runs again on theirs.
    async fn with<T>(&self, mut f: impl FnMut(&mut State) -> T) -> Result<T> {
        match &self.backing {
            Backing::Memory(m) => Ok(f(&mut m.lock().expect("not poisoned"))),
            Backing::Objects(v) => v.change(f).await,
        }
    }

    /// Apply `f` to the claimed partition if this worker still owns it; an
    /// error when the partition is gone (the run was restarted under it).
    async fn with_mine(&self, claim: &Claim, mut f: impl FnMut(&mut Partition)) -> Result<()> {
        self.with(|s| {
            let key = (claim.work.range.null, claim.work.range.lo);
            match s.partitions.get_mut(&key) {
                Some((_, p)) if s.generation == claim.generation => {
                    if p.token.as_deref() == Some(&claim.token) {
                        f(p);
                    }
                    Ok(())
                }
                _ => Err(Error::Checkpoint(format!(
                    "partition {} is gone: the run was restarted under this worker",
                    claim.id
                ))),
            }
        })
        .await?
    }

    fn partition(&self, work: Planned, generation: i64) -> (String, Partition) {
        (
            work.id(&self.job, generation),
            Partition {
                work,
                state: PartitionState::Pending,
                attempts: 0,
                timeouts: 0,
                owner: None,
                token: None,
                lease_until: None,
                failed_by: None,
                rows: 0,
                written: PartitionStats::default(),
                error: None,
            },
        )
    }
}

#[async_trait]
impl CheckpointStore for MemoryStore {
    async fn begin(&self, fingerprint: &str, restart: bool) -> Result<Begin> {
        let mut restart = restart;
        // The planning turn's renewals as last seen, and since when (this
        // worker's own clock): unrenewed for a whole lease, it is stale.
        let mut seen: Option<(u64, Instant)> = None;
        loop {
            let stale =
                |beat: u64| seen.is_some_and(|(b, at)| b == beat && at.elapsed() >= self.lease);
            let turn = self
                .with(|s| {
                    if restart {
                        s.partitions.clear();
                        s.job = Some(JobState::Complete);
                        s.planner = None;
                    }
                    match s.job {
                        Some(JobState::Running) if s.fingerprint != fingerprint => {
                            Some(Err(changed_job(&self.job)))
                        }
                        Some(JobState::Running) => Some(Ok(Begin::Resume {
                            generation: s.generation,
                        })),
                        Some(JobState::Planning) if !stale(s.beat) => None,
                        Some(JobState::Planning | JobState::Complete) | None => {
                            s.job = Some(JobState::Planning);
                            s.planner = Some(self.owner.clone());
                            s.beat += 1;
                            Some(Ok(Begin::Plan {
                                previous: s.generation,
                            }))
                        }
                    }
                })
                .await?;
            restart = false;
            match turn {
                Some(r) => return r,
                None => {
                    let beat = self.with(|s| s.beat).await?;
                    if seen.is_none_or(|(b, _)| b != beat) {
                        seen = Some((beat, Instant::now()));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
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
        let docs: BTreeMap<_, _> = partitions
            .iter()
            .map(|p| self.partition(p.clone(), next))
            .map(|(id, p)| ((p.work.range.null, p.work.range.lo), (id, p)))
            .collect();
        self.with(|s| {
            if !self.holds_turn(s, previous) {
                return Err(Error::Checkpoint(
                    "this worker's planning turn was taken by another worker or a restart \
                     while it planned; run the job again"
                        .into(),
                ));
            }
            s.partitions = docs.clone();
            s.generation = next;
            s.planned = s.partitions.len();
            s.fingerprint = fingerprint.into();
            s.window = window.cloned();
            s.started = Some(bson::DateTime::now());
            s.job = Some(JobState::Running);
            s.planner = None;
            Ok(next)
        })
        .await?
    }

    async fn renew_plan(&self, previous: i64) -> Result<bool> {
        self.with(|s| {
            let mine = self.holds_turn(s, previous);
            s.beat += mine as u64;
            mine
        })
        .await
    }

    async fn abandon_plan(&self, previous: i64) {
        let abandoned = self
            .with(|s| {
                if self.holds_turn(s, previous) {
                    s.job = Some(JobState::Complete);
                    s.planner = None;
                }
            })
            .await;
        if let Err(e) = abandoned {
            tracing::warn!(error = %e, "cannot give the planning turn back");
        }
    }

    async fn claim(&self, generation: i64) -> Result<Option<Claim>> {
        let now = now_ms();
        let lease = self.lease.as_millis() as i64;
        self.with(|s| {
            if s.generation != generation {
                return None;
            }
            let (id, p) = s.partitions.values_mut().find(|(_, p)| match p.state {
                PartitionState::Pending => true,
                PartitionState::Running => p.lease_until.is_some_and(|l| l < now),
                PartitionState::Failed => p.failed_by.as_deref() != Some(&self.owner),
                PartitionState::Done => false,
            })?;
            p.state = PartitionState::Running;
            p.owner = Some(self.owner.clone());
            p.lease_until = Some(now + lease);
            p.attempts += 1;
            s.claims += 1;
            let token = s.claims.to_string();
            p.token = Some(token.clone());
            Some(Claim {
                id: id.clone(),
                generation,
                token,
                work: p.work.clone(),
                attempts: p.attempts,
                timeouts: p.timeouts,
            })
        })
        .await
    }

    async fn heartbeat(&self, claim: &Claim) -> Result<bool> {
        let mut ours = false;
        let until = now_ms() + self.lease.as_millis() as i64;
        self.with_mine(claim, |p| {
            ours = p.state == PartitionState::Running;
            if ours {
                p.lease_until = Some(until);
            }
        })
        .await?;
        Ok(ours)
    }

    async fn retrying(&self, claim: &Claim, error: &str, timeout: bool) -> Result<()> {
        let until = now_ms() + self.lease.as_millis() as i64;
        self.with_mine(claim, |p| {
            p.attempts += 1;
            p.timeouts += timeout as u32;
            p.error = Some(error.into());
            p.lease_until = Some(until);
        })
        .await
    }

    async fn done(&self, claim: &Claim, stats: &PartitionStats) -> Result<()> {
        self.with_mine(claim, |p| {
            p.state = PartitionState::Done;
            p.rows = stats.rows as i64;
            p.written = *stats;
            p.lease_until = None;
        })
        .await
    }

    async fn failed(&self, claim: &Claim, error: &str) -> Result<()> {
        self.with_mine(claim, |p| {
            p.state = PartitionState::Failed;
            p.error = Some(error.into());
            p.failed_by = Some(self.owner.clone());
            p.lease_until = None;
        })
        .await
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        self.with_mine(claim, |p| {
            if p.state == PartitionState::Running {
                p.state = PartitionState::Pending;
                p.owner = None;
                p.token = None;
                p.lease_until = None;
            }
        })
        .await
    }

    async fn split(&self, claim: &Claim, halves: (Range, Range)) -> Result<()> {
        let (a, b) = halves;
        let (id, second) = self.partition(Planned::range(b), claim.generation);
        let key = (claim.work.range.null, claim.work.range.lo);
        self.with(|s| {
            let mine = matches!(s.partitions.get(&key),
                Some((_, p)) if s.generation == claim.generation
                    && p.token.as_deref() == Some(&claim.token));
            if !mine {
                // Gone (an error) or taken over (left to its new holder).
                return match s.partitions.contains_key(&key) && s.generation == claim.generation {
                    true => Ok(()),
                    false => Err(Error::Checkpoint(format!(
                        "partition {} is gone: the run was restarted under this worker",
                        claim.id
                    ))),
                };
            }
            let (_, p) = s.partitions.get_mut(&key).expect("checked");
            p.work.range.hi = a.hi;
            p.state = PartitionState::Pending;
            p.timeouts = 0;
            p.owner = None;
            p.token = None;
            p.lease_until = None;
            s.partitions
                .insert((b.null, b.lo), (id.clone(), second.clone()));
            s.planned += 1;
            Ok(())
        })
        .await?
    }

    async fn complete_if_done(&self, generation: i64) -> Result<bool> {
        self.with(|s| {
            if s.generation != generation {
                return Err(Error::Checkpoint(format!(
                    "run {generation} was replaced by run {}",
                    s.generation
                )));
            }
            let done = s
                .partitions
                .values()
                .filter(|(_, p)| p.state == PartitionState::Done)
                .count();
            let complete = done == s.planned;
            if complete && s.job == Some(JobState::Running) {
                s.job = Some(JobState::Complete);
                let written = history::total(s.partitions.values().map(|(_, p)| &p.written));
                let full = s.window.as_ref().is_none_or(Window::is_full);
                let started = s.started.unwrap_or_else(bson::DateTime::now);
                let entry = history::Entry::run(generation, full, started, written);
                s.history.push(entry);
                trim_history(&mut s.history);
                if let Some(w) = s.window.as_ref().and_then(Window::watermark) {
                    s.watermark = Some(w);
                }
            }
            Ok(complete)
        })
        .await?
    }

    async fn status(&self) -> Result<Option<JobStatus>> {
        self.with(|s| {
            let state = s.job?;
            Some(JobStatus {
                job: self.job.clone(),
                generation: s.generation,
                state,
                partitions: s
                    .partitions
                    .values()
                    .map(|(_, p)| PartitionStatus {
                        work: p.work.clone(),
                        state: p.state,
                        attempts: p.attempts,
                        rows: p.rows,
                        owner: p.owner.clone(),
                        error: p.error.clone(),
                    })
                    .collect(),
                window: s.window.clone(),
                watermark: s.watermark.clone(),
                history: s
                    .history
                    .iter()
                    .rev()
                    .take(history::SHOWN)
                    .cloned()
                    .collect(),
            })
        })
        .await
    }

    async fn record(&self, entry: &history::Entry) -> Result<()> {
        self.with(|s| {
            s.history.push(entry.clone());
            trim_history(&mut s.history);
        })
        .await
    }
}

impl MemoryStore {
    fn holds_turn(&self, s: &State, previous: i64) -> bool {
        s.job == Some(JobState::Planning)
            && s.generation == previous
            && s.planner.as_deref() == Some(&self.owner)
    }
}

/// The history kept: the last hundred entries (`status` shows the last
/// [`history::SHOWN`]).
fn trim_history(h: &mut Vec<history::Entry>) {
    let excess = h.len().saturating_sub(100);
    h.drain(..excess);
}
