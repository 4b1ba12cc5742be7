//! What the commands print: the run summary, the plan, the status, the
//! benchmark line. Plain text for a terminal or a cron mail.

use std::fmt::{self, Display, Write as _};
use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use super::{DrainSummary, Outcome, Plan, Progress, ProgressFn, RunSummary, Status};
use crate::checkpoint::{PartitionState, Window};
use crate::memory::ByteSize;
use crate::thousands;

fn bytes(n: u64) -> String {
    ByteSize(n).to_string()
}

/// `12 inserted, 3 already present[, 1 merged][, 1 replaced][, 2 kept (different)]`.
fn documents(w: &crate::sink::WriteStats) -> String {
    let mut text = format!(
        "{} inserted, {} already present",
        thousands(w.inserted),
        thousands(w.already_present)
    );
    if w.merged > 0 {
        let _ = write!(text, ", {} merged", thousands(w.merged));
    }
    if w.replaced > 0 {
        let _ = write!(text, ", {} replaced", thousands(w.replaced));
    }
    if w.kept > 0 {
        let _ = write!(text, ", {} kept (different)", thousands(w.kept));
    }
    text
}

impl RunSummary {
    /// The command's exit code for this run ([`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        use crate::exit;
        match self.outcome {
            Outcome::Complete if self.rejected > 0 => exit::SET_ASIDE,
            Outcome::Complete if matches!(self.reconciled, Some(Err(_))) => exit::FAILED,
            Outcome::Complete => exit::OK,
            Outcome::PartitionsFailed => exit::PARTITIONS_FAILED,
            Outcome::Interrupted => exit::INTERRUPTED,
        }
    }

    fn headline(&self, job: &Path) -> String {
        match self.outcome {
            Outcome::Complete if self.rejected > 0 => format!(
                "shiftload: transfer complete but for {} row{} set aside in {}: they are not in the target",
                thousands(self.rejected),
                if self.rejected == 1 { "" } else { "s" },
                self.dead_letter_path
                    .as_deref()
                    .map_or("the dead-letter file".into(), |p| p.display().to_string())
            ),
            Outcome::Complete => "shiftload: transfer complete".to_string(),
            Outcome::PartitionsFailed => format!(
                "shiftload: {} partition(s) failed; run `shiftload {} {}` again to retry them",
                self.partitions_failed,
                self.command(),
                job.display()
            ),
            Outcome::Interrupted => format!(
                "shiftload: interrupted; run `shiftload {} {}` again to resume",
                self.command(),
                job.display()
            ),
        }
    }

    /// What the run wrote: documents, or rows in Parquet parts.
    fn written(&self) -> (&'static str, String) {
        match self.export {
            true => (
                "written",
                format!(
                    "{} rows in {} Parquet parts",
                    thousands(self.writes.inserted),
                    thousands(self.writes.requests)
                ),
            ),
            false => ("documents", documents(&self.writes)),
        }
    }

    /// The command that resumes the run.
    fn command(&self) -> &'static str {
        if self.export {
            "export"
        } else {
            "run"
        }
    }

    /// `mode` and `watermark`, for an incremental job.
    fn incremental_lines(&self) -> Vec<(&'static str, String)> {
        let Some(w) = &self.window else {
            return Vec::new();
        };
        let mark = self.watermark.as_ref().map(|m| m.display());
        let advanced = self.outcome == Outcome::Complete;
        let watermark = match (mark, advanced) {
            (Some(m), true) => format!("{} = {m}", w.column),
            (Some(m), false) => format!("{} = {m} (unchanged: the run is not complete)", w.column),
            (None, _) => "none yet".into(),
        };
        vec![("mode", window_text(w)), ("watermark", watermark)]
    }

    /// What `[reconcile] after_run` did.
    fn reconcile_line(&self) -> Option<String> {
        Some(match self.reconciled.as_ref()? {
            Ok(r) => format!(
                "{} deleted (keys gone from the source), {:.2} s",
                thousands(r.deleted),
                r.elapsed.as_secs_f64()
            ),
            Err(e) => format!("FAILED: {e}"),
        })
    }

    /// The one-screen summary; `job` is the job file, for the command that
    /// resumes.
    pub fn render(&self, job: &Path) -> String {
        let secs = self.elapsed.as_secs_f64();
        let mut out = format!("{}\n", self.headline(job));
        let mut line = |label: &str, text: String| {
            let _ = writeln!(out, "  {label:<13} {text}");
        };
        line(
            "target",
            format!(
                "{} (job {}, run {})",
                self.namespace, self.job, self.generation
            ),
        );
        line(
            "partitions",
            format!(
                "{} of {} done, {} failed; {} transferred here, {} retries",
                self.partitions_done,
                self.partitions_total,
                self.partitions_failed,
                self.partitions_here,
                self.retries
            ),
        );
        for (label, text) in self.incremental_lines() {
            line(label, text);
        }
        line("rows read", thousands(self.rows_read));
        let (label, text) = self.written();
        line(label, text);
        if let Some(text) = self.reconcile_line() {
            line("reconcile", text);
        }
        line(
            "volume",
            format!(
                "{} {} in {} batches, {} {}",
                bytes(self.writes.bytes),
                if self.export { "Parquet" } else { "BSON" },
                self.batches,
                self.writes.requests,
                if self.export { "parts" } else { "requests" }
            ),
        );
        line("elapsed", format!("{secs:.2} s"));
        line(
            "throughput",
            format!(
                "{} rows/s, {}/s",
                thousands(self.rows_per_second() as u64),
                bytes((self.writes.bytes as f64 / secs.max(1e-9)) as u64)
            ),
        );
        line(
            "peak RSS",
            format!(
                "{} (memory budget {})",
                self.peak_rss_bytes
                    .map(bytes)
                    .unwrap_or_else(|| "unknown".into()),
                self.memory_budget
            ),
        );
        if let Some(path) = &self.dead_letter_path {
            line(
                "set aside",
                format!("{} rows in {}", thousands(self.rejected), path.display()),
            );
        }
        for f in self.failures.iter().take(5) {
            line("failed", f.clone());
        }
        out
    }
}

/// What a generation of an incremental job reads.
fn window_text(w: &Window) -> String {
    match w.since {
        None => format!("full load (incremental on `{}`)", w.column),
        Some(since) => format!(
            "incremental: rows with `{}` > {}",
            w.column,
            w.kind.display(since)
        ),
    }
}

impl Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.preview;
        writeln!(f, "memory budget  {}", self.memory_budget)?;
        match &p.key {
            Some((column, _)) => writeln!(
                f,
                "partition key  {column} (min {}, max {}, {} rows)",
                p.min.map_or("none".into(), |v| v.to_string()),
                p.max.map_or("none".into(), |v| v.to_string()),
                p.rows.map_or("?".into(), thousands)
            )?,
            None if p.staged => writeln!(
                f,
                "partition key  none: each staged Parquet part is a partition"
            )?,
            None => writeln!(f, "partition key  none: the whole query is one partition")?,
        }
        writeln!(f, "partitions     {}", p.partitions.len())?;
        let key = p.key.as_ref().map(|(_, k)| *k);
        for (i, (work, what)) in p.partitions.iter().enumerate() {
            let range = match p.staged {
                true => String::new(),
                false => work.range.describe(key),
            };
            writeln!(f, "{:>5}  {range:<28} {what}", i + 1)?;
        }
        Ok(())
    }
}

impl Status {
    /// `part 3` of a staged job, `[1, 751)` of a key range.
    pub fn partition_name(&self, work: &crate::plan::Planned) -> String {
        match self.staged {
            true => format!("part {}", work.range.lo + 1),
            false => work.range.describe(None),
        }
    }
}

impl Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(s) = &self.status else {
            return writeln!(f, "job {}: never run", self.job);
        };
        use PartitionState::*;
        writeln!(
            f,
            "job {}: generation {} {} — {} partitions: {} done, {} running, {} pending, {} failed",
            self.job,
            s.generation,
            s.state,
            s.partitions.len(),
            s.count(Done),
            s.count(Running),
            s.count(Pending),
            s.count(Failed)
        )?;
        if let Some(w) = &s.window {
            writeln!(f, "  this run: {}", window_text(w))?;
        }
        if let Some(m) = &s.watermark {
            writeln!(
                f,
                "  watermark: {} = {} (the last complete run's)",
                m.column,
                m.display()
            )?;
        }
        if !s.history.is_empty() {
            writeln!(f, "  last runs, newest first:")?;
            for entry in &s.history {
                writeln!(f, "    {entry}")?;
            }
        }
        for p in &s.partitions {
            let name = self.partition_name(&p.work);
            let owner = p.owner.as_deref().filter(|_| p.state == Running);
            let error = p.error.as_deref().map(|e| format!("  last error: {e}"));
            writeln!(
                f,
                "  {name:<28} {:<8} attempts {:<3} rows {:>12} {}{}",
                p.state.as_str(),
                p.attempts,
                thousands(p.rows.max(0) as u64),
                owner.unwrap_or(""),
                error.unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

impl Display for DrainSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{:?}: {} rows in {} batches, {secs:.2} s, {} rows/s, Arrow {}, BSON {}, peak RSS {}",
            self.stage,
            self.rows,
            self.batches,
            (self.rows as f64 / secs) as u64,
            bytes(self.arrow_bytes),
            bytes(self.bson_bytes),
            self.peak_rss_bytes
                .map(bytes)
                .unwrap_or_else(|| "unknown".into())
        )
    }
}

/// How the progress is shown.
#[derive(Debug, Clone, Copy)]
pub enum Shown {
    /// A bar on the terminal.
    Bar,
    /// A log line this often (`shiftload::progress`, at INFO); zero: never.
    Lines(std::time::Duration),
    Nothing,
}

impl Shown {
    /// Nothing when `quiet`; a bar on a `terminal`; else lines `every` so often.
    pub fn choose(quiet: bool, terminal: bool, every: std::time::Duration) -> Self {
        match (quiet, terminal) {
            (true, _) => Shown::Nothing,
            (false, true) => Shown::Bar,
            (false, false) => Shown::Lines(every),
        }
    }
}

fn duration_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The progress in words: rows (of those expected), bytes, rate, ETA.
pub fn progress_text(p: &Progress) -> String {
    let mut text = format!("{} rows", thousands(p.rows_done));
    if let Some(expected) = p.rows_expected.filter(|e| *e > 0) {
        let share = 100.0 * p.rows_done as f64 / expected as f64;
        let _ = write!(text, " of ~{} ({share:.0} %)", thousands(expected));
    }
    let _ = write!(
        text,
        ", {} BSON written here, {} rows/s",
        bytes(p.bson_bytes),
        thousands(p.rate as u64)
    );
    if let Some(eta) = p.eta {
        let _ = write!(text, ", ETA {}", duration_text(eta));
    }
    text
}

/// The progress bar (for [`Shown::Bar`]) and the callback that feeds it or
/// logs the progress lines.
pub fn progress(shown: Shown) -> (Option<ProgressBar>, ProgressFn) {
    let bar = matches!(shown, Shown::Bar).then(|| {
        let bar = ProgressBar::new(0);
        let template = "{spinner} {elapsed_precise} [{bar:24}] {pos}/{len} partitions  {msg}";
        let style = ProgressStyle::with_template(template).expect("valid template");
        bar.set_style(style.progress_chars("=> "));
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let shown_bar = bar.clone();
    let logged = std::sync::Mutex::new(std::time::Duration::ZERO);
    let on_progress = Arc::new(move |p: &Progress| match shown {
        Shown::Bar => {
            let bar = shown_bar.as_ref().expect("a bar to show");
            if let Some(n) = p.partitions {
                bar.set_length(n.total as u64);
                bar.set_position((n.done + n.failed) as u64);
            }
            bar.set_message(progress_text(p));
        }
        Shown::Lines(every) if !every.is_zero() => {
            let mut last = logged.lock().expect("not poisoned");
            if p.elapsed >= *last + every {
                *last = p.elapsed;
                let (done, total) = p.partitions.map_or((0, 0), |n| (n.done, n.total));
                tracing::info!(
                    target: "shiftload::progress",
                    partitions_done = done,
                    partitions = total,
                    rows = p.rows_done,
                    eta_seconds = p.eta.map(|e| e.as_secs()),
                    "{done}/{total} partitions, {}",
                    progress_text(p)
                );
            }
        }
        _ => {}
    });
    (bar, on_progress)
}

/// Logs on stderr, human or JSON lines; `SHIFTLOAD_LOG` filters them
/// (default: warnings, errors and the progress lines of `run`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHIFTLOAD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,shiftload::progress=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::redact::Stderr);
    match json {
        true => builder.json().init(),
        false => builder.init(),
    }
}
