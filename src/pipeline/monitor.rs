//! Where a run stands, once a second: for the progress bar or the progress
//! lines of the log, and for the metrics.
//!
//! This worker's counters are read every tick; the generation's partitions
//! (all workers) are read from the checkpoint every [`POLL`], so the
//! progress counts the work of every worker of the job, and its ETA comes
//! from the rows the plan expects (`Planned::rows`) less the rows done.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};

use super::partition::Context;
use crate::checkpoint::{JobStatus, PartitionState};
use crate::memory::Budget;

/// How often the progress is reported.
pub const TICK: Duration = Duration::from_secs(1);
/// How often the checkpoint is read for the partitions of every worker.
pub const POLL: Duration = Duration::from_secs(5);

/// The generation's partitions by state (every worker's), as the checkpoint
/// said at its last reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Partitions {
    pub total: usize,
    pub pending: usize,
    pub running: usize,
    pub done: usize,
    pub failed: usize,
}

impl Partitions {
    fn of(status: &JobStatus) -> Self {
        use PartitionState::*;
        Partitions {
            total: status.partitions.len(),
            pending: status.count(Pending),
            running: status.count(Running),
            done: status.count(Done),
            failed: status.count(Failed),
        }
    }
}

/// Progress so far.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Since this run started.
    pub elapsed: Duration,
    /// Rows this worker read (retried attempts included).
    pub rows_read: u64,
    /// BSON bytes this worker handed to the target.
    pub bson_bytes: u64,
    pub batches: u64,
    /// Partitions this worker finished.
    pub partitions_here: u64,
    /// The generation's partitions; `None` until the checkpoint is read.
    pub partitions: Option<Partitions>,
    /// Rows of done partitions (any worker, any run of the generation) and
    /// rows this worker has read in partitions it has not finished.
    pub rows_done: u64,
    /// The rows the plan expects in all, when it counted them.
    pub rows_expected: Option<u64>,
    /// Rows done per second during this run.
    pub rate: f64,
    /// When the rest should be done at this run's rate.
    pub eta: Option<Duration>,
}

/// Called with the progress every [`TICK`].
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// What the monitor reads.
pub(super) struct Monitor {
    pub ctx: Arc<Context>,
    pub budget: Budget,
    pub generation: i64,
    pub on_progress: ProgressFn,
}

/// The partitions' figures taken from a reading of the checkpoint.
#[derive(Default, Clone, Copy)]
struct Reading {
    partitions: Option<Partitions>,
    rows_done: u64,
    rows_expected: Option<u64>,
}

fn reading(status: Option<&JobStatus>, generation: i64) -> Option<Reading> {
    let status = status.filter(|s| s.generation == generation)?;
    let done = |p: &&crate::checkpoint::PartitionStatus| p.state == PartitionState::Done;
    let expected: Option<u64> = status.partitions.iter().map(|p| p.work.rows).sum();
    Some(Reading {
        partitions: Some(Partitions::of(status)),
        rows_done: status
            .partitions
            .iter()
            .filter(done)
            .map(|p| p.rows.max(0) as u64)
            .sum(),
        rows_expected: expected,
    })
}

/// How long the rest takes at the rate of what was done since `first`:
/// from the rows expected, or else from the partitions left.
fn eta(first: &Progress, now: &Progress) -> Option<Duration> {
    let secs = now.elapsed.saturating_sub(first.elapsed).as_secs_f64();
    if let (Some(p), Some(expected)) = (now.partitions, now.rows_expected) {
        if p.pending + p.running == 0 {
            return Some(Duration::ZERO);
        }
        let rate = now.rows_done.saturating_sub(first.rows_done) as f64 / secs.max(1e-3);
        let left = expected.saturating_sub(now.rows_done) as f64;
        return (rate > 0.0).then(|| Duration::from_secs_f64(left / rate));
    }
    let (p, first) = (now.partitions?, first.partitions?);
    let finished = p.done.saturating_sub(first.done);
    let left = p.pending + p.running;
    (finished > 0).then(|| Duration::from_secs_f64(secs / finished as f64 * left as f64))
}

impl Monitor {
    /// Report every tick until the returned task is dropped or aborted.
    pub fn spawn(self: Arc<Self>, started: Instant) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last = Reading::default();
            let mut first: Option<Progress> = None;
            let mut polled: Option<Instant> = None;
            // Rows done never go back: a partition this worker finishes
            // leaves its unsettled rows at once, but the checkpoint reading
            // counts it only at the next poll.
            let mut high = 0;
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if polled.is_none_or(|at| at.elapsed() >= POLL) {
                    polled = Some(Instant::now());
                    if let Ok(status) = self.ctx.store.status().await {
                        last = reading(status.as_ref(), self.generation).unwrap_or(last);
                    }
                }
                let mut now = self.progress(last, started);
                high = now.rows_done.max(high);
                now.rows_done = high;
                let first = first.get_or_insert_with(|| now.clone());
                now.eta = eta(first, &now);
                now.rate = now.rows_done.saturating_sub(first.rows_done) as f64
                    / now
                        .elapsed
                        .saturating_sub(first.elapsed)
                        .as_secs_f64()
                        .max(1e-3);
                self.publish(&now);
                (self.on_progress)(&now);
            }
        })
    }

    /// The progress at the end of the run, from the checkpoint's last
    /// `status`, published to the metrics.
    pub fn last(&self, status: Option<&JobStatus>, started: Instant) -> Progress {
        let last = reading(status, self.generation).unwrap_or_default();
        let now = self.progress(last, started);
        self.publish(&now);
        now
    }

    fn progress(&self, last: Reading, started: Instant) -> Progress {
        let c = &self.ctx.counters;
        Progress {
            elapsed: started.elapsed(),
            rows_read: c.rows.load(Ordering::Relaxed),
            bson_bytes: c.bytes.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            partitions_here: c.partitions.load(Ordering::Relaxed),
            partitions: last.partitions,
            rows_done: last.rows_done + c.unsettled.load(Ordering::Relaxed),
            rows_expected: last.rows_expected,
            rate: 0.0,
            eta: None,
        }
    }

    /// The figures as metrics (a no-op unless `--metrics-addr` installed a
    /// recorder).
    fn publish(&self, p: &Progress) {
        counter!("shiftload_rows_read_total").absolute(p.rows_read);
        counter!("shiftload_bson_bytes_total").absolute(p.bson_bytes);
        counter!("shiftload_batches_total").absolute(p.batches);
        counter!("shiftload_partitions_finished_here_total").absolute(p.partitions_here);
        gauge!("shiftload_rows_done").set(p.rows_done as f64);
        if let Some(expected) = p.rows_expected {
            gauge!("shiftload_rows_expected").set(expected as f64);
        }
        if let Some(n) = p.partitions {
            for (state, count) in [
                ("pending", n.pending),
                ("running", n.running),
                ("done", n.done),
                ("failed", n.failed),
            ] {
                gauge!("shiftload_partitions", "state" => state).set(count as f64);
            }
        }
        gauge!("shiftload_memory_budget_bytes").set(self.budget.total().0 as f64);
        gauge!("shiftload_memory_in_flight_bytes").set(self.budget.in_flight() as f64);
        if let Some(rss) = crate::memory::peak_rss_bytes() {
            gauge!("shiftload_peak_rss_bytes").set(rss as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, rows_done: u64, done: usize) -> Progress {
        Progress {
            elapsed: Duration::from_secs(secs),
            rows_done,
            partitions: Some(Partitions {
                total: 10,
                pending: 10 - done,
                done,
                ..Partitions::default()
            }),
            ..Progress::default()
        }
    }

    #[test]
    fn the_eta_comes_from_the_rows_expected_at_this_runs_rate() {
        // A resumed run: 400 rows were done before it; 600 in 10 s since.
        let first = Progress {
            rows_expected: Some(10_000),
            ..at(0, 400, 1)
        };
        let now = Progress {
            rows_expected: Some(10_000),
            ..at(10, 1_000, 2)
        };
        assert_eq!(eta(&first, &now), Some(Duration::from_secs(150)));
        let finished = Progress {
            rows_expected: Some(10_000),
            ..at(20, 9_000, 10)
        };
        assert_eq!(eta(&first, &finished), Some(Duration::ZERO));
    }

    #[test]
    fn without_a_row_count_the_eta_comes_from_the_partitions_left() {
        let (first, now) = (at(0, 0, 0), at(30, 0, 3));
        assert_eq!(eta(&first, &now), Some(Duration::from_secs(70)));
        // Nothing finished yet: no ETA rather than a made-up one.
        assert_eq!(eta(&first, &at(30, 0, 0)), None);
    }
}
