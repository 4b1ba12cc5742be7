//! The checkpoint in this process's memory: the same rules as the MongoDB
//! store, for tests of the pipeline and for runs that need no resume.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    changed_job, history, Begin, CheckpointStore, Claim, JobState, JobStatus, PartitionState,
    PartitionStats, PartitionStatus, Planned, Watermark, Window,
};
use crate::error::{Error, Result};
use crate::plan::Range;

struct Partition {
    work: Planned,
    state: PartitionState,
    attempts: i32,
    timeouts: u32,
    owner: Option<String>,
    /// The token of the claim that holds the partition.
    token: Option<String>,
    lease_until: Option<Instant>,
    failed_by: Option<String>,
    rows: i64,
    written: PartitionStats,
    error: Option<String>,
}

#[derive(Default)]
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
    /// By id; ids sort as the MongoDB store claims (null keys last).
    partitions: BTreeMap<(bool, i64), (String, Partition)>,
    /// When the generation was planned.
    started: Option<bson::DateTime>,
    /// Runs and reconciles, oldest first.
    history: Vec<history::Entry>,
}

/// A checkpoint store in memory. Clones of one store share its state when
/// wrapped in an `Arc`; each worker has its own `owner`.
pub struct MemoryStore {
    job: String,
    owner: String,
    lease: Duration,
    state: std::sync::Arc<Mutex<State>>,
}

impl MemoryStore {
    pub fn new(job: &str, owner: &str, lease: Duration) -> Self {
        MemoryStore {
            job: job.into(),
            owner: owner.into(),
            lease,
            state: Default::default(),
        }
    }

    /// Another worker of the same job, sharing this store's state.
    pub fn worker(&self, owner: &str) -> Self {
        MemoryStore {
            job: self.job.clone(),
            owner: owner.into(),
            lease: self.lease,
            state: self.state.clone(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("not poisoned"))
    }

    /// Apply `f` to the claimed partition if this worker still owns it; an
    /// error when the partition is gone (the run was restarted under it).
    fn with_mine(&self, claim: &Claim, f: impl FnOnce(&mut Partition)) -> Result<()> {
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
        loop {
            let turn = self.with(|s| {
                if restart {
                    s.partitions.clear();
                    s.job = Some(JobState::Complete);
                }
                match s.job {
                    Some(JobState::Running) if s.fingerprint != fingerprint => {
                        Some(Err(changed_job(&self.job)))
                    }
                    Some(JobState::Running) => Some(Ok(Begin::Resume {
                        generation: s.generation,
                    })),
                    Some(JobState::Planning) => None,
                    Some(JobState::Complete) | None => {
                        s.job = Some(JobState::Planning);
                        Some(Ok(Begin::Plan {
                            previous: s.generation,
                        }))
                    }
                }
            });
            match turn {
                Some(r) => return r,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
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
        let docs: Vec<_> = partitions
            .iter()
            .map(|p| self.partition(p.clone(), next))
            .collect();
        self.with(|s| {
            s.partitions = docs
                .into_iter()
                .map(|(id, p)| ((p.work.range.null, p.work.range.lo), (id, p)))
                .collect();
            s.generation = next;
            s.planned = s.partitions.len();
            s.fingerprint = fingerprint.into();
            s.window = window.cloned();
            s.started = Some(bson::DateTime::now());
            s.job = Some(JobState::Running);
        });
        Ok(next)
    }

    async fn renew_plan(&self, previous: i64) -> Result<bool> {
        Ok(self.with(|s| s.job == Some(JobState::Planning) && s.generation == previous))
    }

    async fn abandon_plan(&self, _previous: i64) {
        self.with(|s| s.job = Some(JobState::Complete));
    }

    async fn claim(&self, generation: i64) -> Result<Option<Claim>> {
        let now = Instant::now();
        Ok(self.with(|s| {
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
            p.lease_until = Some(now + self.lease);
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
        }))
    }

    async fn heartbeat(&self, claim: &Claim) -> Result<bool> {
        let mut ours = false;
        self.with_mine(claim, |p| {
            if p.state == PartitionState::Running {
                p.lease_until = Some(Instant::now() + self.lease);
                ours = true;
            }
        })?;
        Ok(ours)
    }

    async fn retrying(&self, claim: &Claim, error: &str, timeout: bool) -> Result<()> {
        self.with_mine(claim, |p| {
            p.attempts += 1;
            p.timeouts += timeout as u32;
            p.error = Some(error.into());
            p.lease_until = Some(Instant::now() + self.lease);
        })
    }

    async fn done(&self, claim: &Claim, stats: &PartitionStats) -> Result<()> {
        self.with_mine(claim, |p| {
            p.state = PartitionState::Done;
            p.rows = stats.rows as i64;
            p.written = *stats;
            p.lease_until = None;
        })
    }

    async fn failed(&self, claim: &Claim, error: &str) -> Result<()> {
        self.with_mine(claim, |p| {
            p.state = PartitionState::Failed;
            p.error = Some(error.into());
            p.failed_by = Some(self.owner.clone());
            p.lease_until = None;
        })
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
    }

    async fn split(&self, claim: &Claim, halves: (Range, Range)) -> Result<()> {
        let (a, b) = halves;
        let (id, second) = self.partition(Planned::range(b), claim.generation);
        self.with_mine(claim, |p| {
            p.work.range.hi = a.hi;
            p.state = PartitionState::Pending;
            p.timeouts = 0;
            p.owner = None;
            p.token = None;
            p.lease_until = None;
        })?;
        self.with(|s| {
            s.partitions.insert((b.null, b.lo), (id, second));
            s.planned += 1;
        });
        Ok(())
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
                if let Some(w) = s.window.as_ref().and_then(Window::watermark) {
                    s.watermark = Some(w);
                }
            }
            Ok(complete)
        })
    }

    async fn status(&self) -> Result<Option<JobStatus>> {
        Ok(self.with(|s| {
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
        }))
    }

    async fn record(&self, entry: &history::Entry) -> Result<()> {
        self.with(|s| s.history.push(entry.clone()));
        Ok(())
    }
}
