//! Durable progress: a job's generations and partitions, shared by every
//! worker of the job.
//!
//! A **generation** is one complete pass over the job's result. Its
//! partitions go `pending → running (owner, lease) → done (rows, bytes)`,
//! or `failed (error)`; a running partition's lease is renewed by a
//! heartbeat, and one whose lease expired (its worker was killed) is claimed
//! again. A finished generation is not done again: the next run plans a new
//! one (a fresh copy). An unfinished one is resumed: only partitions not
//! done are transferred.
//!
//! [`CheckpointStore`] is the seam; [`mongo::MongoStore`] keeps the state in
//! a collection of the target database (several workers on several machines
//! share it), [`memory::MemoryStore`] in this process (tests, dry runs).

mod document;
pub mod history;
pub mod memory;
pub mod mongo;
mod objects;
mod window;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use crate::plan::Planned;
use crate::plan::Range;

pub use memory::MemoryStore;
pub use mongo::MongoStore;
pub use window::{Watermark, Window};

/// Where a partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionState {
    Pending,
    Running,
    Done,
    Failed,
}

impl PartitionState {
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionState::Pending => "pending",
            PartitionState::Running => "running",
            PartitionState::Done => "done",
            PartitionState::Failed => "failed",
        }
    }

    /// Whether no worker will take the partition up again in this run.
    pub fn is_final(self) -> bool {
        matches!(self, PartitionState::Done | PartitionState::Failed)
    }
}

impl fmt::Display for PartitionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job's current generation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// A worker is planning the next generation.
    Planning,
    Running,
    Complete,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobState::Planning => "planning",
            JobState::Running => "running",
            JobState::Complete => "complete",
        })
    }
}

/// A partition claimed by this worker.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: String,
    pub generation: i64,
    /// This claim's own token: every later change of the partition is
    /// conditional on it, so a worker whose claim was taken over (or whose
    /// run was restarted) can change nothing.
    pub token: String,
    pub work: Planned,
    pub attempts: i32,
    pub timeouts: u32,
}

/// What a finished partition wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStats {
    pub rows: u64,
    pub inserted: u64,
    pub already_present: u64,
    pub replaced: u64,
    pub merged: u64,
    pub bytes: u64,
    pub duration: Duration,
}

impl PartitionStats {
    /// The counts of `o` added (durations are not).
    pub fn add(&mut self, o: &PartitionStats) {
        self.rows += o.rows;
        self.inserted += o.inserted;
        self.already_present += o.already_present;
        self.replaced += o.replaced;
        self.merged += o.merged;
        self.bytes += o.bytes;
    }
}

/// One partition as `status` shows it.
#[derive(Debug, Clone)]
pub struct PartitionStatus {
    pub work: Planned,
    pub state: PartitionState,
    pub attempts: i32,
    pub rows: i64,
    pub owner: Option<String>,
    pub error: Option<String>,
}

/// Where a job stands.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub job: String,
    pub generation: i64,
    pub state: JobState,
    pub partitions: Vec<PartitionStatus>,
    /// What this generation reads, for an incremental job.
    pub window: Option<Window>,
    /// What the last complete generation of an incremental job left.
    pub watermark: Option<Watermark>,
    /// The last runs and reconciles, newest first (at most
    /// [`history::SHOWN`]).
    pub history: Vec<history::Entry>,
}

impl JobStatus {
    pub fn count(&self, state: PartitionState) -> usize {
        self.partitions.iter().filter(|p| p.state == state).count()
    }

    /// Partitions some worker may still take up.
    pub fn open(&self) -> usize {
        self.partitions
            .iter()
            .filter(|p| !p.state.is_final())
            .count()
    }
}

/// The outcome of [`CheckpointStore::begin`].
#[derive(Debug)]
pub enum Begin {
    /// An unfinished generation with the same job fingerprint: join it.
    Resume { generation: i64 },
    /// This worker holds the planning turn for the generation after
    /// `previous`: plan, then [`CheckpointStore::commit_plan`] (or
    /// [`CheckpointStore::abandon_plan`]).
    Plan { previous: i64 },
}

/// The state of one job's runs, shared by its workers. Every method is
/// safe to call from several workers at once.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Join the job's unfinished generation, or take the turn to plan the
    /// next one when the last is complete (or there is none). Waits while
    /// another worker plans. `restart` discards an unfinished generation.
    /// An unfinished generation of a different `fingerprint` is an error.
    async fn begin(&self, fingerprint: &str, restart: bool) -> Result<Begin>;

    /// Store the plan made in the planning turn: the partitions, pending,
    /// and the window of an incremental job; returns the new generation.
    async fn commit_plan(
        &self,
        fingerprint: &str,
        previous: i64,
        partitions: &[Planned],
        window: Option<&Window>,
    ) -> Result<i64>;

    /// Renew the planning turn while planning (every third of a lease);
    /// false when the turn is no longer this worker's.
    async fn renew_plan(&self, previous: i64) -> Result<bool>;

    /// Give the planning turn back after planning failed (when it is still
    /// this worker's).
    async fn abandon_plan(&self, previous: i64);

    /// Claim the next partition: pending, or running under an expired
    /// lease, or failed by another worker. `None` when there is none now.
    async fn claim(&self, generation: i64) -> Result<Option<Claim>>;

    /// Renew the lease; false when the partition is no longer ours (our
    /// lease expired and another worker took it).
    async fn heartbeat(&self, claim: &Claim) -> Result<bool>;

    /// Record another attempt of a partition we hold, and whether the
    /// error was a statement timeout.
    async fn retrying(&self, claim: &Claim, error: &str, timeout: bool) -> Result<()>;

    async fn done(&self, claim: &Claim, stats: &PartitionStats) -> Result<()>;

    async fn failed(&self, claim: &Claim, error: &str) -> Result<()>;

    /// Give a partition back unfinished (the run is stopping): pending.
    async fn release(&self, claim: &Claim) -> Result<()>;

    /// Replace a partition by its two halves, both pending.
    async fn split(&self, claim: &Claim, halves: (Range, Range)) -> Result<()>;

    /// Mark the generation complete if every partition is done; its
    /// window's watermark becomes the job's in the same change. The worker
    /// whose change marked it complete records the run in the history.
    async fn complete_if_done(&self, generation: i64) -> Result<bool>;

    /// Add `entry` (a reconcile) to the job's history.
    async fn record(&self, entry: &history::Entry) -> Result<()>;

    /// The job's current generation and its partitions; `None` when the
    /// job never ran.
    async fn status(&self) -> Result<Option<JobStatus>>;
}

/// Join the job's unfinished generation, or plan the next one with `plan`
/// (its partitions, and the window of an incremental job). Returns the
/// generation and whether it was resumed.
pub async fn begin<F, Fut>(
    store: &dyn CheckpointStore,
    fingerprint: &str,
    restart: bool,
    lease: Duration,
    plan: F,
) -> Result<(i64, bool)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Planned>, Option<Window>)>>,
{
    match store.begin(fingerprint, restart).await? {
        Begin::Resume { generation } => Ok((generation, true)),
        Begin::Plan { previous } => match planning(store, previous, lease, plan()).await {
            Ok((partitions, window)) => {
                let generation = store
                    .commit_plan(fingerprint, previous, &partitions, window.as_ref())
                    .await?;
                Ok((generation, false))
            }
            Err(e) => {
                store.abandon_plan(previous).await;
                Err(e)
            }
        },
    }
}

/// Run `plan` while renewing the planning turn every third of `lease`, so
/// that however long it takes (a long UNLOAD), no other worker plans again
/// under it; a turn found taken ends planning with an error.
async fn planning<T, Fut>(
    store: &dyn CheckpointStore,
    previous: i64,
    lease: Duration,
    plan: Fut,
) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let renew = async {
        loop {
            tokio::time::sleep(lease.div_f64(3.0)).await;
            match store.renew_plan(previous).await {
                Ok(true) => {}
                Ok(false) => {
                    return crate::error::Error::Checkpoint(
                        "this worker's planning turn was taken by another worker or a restart \
                         while it planned; run the job again"
                            .into(),
                    )
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the planning turn"),
            }
        }
    };
    tokio::select! {
        planned = plan => planned,
        lost = renew => Err(lost),
    }
}

/// The error for an unfinished run begun with another job file.
pub(crate) fn changed_job(job: &str) -> crate::error::Error {
    crate::error::Error::config(
        "job",
        format!(
            "the job `{job}` changed since its unfinished run began (source, query, mapping \
             or partitioning); finish it with the previous job file, or start over with \
             `shiftload run --restart`"
        ),
    )
}
