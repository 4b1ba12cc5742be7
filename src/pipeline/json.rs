//! Machine-readable forms of a run's summary (`run --summary-json FILE`)
//! and of a job's status (`status --json`). Their JSON Schemas are
//! committed in `schemas/` (`shiftload schema summary|status`). Every
//! message in them has its secrets scrubbed.

use schemars::JsonSchema;
use serde::Serialize;

use super::{Outcome, RunSummary, Status};
use crate::checkpoint::history::{Entry, Kind};
use crate::checkpoint::{JobState, PartitionState, Watermark, Window};
use crate::redact::scrub;

/// What `shiftload run --summary-json FILE` writes when the run ends, also
/// when it ends with an error before any summary (then only `outcome`,
/// `exit_code` and `error` say something).
#[derive(Debug, Serialize, JsonSchema)]
pub struct SummaryJson {
    /// The job file.
    pub job_file: String,
    /// `complete`, `partitions_failed`, `interrupted`, or `error` (the run
    /// stopped on an error: `error` says which).
    pub outcome: String,
    /// The process's exit code.
    pub exit_code: u8,
    pub error: Option<String>,
    /// The run's counts; absent when `outcome` is `error`.
    pub run: Option<RunJson>,
}

/// The counts of a run: this worker's, but for `partitions`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunJson {
    /// `database.collection`.
    pub namespace: String,
    /// The job's name in the checkpoint.
    pub job: String,
    pub generation: i64,
    pub rows_read: u64,
    pub batches: u64,
    pub documents: DocumentsJson,
    /// BSON bytes sent.
    pub bytes: u64,
    pub requests: u64,
    pub partitions: PartitionsJson,
    /// Attempts that were retried.
    pub retries: u64,
    /// The first error of each failed partition.
    pub failures: Vec<String>,
    /// The dead-letter file, when rows were set aside in it.
    pub dead_letter_file: Option<String>,
    pub elapsed_seconds: f64,
    pub rows_per_second: f64,
    pub peak_rss_bytes: Option<u64>,
    pub memory_budget_bytes: u64,
    pub incremental: Option<IncrementalJson>,
    pub reconcile: Option<ReconcileJson>,
}

/// What became of the documents written.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DocumentsJson {
    pub inserted: u64,
    pub already_present: u64,
    pub replaced: u64,
    pub merged: u64,
    /// Different documents under the same `_id`, kept (`on_conflict = "skip"`).
    pub kept: u64,
    /// Rows set aside in the dead-letter file.
    pub set_aside: u64,
}

/// The generation's partitions (all workers) and this worker's share.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PartitionsJson {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    /// Transferred by this worker.
    pub here: u64,
}

/// What an incremental generation reads and the watermark it leaves.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IncrementalJson {
    /// `full load` or `incremental`.
    pub mode: String,
    pub column: String,
    /// Rows above this value are read (absent: every row).
    pub since: Option<String>,
    /// The watermark the generation leaves when complete.
    pub upto: Option<String>,
    /// The job's watermark now (moved only by a complete run).
    pub watermark: Option<String>,
}

/// What `[reconcile] after_run` did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReconcileJson {
    pub deleted: Option<u64>,
    pub seconds: Option<f64>,
    /// Why it did not run to the end.
    pub error: Option<String>,
}

impl SummaryJson {
    /// The JSON of a run that ended with `summary`.
    pub fn of(job_file: &str, s: &RunSummary) -> SummaryJson {
        let w = &s.writes;
        let outcome = match s.outcome {
            Outcome::Complete => "complete",
            Outcome::PartitionsFailed => "partitions_failed",
            Outcome::Interrupted => "interrupted",
        };
        SummaryJson {
            job_file: job_file.into(),
            outcome: outcome.into(),
            exit_code: s.exit_code(),
            error: None,
            run: Some(RunJson {
                namespace: s.namespace.clone(),
                job: s.job.clone(),
                generation: s.generation,
                rows_read: s.rows_read,
                batches: s.batches,
                documents: DocumentsJson {
                    inserted: w.inserted,
                    already_present: w.already_present,
                    replaced: w.replaced,
                    merged: w.merged,
                    kept: w.kept,
                    set_aside: s.rejected,
                },
                bytes: w.bytes,
                requests: w.requests,
                partitions: PartitionsJson {
                    total: s.partitions_total,
                    done: s.partitions_done,
                    failed: s.partitions_failed,
                    here: s.partitions_here,
                },
                retries: s.retries,
                failures: s.failures.iter().map(|f| scrub(f)).collect(),
                dead_letter_file: s
                    .dead_letter_path
                    .as_ref()
                    .filter(|_| s.rejected > 0)
                    .map(|p| p.display().to_string()),
                elapsed_seconds: s.elapsed.as_secs_f64(),
                rows_per_second: s.rows_per_second(),
                peak_rss_bytes: s.peak_rss_bytes,
                memory_budget_bytes: s.memory_budget.0,
                incremental: s
                    .window
                    .as_ref()
                    .map(|w| incremental(w, s.watermark.as_ref())),
                reconcile: s.reconciled.as_ref().map(|r| match r {
                    Ok(r) => ReconcileJson {
                        deleted: Some(r.deleted),
                        seconds: Some(r.elapsed.as_secs_f64()),
                        error: None,
                    },
                    Err(e) => ReconcileJson {
                        deleted: None,
                        seconds: None,
                        error: Some(scrub(e)),
                    },
                }),
            }),
        }
    }

    /// The JSON of a run that stopped on `error` with `exit_code`.
    pub fn failed(job_file: &str, error: &str, exit_code: u8) -> SummaryJson {
        SummaryJson {
            job_file: job_file.into(),
            outcome: "error".into(),
            exit_code,
            error: Some(scrub(error)),
            run: None,
        }
    }
}

fn incremental(w: &Window, mark: Option<&Watermark>) -> IncrementalJson {
    IncrementalJson {
        mode: if w.is_full() {
            "full load"
        } else {
            "incremental"
        }
        .into(),
        column: w.column.clone(),
        since: w.since.map(|v| w.kind.display(v)),
        upto: w.upto.map(|v| w.kind.display(v)),
        watermark: mark.map(Watermark::display),
    }
}

/// What `shiftload status --json` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusJson {
    pub job: String,
    /// `never_run`, `planning`, `running` or `complete`: the state of the
    /// current generation.
    pub state: String,
    /// `complete`; `failed` (some partition failed after its retries: run
    /// again to retry it); `running` (some partition is held by a worker,
    /// or was, by one killed before its lease ran out); `unfinished`
    /// (partitions wait for a worker: an interrupted run); `never_run`.
    pub condition: String,
    pub generation: Option<i64>,
    pub totals: TotalsJson,
    pub incremental: Option<IncrementalJson>,
    pub partitions: Vec<PartitionJson>,
    /// The last runs and reconciles, newest first.
    pub history: Vec<HistoryJson>,
}

/// Partitions of the current generation by state, and rows done.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct TotalsJson {
    pub partitions: usize,
    pub done: usize,
    pub running: usize,
    pub pending: usize,
    pub failed: usize,
    /// Rows of the partitions done.
    pub rows: u64,
}

/// One partition of the current generation.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PartitionJson {
    /// The key range (`[1, 751)`) or the staged part (`part 3`).
    pub name: String,
    pub state: String,
    pub attempts: i32,
    pub rows: u64,
    /// The worker holding it, while running.
    pub owner: Option<String>,
    /// Its error (failed) or last error (retried).
    pub error: Option<String>,
}

/// One complete run or reconcile.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryJson {
    /// `run` or `reconcile`.
    pub what: String,
    /// When it finished, RFC 3339.
    pub finished: String,
    pub seconds: f64,
    /// A run's generation.
    pub generation: Option<i64>,
    /// A run's mode: `full load` or `incremental`.
    pub mode: Option<String>,
    pub rows_read: u64,
    pub inserted: u64,
    pub already_present: u64,
    pub replaced: u64,
    pub merged: u64,
    /// A reconcile's deletions.
    pub deleted: u64,
}

impl StatusJson {
    pub fn of(status: &Status) -> StatusJson {
        let Some(s) = &status.status else {
            return StatusJson {
                job: status.job.clone(),
                state: "never_run".into(),
                condition: "never_run".into(),
                generation: None,
                totals: TotalsJson::default(),
                incremental: None,
                partitions: Vec::new(),
                history: Vec::new(),
            };
        };
        use PartitionState::*;
        let totals = TotalsJson {
            partitions: s.partitions.len(),
            done: s.count(Done),
            running: s.count(Running),
            pending: s.count(Pending),
            failed: s.count(Failed),
            rows: s
                .partitions
                .iter()
                .filter(|p| p.state == Done)
                .map(|p| p.rows.max(0) as u64)
                .sum(),
        };
        let condition = match s.state {
            JobState::Complete => "complete",
            _ if totals.failed > 0 => "failed",
            _ if totals.running > 0 || s.state == JobState::Planning => "running",
            _ => "unfinished",
        };
        StatusJson {
            job: status.job.clone(),
            state: s.state.to_string(),
            condition: condition.into(),
            generation: Some(s.generation),
            totals,
            incremental: s
                .window
                .as_ref()
                .map(|w| incremental(w, s.watermark.as_ref())),
            partitions: s
                .partitions
                .iter()
                .map(|p| PartitionJson {
                    name: status.partition_name(&p.work),
                    state: p.state.as_str().into(),
                    attempts: p.attempts,
                    rows: p.rows.max(0) as u64,
                    owner: p.owner.clone().filter(|_| p.state == Running),
                    error: p.error.as_deref().map(scrub),
                })
                .collect(),
            history: s.history.iter().map(history).collect(),
        }
    }
}

fn history(e: &Entry) -> HistoryJson {
    let w = &e.written;
    let (what, generation, mode) = match &e.kind {
        Kind::Run { generation, mode } => ("run", Some(*generation), Some(mode.clone())),
        Kind::Reconcile => ("reconcile", None, None),
    };
    HistoryJson {
        what: what.into(),
        finished: e.finished.try_to_rfc3339_string().unwrap_or_default(),
        seconds: e.duration.as_secs_f64(),
        generation,
        mode,
        rows_read: w.rows,
        inserted: w.inserted,
        already_present: w.already_present,
        replaced: w.replaced,
        merged: w.merged,
        deleted: e.deleted,
    }
}

/// The JSON Schemas of the summary and of the status.
pub fn summary_schema() -> String {
    pretty(&schemars::schema_for!(SummaryJson))
}

pub fn status_schema() -> String {
    pretty(&schemars::schema_for!(StatusJson))
}

/// `value` as indented JSON, one line feed at the end.
pub fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("JSON serialises") + "\n"
}

impl SummaryJson {
    /// Write the summary to `path` whole, or not at all (through a
    /// temporary file beside it).
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let temporary = path.with_extension("json.partial");
        std::fs::write(&temporary, pretty(self))?;
        std::fs::rename(&temporary, path)
    }
}
