//! The worker loop: claim partitions (up to `parallel` at once), run each,
//! and wait while other workers hold the rest.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::partition::{run_partition, Context, PartitionEnd};
use crate::error::{Class, Error, Result};
use crate::retry::patient;
use crate::sink::WriteStats;

/// What this worker's partitions came to.
#[derive(Default)]
pub(super) struct Tally {
    pub writes: WriteStats,
    pub failures: Vec<String>,
    pub stop: Option<Error>,
    pub interrupted: bool,
}

impl Tally {
    fn record(&mut self, end: PartitionEnd, ctx: &Context) {
        match end {
            PartitionEnd::Done(w) | PartitionEnd::Released(w) => {
                count_documents(&w);
                self.writes.add(w)
            }
            PartitionEnd::Failed(e) => self.failures.push(e),
            PartitionEnd::Split => {}
            PartitionEnd::Stop(e) => {
                // Stop taking partitions; the running ones give theirs back.
                ctx.cancel.cancel();
                self.stop.get_or_insert(e);
            }
        }
    }
}

/// What a partition wrote, in the `shiftload_documents_total` metric.
fn count_documents(w: &WriteStats) {
    for (result, n) in [
        ("inserted", w.inserted),
        ("already_present", w.already_present),
        ("replaced", w.replaced),
        ("merged", w.merged),
        ("kept", w.kept),
        ("rejected", w.rejected),
    ] {
        metrics::counter!("shiftload_documents_total", "result" => result).increment(n);
    }
    metrics::counter!("shiftload_requests_total").increment(w.requests);
}

fn joined(r: std::result::Result<PartitionEnd, tokio::task::JoinError>) -> PartitionEnd {
    r.unwrap_or_else(|e| PartitionEnd::Stop(Error::Internal(format!("partition task: {e}"))))
}

/// Claim and run partitions of `generation` until none is left open (or
/// the run is cancelled, or stops on an error).
pub(super) async fn work(ctx: Arc<Context>, generation: i64, parallel: usize) -> Result<Tally> {
    let mut tasks: JoinSet<PartitionEnd> = JoinSet::new();
    let mut tally = Tally::default();
    loop {
        if ctx.cancel.is_cancelled() {
            tally.interrupted |= tally.stop.is_none();
            break;
        }
        while tasks.len() < parallel {
            match ctx.store.claim(generation).await {
                Ok(Some(claim)) => {
                    let ctx = ctx.clone();
                    tasks.spawn(async move { run_partition(&ctx, claim).await });
                }
                Ok(None) => break,
                Err(e) if e.class() == Class::Transient => {
                    tracing::warn!(error = %e, "checkpoint unavailable, retrying");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if tasks.is_empty() {
            // Nothing to claim: finished, or other workers hold the rest.
            let status = patient(|| ctx.store.status()).await?;
            let Some(status) = status.filter(|s| s.generation == generation) else {
                return Err(Error::Checkpoint(format!(
                    "run {generation} of the job is gone from the checkpoint: it was dropped or \
                     restarted while this worker ran; run the job again"
                )));
            };
            if status.open() == 0 {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = ctx.cancel.cancelled() => {}
            }
            continue;
        }
        tokio::select! {
            Some(end) = tasks.join_next() => tally.record(joined(end), &ctx),
            _ = ctx.cancel.cancelled() => {}
        }
    }
    while let Some(end) = tasks.join_next().await {
        tally.record(joined(end), &ctx);
    }
    Ok(tally)
}
