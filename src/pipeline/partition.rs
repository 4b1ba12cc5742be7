//! One claimed partition: attempts, heartbeat, and the transfer itself
//! (source → sink, every write awaited).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CheckpointStore, Claim, PartitionStats};
use crate::error::{Class, Error, Result};
use crate::plan::Range;
use crate::retry::{decide, patient, Decision, RetryConfig};
use crate::sink::{Sink, WriteStats};
use crate::source::{Source, SourceBatch};

/// What every partition task of a run shares.
pub(super) struct Context {
    pub source: Arc<dyn Source>,
    pub sink: Arc<dyn Sink>,
    pub store: Arc<dyn CheckpointStore>,
    pub retry: RetryConfig,
    pub lease: Duration,
    pub cancel: CancellationToken,
    pub counters: Counters,
}

#[derive(Default)]
pub(super) struct Counters {
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    pub batches: AtomicU64,
    pub partitions: AtomicU64,
    pub retries: AtomicU64,
    /// Rows read by attempts still going on.
    pub unsettled: AtomicU64,
}

/// Time spent in a stage, in the `shiftload_stage_seconds` metric.
fn busy(stage: &'static str, since: Instant) {
    metrics::histogram!("shiftload_stage_seconds", "stage" => stage)
        .record(since.elapsed().as_secs_f64());
}

/// How one claimed partition ended.
pub(super) enum PartitionEnd {
    Done(WriteStats),
    Failed(String),
    /// Cut in half after repeated timeouts; both halves are pending.
    Split,
    /// Given back unfinished (signal).
    Released(WriteStats),
    /// An error that stops the whole run.
    Stop(Error),
}

/// A task aborted when this is dropped.
pub(super) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One change at a time to a claimed partition's checkpoint: the heartbeat
/// and the attempt's own changes (retrying, done, released, failed, split)
/// take turns. A MongoDB-compatible server may apply an update as a read
/// then a write (FerretDB does), so a heartbeat in flight while the
/// partition is released or finished could write it back as `running`.
type Turn = Arc<tokio::sync::Mutex<()>>;

/// Make `change` to the checkpoint in the claim's turn, patiently.
async fn in_turn<T, F, Fut>(turn: &Turn, change: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let _turn = turn.lock().await;
    patient(change).await
}

/// Renew the claim's lease every third of the lease until dropped, each
/// renewal in the claim's turn.
fn heartbeat(ctx: &Context, claim: &Claim, turn: &Turn) -> AbortOnDrop {
    let store = ctx.store.clone();
    let claim = claim.clone();
    let turn = turn.clone();
    let every = ctx.lease.div_f64(3.0);
    AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let _turn = turn.lock().await;
            match store.heartbeat(&claim).await {
                Ok(true) => {}
                // Another worker took it over after our lease expired:
                // both finish it; the writes are idempotent.
                Ok(false) => tracing::warn!(partition = %claim.id, "lease lost to another worker"),
                Err(e) => tracing::warn!(error = %e, partition = %claim.id, "heartbeat failed"),
            }
        }
    }))
}

/// Transfer one claimed partition, with retries.
pub(super) async fn run_partition(ctx: &Context, claim: Claim) -> PartitionEnd {
    let mut delays = ctx.retry.delays();
    let mut timeouts = claim.timeouts;
    let turn = Turn::default();
    let _heartbeat = heartbeat(ctx, &claim, &turn);
    loop {
        let started = Instant::now();
        let (result, writes, handed) = transfer(ctx, &claim).await;
        let end = match result {
            Ok(rows) if !ctx.cancel.is_cancelled() => {
                let stats = PartitionStats {
                    rows,
                    inserted: writes.inserted,
                    already_present: writes.already_present,
                    replaced: writes.replaced,
                    merged: writes.merged,
                    bytes: writes.bytes,
                    duration: started.elapsed(),
                };
                ctx.counters.partitions.fetch_add(1, Ordering::Relaxed);
                in_turn(&turn, || ctx.store.done(&claim, &stats))
                    .await
                    .map(|_| PartitionEnd::Done(writes))
            }
            Ok(_) => in_turn(&turn, || ctx.store.release(&claim))
                .await
                .map(|_| PartitionEnd::Released(writes)),
            Err(e) => {
                let class = e.class();
                // Where to cut, asked of the source only when the partition
                // has been cancelled for time twice (see `decide`).
                let after = timeouts + (class == Class::Timeout) as u32;
                let halves = match class {
                    Class::Timeout | Class::Transient if after >= 2 => {
                        ctx.source.split(&claim.work).await.unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "cannot find where to cut the partition");
                            None
                        })
                    }
                    _ => None,
                };
                let can_split = halves.is_some();
                let next = match class {
                    Class::Transient | Class::Timeout => delays.next(),
                    _ => None,
                };
                let e = match (class, handed && !ctx.sink.idempotent()) {
                    (Class::Transient | Class::Timeout, true) => not_again(e),
                    _ => e,
                };
                let class = e.class();
                let decision = decide(
                    class,
                    &mut timeouts,
                    can_split,
                    ctx.cancel.is_cancelled(),
                    next,
                );
                match after_error(ctx, (&claim, &turn), e, decision, writes, halves).await {
                    Ok(Some(end)) => Ok(end),
                    Ok(None) => continue,
                    Err(e) => Err(e),
                }
            }
        };
        return end.unwrap_or_else(PartitionEnd::Stop);
    }
}

/// Carry out `decision` for a failed attempt; `None` to try again.
async fn after_error(
    ctx: &Context,
    (claim, turn): (&Claim, &Turn),
    error: Error,
    decision: Decision,
    writes: WriteStats,
    halves: Option<(Range, Range)>,
) -> Result<Option<PartitionEnd>> {
    let message = error.to_string();
    match decision {
        Decision::Stop => {
            let _ = in_turn(turn, || ctx.store.release(claim)).await;
            Ok(Some(PartitionEnd::Stop(error)))
        }
        Decision::Fail => {
            in_turn(turn, || ctx.store.failed(claim, &message)).await?;
            Ok(Some(PartitionEnd::Failed(format!(
                "partition {}: {message}",
                claim.id
            ))))
        }
        Decision::Split => {
            let halves = halves.expect("decided it can split");
            tracing::warn!(partition = %claim.id, "cancelled for time twice: cutting it in half");
            in_turn(turn, || ctx.store.split(claim, halves)).await?;
            Ok(Some(PartitionEnd::Split))
        }
        Decision::Release => {
            in_turn(turn, || ctx.store.release(claim)).await?;
            Ok(Some(PartitionEnd::Released(writes)))
        }
        Decision::Retry(delay) => {
            ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
            let class = format!("{:?}", error.class()).to_lowercase();
            metrics::counter!("shiftload_retries_total", "class" => class).increment(1);
            tracing::warn!(partition = %claim.id, error = %message, ?delay, "retrying");
            let timeout = error.class() == Class::Timeout;
            if let Err(e) = in_turn(turn, || ctx.store.retrying(claim, &message, timeout)).await {
                tracing::warn!(error = %e, "cannot record the retry");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = ctx.cancel.cancelled() => {}
            }
            Ok(None)
        }
    }
}

/// An error that could be retried, after an attempt that handed rows to a
/// sink whose writes are not idempotent: not retried.
fn not_again(e: Error) -> Error {
    Error::NotRetried(format!(
        "{e}; not retried: this attempt already wrote documents with fresh ObjectIds (no \
         `mapping.id`), and a retry would write them again. Remove what it wrote (or the \
         collection) and run with --restart, or set `mapping.id` to key columns so that retries \
         and resumes are safe"
    ))
}

/// One attempt at a partition: read, write, and wait for every write.
/// Returns the rows read (stopping early when cancelled), what was written,
/// also when it fails (those writes stay written), and whether any batch
/// was handed to the sink at all.
async fn transfer(ctx: &Context, claim: &Claim) -> (Result<u64>, WriteStats, bool) {
    let mut source = match ctx.source.open(&claim.work).await {
        Ok(s) => s,
        Err(e) => return (Err(e), WriteStats::default(), false),
    };
    let mut sink = match ctx.sink.open(&claim.id, source.schema()).await {
        Ok(s) => s,
        Err(e) => return (Err(e), WriteStats::default(), false),
    };
    let mut handed = false;
    let mut ended = false;
    let mut read = 0u64;
    let pumped = async {
        loop {
            let waited = Instant::now();
            let next = tokio::select! {
                next = source.next_batch() => next,
                _ = ctx.cancel.cancelled() => return Ok(()),
            };
            busy("read", waited);
            let Some(next) = next else {
                ended = true;
                return Ok(());
            };
            let SourceBatch {
                batch,
                permit,
                rejects,
            } = next?;
            let n = batch.num_rows() as u64;
            handed = true;
            let handing = Instant::now();
            let bytes = sink.write(batch, permit, rejects).await?;
            busy("write", handing);
            read += n;
            let c = &ctx.counters;
            c.rows.fetch_add(n, Ordering::Relaxed);
            c.unsettled.fetch_add(n, Ordering::Relaxed);
            c.bytes.fetch_add(bytes, Ordering::Relaxed);
            c.batches.fetch_add(1, Ordering::Relaxed);
        }
    }
    .await;
    // Whatever stopped the pump, the writes already handed to the sink are
    // awaited: nothing fetched and encoded before a failure is thrown away.
    let finishing = Instant::now();
    let finished = sink.finish(ended && pumped.is_ok()).await;
    busy("finish", finishing);
    let writes = sink.stats();
    ctx.counters.unsettled.fetch_sub(read, Ordering::Relaxed);
    match (pumped, finished) {
        (Err(e), _) | (Ok(_), Err(e)) => (Err(e), writes, handed),
        (Ok(()), Ok(())) => (Ok(read), writes, handed),
    }
}
