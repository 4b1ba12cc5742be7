//! The `shiftload` command: parse flags, call the library, map the outcome
//! to an exit code. Everything else lives in the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use shiftload::memory::ByteSize;
use shiftload::pipeline::{self, Progress, RunSummary};
use shiftload::{redact, JobConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes, documented in the README.
mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const CONFIG: u8 = 2;
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

#[derive(Subcommand)]
enum Command {
    /// Run a transfer job.
    Run {
        /// The job file (TOML).
        job: PathBuf,
        /// Print nothing on success (for cron); errors still go to stderr.
        #[arg(long, short)]
        quiet: bool,
        /// Never draw a progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Memory budget ("256MiB", "2GiB"); overrides the job's memory_limit.
        #[arg(long)]
        memory_limit: Option<ByteSize>,
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
        /// The job file (TOML).
        job: PathBuf,
        /// How far to take the data.
        #[arg(long, value_enum, default_value_t = BenchStage::Source)]
        stage: BenchStage,
        /// Memory budget ("256MiB", "2GiB"); overrides the job's memory_limit.
        #[arg(long)]
        memory_limit: Option<ByteSize>,
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
            memory_limit,
        } => run(&job, quiet, no_progress, memory_limit),
        Command::Bench {
            job,
            stage,
            memory_limit,
        } => bench(&job, stage, memory_limit),
    };
    ExitCode::from(code)
}

fn run(path: &Path, quiet: bool, no_progress: bool, memory_limit: Option<ByteSize>) -> u8 {
    let (job, runtime) = match load(path, memory_limit) {
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
    let on_progress = |p: &Progress| {
        if let Some(bar) = &bar {
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} rows read, {:.0} rows/s, {} BSON",
                group(p.rows_read),
                p.rows_read as f64 / secs,
                bytes(p.bson_bytes)
            ));
        }
    };
    let outcome = runtime.block_on(pipeline::run(&job, &on_progress));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match outcome {
        Ok(summary) => {
            if !quiet {
                print!("{}", render_summary(&summary));
            }
            exit::OK
        }
        Err(e) => report(&e),
    }
}

fn bench(path: &Path, stage: BenchStage, memory_limit: Option<ByteSize>) -> u8 {
    let (job, runtime) = match load(path, memory_limit) {
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

/// The job and a runtime to run it on, or the exit code of the failure.
fn load(
    path: &Path,
    memory_limit: Option<ByteSize>,
) -> Result<(JobConfig, tokio::runtime::Runtime), u8> {
    let mut job = JobConfig::load(path).map_err(|e| report(&e))?;
    if memory_limit.is_some() {
        job.memory_limit = memory_limit;
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

fn report(e: &shiftload::Error) -> u8 {
    eprintln!("error: {}", redact::scrub(&e.to_string()));
    if e.is_config() {
        exit::CONFIG
    } else {
        exit::FAILED
    }
}

fn render_summary(s: &RunSummary) -> String {
    let secs = s.elapsed.as_secs_f64();
    let mut out = String::new();
    out.push_str("shiftload: transfer complete\n");
    out.push_str(&format!("  target        {}\n", s.namespace));
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
    out
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
