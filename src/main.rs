//! The `shiftload` command: parse flags, call the library, map the outcome
//! to an exit code. Everything else lives in the library.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, JobArgs, RunArgs};
use shiftload::pipeline::{self, RunOptions, Stage};
use shiftload::{exit, redact, JobConfig};
use tokio_util::sync::CancellationToken;

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    shiftload::alloc::tune();
    let cli = Cli::parse();
    pipeline::report::init_logging(cli.log_format == "json");
    let code = match cli.command {
        Command::Schema { of } => print(&match of.as_str() {
            "summary" => pipeline::json::summary_schema(),
            "status" => pipeline::json::status_schema(),
            _ => shiftload::config::json_schema(),
        }),
        Command::Validate { job } => match JobConfig::load(&job) {
            Ok(_) => print(&format!("{}: ok\n", job.display())),
            Err(e) => report(&e),
        },
        Command::Run(args) => run(&args, false),
        Command::Export(args) => run(&args, true),
        Command::Plan(job) => with_job(&job, |j| async move { pipeline::plan(&j).await }, ok),
        Command::Status(args) => with_job(
            &args.job,
            |j| async move {
                let status = pipeline::status(&j).await?;
                Ok(match args.json {
                    true => pipeline::json::pretty(&pipeline::json::StatusJson::of(&status)),
                    false => status.to_string(),
                })
            },
            ok,
        ),
        Command::Verify(job) => with_job(
            &job,
            |j| async move { pipeline::verify(&j).await },
            |v| if v.equal() { exit::OK } else { exit::DIFFERENT },
        ),
        Command::Reconcile(args) => {
            let options = pipeline::ReconcileOptions {
                dry_run: args.dry_run,
                force: args.force,
            };
            with_job(
                &args.job,
                |j| async move { pipeline::reconcile(&j, options).await },
                ok,
            )
        }
        Command::Bench { job, stage } => with_job(
            &job,
            |j| async move {
                let stage = Stage::named(&stage);
                pipeline::drain(&j, stage).await.map(|s| format!("{s}\n"))
            },
            ok,
        ),
    };
    ExitCode::from(code)
}

fn ok<T>(_: &T) -> u8 {
    exit::OK
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> u8 {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    exit::OK
}

/// The job file with the command line's overrides.
fn load(args: &JobArgs) -> Result<JobConfig, u8> {
    let mut job = JobConfig::load(&args.job).map_err(|e| report(&e))?;
    job.memory_limit = args.memory_limit.or(job.memory_limit);
    Ok(job)
}

/// Load the job and run `f` on a runtime; print what it gives and exit
/// with the code `code` gives it.
fn with_job<F, Fut, T>(args: &JobArgs, f: F, code: fn(&T) -> u8) -> u8
where
    F: FnOnce(JobConfig) -> Fut,
    Fut: std::future::Future<Output = shiftload::Result<T>>,
    T: std::fmt::Display,
{
    let job = match load(args) {
        Ok(job) => job,
        Err(code) => return code,
    };
    match tokio::runtime::Runtime::new()
        .expect("the async runtime starts")
        .block_on(f(job))
    {
        Ok(out) => print(&out.to_string()).max(code(&out)),
        Err(e) => report(&e),
    }
}

fn run(args: &RunArgs, export: bool) -> u8 {
    let job = match load(&args.job) {
        Ok(job) => job,
        Err(code) => return code,
    };
    let terminal = std::io::stderr().is_terminal() && !args.no_progress;
    let shown = pipeline::report::Shown::choose(args.quiet, terminal, *args.progress_every);
    let (bar, on_progress) = pipeline::report::progress(shown);
    let cancel = CancellationToken::new();
    let options = RunOptions {
        restart: args.restart,
        full_refresh: args.full_refresh,
        export,
        cancel: cancel.clone(),
        on_progress,
    };
    let runtime = tokio::runtime::Runtime::new().expect("the async runtime starts");
    let (exporter, outcome) = runtime.block_on(async {
        let watched = cancel.clone();
        tokio::spawn(async move {
            if pipeline::signals::watch(watched).await {
                std::process::exit(exit::INTERRUPTED as i32);
            }
        });
        let name = job.name.as_deref().unwrap_or("job");
        match args.metrics_addr.map(|a| pipeline::observe::serve(a, name)) {
            Some(serving) => match serving.await {
                Ok(exporter) => (Some(exporter), pipeline::run(&job, options).await),
                Err(e) => (None, Err(e)),
            },
            None => (None, pipeline::run(&job, options).await),
        }
    });
    bar.iter().for_each(|b| b.finish_and_clear());
    let code = finish(args, outcome);
    // The summary is out: a last scrape of the final figures may come.
    if let Some(exporter) = exporter {
        runtime.block_on(exporter.linger(*args.metrics_linger, &cancel));
    }
    code
}

/// Print and write the run's summary; the exit code.
fn finish(args: &RunArgs, outcome: shiftload::Result<pipeline::RunSummary>) -> u8 {
    let file = args.job.job.display().to_string();
    let summary = match outcome {
        Ok(summary) => summary,
        Err(e) => {
            let code = report(&e);
            if code == exit::FAILED && !matches!(e, shiftload::Error::Checkpoint(_)) {
                eprintln!("shiftload: progress is kept; run the same command again to resume");
            }
            let failed = pipeline::json::SummaryJson::failed(&file, &e.to_string(), code);
            return write_summary(args, &failed, code);
        }
    };
    let code = summary.exit_code();
    if !args.quiet || code != exit::OK {
        print(&summary.render(&args.job.job));
    }
    let json = pipeline::json::SummaryJson::of(&file, &summary);
    write_summary(args, &json, code)
}

/// Write `--summary-json` (whole, or not at all: through a temporary file);
/// a summary that cannot be written fails the command.
fn write_summary(args: &RunArgs, summary: &pipeline::json::SummaryJson, code: u8) -> u8 {
    let Some(path) = &args.summary_json else {
        return code;
    };
    let Err(e) = summary.write(path) else {
        return code;
    };
    let path = path.display();
    eprintln!("error: cannot write the summary to {path} (`--summary-json`): {e}; the run itself ended with exit code {code}");
    code.max(exit::FAILED)
}

fn report(e: &shiftload::Error) -> u8 {
    eprintln!("error: {}", redact::scrub(&e.to_string()));
    match e.is_config() {
        true => exit::CONFIG,
        false => exit::FAILED,
    }
}
