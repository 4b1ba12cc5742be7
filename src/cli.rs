//! The command line: subcommands and their flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use shiftload::memory::ByteSize;

#[derive(Parser)]
#[command(name = "shiftload", version)]
#[command(about = "Move large Redshift query results into MongoDB, fast, in bounded memory.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr: `human` or `json` (one object a line).
    #[arg(long, global = true, value_parser = ["human", "json"], default_value = "human")]
    pub log_format: String,
}

#[derive(Args)]
pub struct JobArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    /// Memory budget ("256MiB", "2GiB"); overrides the job's memory_limit.
    #[arg(long)]
    pub memory_limit: Option<ByteSize>,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Print nothing on success (for cron); errors still go to stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Never draw a progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Discard the checkpoint of an unfinished run and start over.
    #[arg(long)]
    pub restart: bool,
    /// For an `[incremental]` job: load every row again and reset the
    /// watermark (an unfinished run is discarded).
    #[arg(long)]
    pub full_refresh: bool,
    /// Also write the summary as JSON to FILE (schema: `shiftload schema
    /// summary`), whatever the outcome, errors included.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Off a terminal (or with --no-progress), log a progress line this
    /// often ("30s", "5m"; "0s": never).
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub progress_every: humantime::Duration,
    /// Serve Prometheus metrics on http://ADDR/metrics (and /health) while
    /// the run goes on ("127.0.0.1:9898"; port 0 takes a free one).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// With --metrics-addr: keep serving this long after the run, for a
    /// last scrape ("30s"); SIGINT or SIGTERM ends it early.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub metrics_linger: humantime::Duration,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Print JSON (schema: `shiftload schema status`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Count and name what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete even more than `reconcile.max_delete_share` of the collection.
    #[arg(long)]
    pub force: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a transfer job (or join it as another worker, or resume it).
    Run(RunArgs),
    /// Write the job's result as Parquet parts and a manifest under its
    /// `[export] location` (resumable, shared by several workers).
    Export(RunArgs),
    /// Show the partitions and the SQL of each, without writing anything.
    Plan(JobArgs),
    /// Show the job's progress from its checkpoint, its watermark and its
    /// last runs.
    Status(StatusArgs),
    /// Prove the target equal to the source (exit 0), or name the documents
    /// that differ (exit 5).
    Verify(JobArgs),
    /// Delete the documents whose key the source no longer has (exit 0);
    /// refuses to delete more than `reconcile.max_delete_share` of the
    /// collection without --force (exit 2, nothing deleted).
    Reconcile(ReconcileArgs),
    /// Check a job file without touching any data.
    Validate {
        /// The job file (TOML).
        job: PathBuf,
    },
    /// Print a JSON Schema: of job files (`job`), of `run --summary-json`
    /// (`summary`) or of `status --json` (`status`).
    Schema {
        #[arg(value_parser = ["job", "summary", "status"], default_value = "job")]
        of: String,
    },
    /// Measure the first stages of a job without writing anything.
    Bench {
        #[command(flatten)]
        job: JobArgs,
        /// `source` (fetch, decode into Arrow) or `encode` (and into BSON).
        #[arg(long, value_parser = ["source", "encode"], default_value = "source")]
        stage: String,
    },
}
