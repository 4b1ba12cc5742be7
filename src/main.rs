//! The `shiftload` command: parse flags, call the library, map the outcome
//! to an exit code. Everything else lives in the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use shiftload::checkpoint::CheckpointStore;
use shiftload::memory::ByteSize;
use shiftload::pipeline::{self, Outcome, Progress, RunOptions, RunSummary};
use shiftload::plan::{KeyType, Range};
use shiftload::{redact, JobConfig};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes, documented in the README.
mod exit {
    /// Transfer complete.
    pub const OK: u8 = 0;
    /// The run stopped on an error (server, SQL, write); resumable.
    pub const FAILED: u8 = 1;
    /// The job file or mapping is wrong; nothing was written.
    pub const CONFIG: u8 = 2;
    /// Some partitions failed after their retries; the rest is done.
    pub const PARTITIONS_FAILED: u8 = 3;
    /// Stopped by SIGINT/SIGTERM; the next run resumes.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "shiftload",
    version,
    about = "Move large Redshift query results into MongoDB, fast, in bounded memory."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Args)]
struct JobArgs {
    /// The job file (TOML).
    job: PathBuf,
    /// Memory budget ("256MiB", "2GiB"); overrides the job's memory_limit.
    #[arg(long)]
    memory_limit: Option<ByteSize>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a transfer job (or join it as another worker, or resume it).
    Run {
        #[command(flatten)]
        job: JobArgs,
        /// Print nothing on success (for cron); errors still go to stderr.
        #[arg(long, short)]
        quiet: bool,
        /// Never draw a progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Discard the checkpoint of an unfinished run and start over.
        #[arg(long)]
        restart: bool,
    },
    /// Show the partitions and the SQL of each, without writing anything.
    Plan {
        #[command(flatten)]
        job: JobArgs,
    },
    /// Show the job's progress from its checkpoint.
    Status {
        #[command(flatten)]
        job: JobArgs,
    },
    /// Check a job file without touching any data.
    Validate {
        /// The job file (TOML).
        job: PathBuf,
    },
    /// Print the JSON Schema of job files.
    Schema,
    /// Measure the first stages of a job (fetch + decode, or + encode)
    /// without writing anything.
    Bench {
        #[command(flatten)]
        job: JobArgs,
        /// How far to take the data.
        #[arg(long, value_enum, default_value_t = BenchStage::Source)]
        stage: BenchStage,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchStage {
    /// Fetch and decode into Arrow.
    Source,
    /// Fetch, decode and encode into BSON.
    Encode,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let code = match cli.command {
        Command::Schema => {
            print!("{}", shiftload::config::json_schema());
            exit::OK
        }
        Command::Validate { job } => match JobConfig::load(&job) {
            Ok(_) => {
                println!("{}: ok", job.display());
                exit::OK
            }
            Err(e) => report(&e),
        },
        Command::Run {
            job,
            quiet,
            no_progress,
            restart,
        } => run(&job, quiet, no_progress, restart),
        Command::Plan { job } => plan(&job),
        Command::Status { job } => status(&job),
        Command::Bench { job, stage } => bench(&job, stage),
    };
    ExitCode::from(code)
}

/// The job and a runtime to run it on, or the exit code of the failure.
fn load(args: &JobArgs) -> Result<(JobConfig, tokio::runtime::Runtime), u8> {
    let mut job = JobConfig::load(&args.job).map_err(|e| report(&e))?;
    if args.memory_limit.is_some() {
        job.memory_limit = args.memory_limit;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            exit::FAILED
        })?;
    Ok((job, runtime))
}

fn run(args: &JobArgs, quiet: bool, no_progress: bool, restart: bool) -> u8 {
    let (job, runtime) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let bar = (!quiet && !no_progress && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let started = std::time::Instant::now();
    let progress_bar = bar.clone();
    let on_progress = Arc::new(move |p: &Progress| {
        if let Some(bar) = &progress_bar {
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} rows read, {:.0} rows/s, {} BSON, {} partitions done here",
                group(p.rows_read),
                p.rows_read as f64 / secs,
                bytes(p.bson_bytes),
                p.partitions_done
            ));
        }
    });
    let cancel = CancellationToken::new();
    let options = RunOptions {
        restart,
        cancel: cancel.clone(),
        on_progress,
    };
    let outcome = runtime.block_on(async {
        tokio::spawn(watch_signals(cancel));
        pipeline::run(&job, options).await
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match outcome {
        Ok(summary) => {
            let code = match summary.outcome {
                Outcome::Complete => exit::OK,
                Outcome::PartitionsFailed => exit::PARTITIONS_FAILED,
                Outcome::Interrupted => exit::INTERRUPTED,
            };
            if !quiet || code != exit::OK {
                print!("{}", render_summary(&summary, &args.job));
            }
            code
        }
        Err(e) => {
            let code = report(&e);
            if code == exit::FAILED {
                eprintln!(
                    "shiftload: progress is kept; run `shiftload run {}` again to resume",
                    args.job.display()
                );
            }
            code
        }
    }
}

/// First SIGINT/SIGTERM: stop taking partitions, finish the writes in
/// flight, give unfinished partitions back. Second: exit at once.
async fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    // `recv` gives None when the runtime shuts down: that is no signal.
    tokio::select! {
        Some(_) = int.recv() => {}
        Some(_) = term.recv() => {}
        else => return,
    }
    eprintln!("shiftload: stopping: finishing the writes in flight (signal again to exit at once)");
    cancel.cancel();
    tokio::select! {
        Some(_) = int.recv() => {}
        Some(_) = term.recv() => {}
        else => return,
    }
    eprintln!(
        "shiftload: exiting now; unfinished partitions are taken over when their leases expire"
    );
    std::process::exit(exit::INTERRUPTED as i32);
}

fn plan(args: &JobArgs) -> u8 {
    let (job, runtime) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match runtime.block_on(pipeline::plan(&job)) {
        Ok(p) => {
            println!("memory budget  {}", p.memory_budget);
            match &p.key {
                Some((column, _)) => println!(
                    "partition key  {column} (min {}, max {}, {} rows)",
                    p.min.map_or("none".into(), |v| v.to_string()),
                    p.max.map_or("none".into(), |v| v.to_string()),
                    p.rows.map_or("?".into(), group)
                ),
                None if job.source.staging.is_some() => {
                    println!("partition key  none: each staged Parquet part is a partition")
                }
                None => println!("partition key  none: the whole query is one partition"),
            }
            println!("partitions     {}", p.partitions.len());
            let key = p.key.as_ref().map(|(_, k)| *k);
            for (i, (range, sql)) in p.partitions.iter().enumerate() {
                let range = match &job.source.staging {
                    Some(_) => String::new(),
                    None => describe_range(range, key),
                };
                println!("{:>5}  {range:<28} {sql}", i + 1);
            }
            exit::OK
        }
        Err(e) => report(&e),
    }
}

/// `[lo, hi)`, in the key's own terms when its type is known.
fn describe_range(r: &Range, key: Option<KeyType>) -> String {
    if r.null {
        return "key IS NULL".into();
    }
    let show = |v: i64| match key {
        Some(KeyType::Int) | None => v.to_string(),
        Some(k) => {
            let literal = k.literal(v);
            let quoted = &literal[literal.find('\'').unwrap_or(0)..];
            quoted.trim_matches('\'').to_string()
        }
    };
    let lo = if r.lo == i64::MIN {
        "-inf".into()
    } else {
        show(r.lo)
    };
    let hi = if r.hi == i64::MAX {
        "+inf".into()
    } else {
        show(r.hi)
    };
    format!("[{lo}, {hi})")
}

fn status(args: &JobArgs) -> u8 {
    let (job, runtime) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let name = job.name.clone().unwrap_or_else(|| "job".into());
    let result = runtime.block_on(async {
        let target = shiftload::sink::Target::connect(&job.target).await?;
        let store = CheckpointStore::new(
            &target.database,
            &job.checkpoint.collection,
            &name,
            "status",
            std::time::Duration::from_secs(job.checkpoint.lease_seconds),
        );
        store.status().await
    });
    match result {
        Ok(None) => {
            println!("job {name}: never run");
            exit::OK
        }
        Ok(Some(s)) => {
            println!(
                "job {name}: generation {} {} — {} partitions: {} done, {} running, {} pending, {} failed",
                s.generation,
                s.state,
                s.partitions.len(),
                s.count("done"),
                s.count("running"),
                s.count("pending"),
                s.count("failed")
            );
            for p in &s.partitions {
                println!(
                    "  {:<28} {:<8} attempts {:<3} rows {:>12} {}{}",
                    match &job.source.staging {
                        Some(_) => format!("part {}", p.range.lo + 1),
                        None => describe_range(&p.range, None),
                    },
                    p.state,
                    p.attempts,
                    group(p.rows.max(0) as u64),
                    p.owner
                        .as_deref()
                        .filter(|_| p.state == "running")
                        .unwrap_or(""),
                    p.error
                        .as_deref()
                        .map(|e| format!("  last error: {e}"))
                        .unwrap_or_default()
                );
            }
            exit::OK
        }
        Err(e) => report(&e),
    }
}

fn bench(args: &JobArgs, stage: BenchStage) -> u8 {
    let (job, runtime) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let stage = match stage {
        BenchStage::Source => pipeline::Stage::Source,
        BenchStage::Encode => pipeline::Stage::Encode,
    };
    match runtime.block_on(pipeline::drain(&job, stage)) {
        Ok(s) => {
            let secs = s.elapsed.as_secs_f64().max(1e-9);
            println!(
                "{stage:?}: {} rows in {} batches, {secs:.2} s, {} rows/s, Arrow {}, BSON {}, peak RSS {}",
                s.rows,
                s.batches,
                (s.rows as f64 / secs) as u64,
                bytes(s.arrow_bytes),
                bytes(s.bson_bytes),
                s.peak_rss_bytes.map(bytes).unwrap_or_else(|| "unknown".into())
            );
            exit::OK
        }
        Err(e) => report(&e),
    }
}

fn report(e: &shiftload::Error) -> u8 {
    eprintln!("error: {}", redact::scrub(&e.to_string()));
    if e.is_config() {
        exit::CONFIG
    } else {
        exit::FAILED
    }
}

fn render_summary(s: &RunSummary, job: &Path) -> String {
    let secs = s.elapsed.as_secs_f64();
    let headline = match s.outcome {
        Outcome::Complete => "shiftload: transfer complete".to_string(),
        Outcome::PartitionsFailed => format!(
            "shiftload: {} partition(s) failed; run `shiftload run {}` again to retry them",
            s.partitions_failed,
            job.display()
        ),
        Outcome::Interrupted => format!(
            "shiftload: interrupted; run `shiftload run {}` again to resume",
            job.display()
        ),
    };
    let mut out = format!("{headline}\n");
    out.push_str(&format!(
        "  target        {} (job {}, run {})\n",
        s.namespace, s.job, s.generation
    ));
    out.push_str(&format!(
        "  partitions    {} of {} done, {} failed; {} transferred here, {} retries\n",
        s.partitions_done, s.partitions_total, s.partitions_failed, s.partitions_here, s.retries
    ));
    out.push_str(&format!("  rows read     {}\n", group(s.rows_read)));
    out.push_str(&format!(
        "  documents     {} inserted, {} already present\n",
        group(s.writes.inserted),
        group(s.writes.already_present)
    ));
    out.push_str(&format!(
        "  volume        {} BSON in {} batches, {} requests\n",
        bytes(s.writes.bytes),
        s.batches,
        s.writes.requests
    ));
    out.push_str(&format!("  elapsed       {secs:.2} s\n"));
    out.push_str(&format!(
        "  throughput    {} rows/s, {}/s\n",
        group(s.rows_per_second() as u64),
        bytes((s.writes.bytes as f64 / secs.max(1e-9)) as u64)
    ));
    out.push_str(&format!(
        "  peak RSS      {} (memory budget {})\n",
        s.peak_rss_bytes
            .map(bytes)
            .unwrap_or_else(|| "unknown".into()),
        s.memory_budget
    ));
    if let Some(path) = &s.dead_letter_path {
        out.push_str(&format!(
            "  set aside     {} rows in {}\n",
            group(s.rejected),
            path.display()
        ));
    }
    for f in s.failures.iter().take(5) {
        out.push_str(&format!("  failed        {f}\n"));
    }
    out
}

fn group(n: u64) -> String {
    shiftload::thousands(n)
}

fn bytes(n: u64) -> String {
    ByteSize(n).to_string()
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHIFTLOAD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}
