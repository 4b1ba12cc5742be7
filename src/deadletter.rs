//! Rows that cannot be stored, set aside instead of stopping the run.
//!
//! With `[dead_letter] path = "..."` in the job, a value that cannot be
//! converted (a NaN NUMERIC, a decimal too wide for the policy, invalid
//! JSON, a NULL key) and a document the target rejects (too large, a value
//! the server refuses) are appended to the file as JSON lines — job,
//! partition, row, key, column, reason — and counted in the summary; the
//! rest of the partition is written. Without it, such a row fails its
//! partition. The file is created readable and writable by its owner only
//! (0600): it holds the rows' keys and values.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where rows that cannot be stored go.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// File that rejected rows are appended to, one JSON object a line.
    pub path: PathBuf,
}

/// One row set aside.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reject {
    /// Position of the row in its partition's result, from 1.
    pub row: u64,
    /// `order_id=42`, or the document's `_id`, when known.
    pub key: String,
    /// The column at fault, when known.
    pub column: String,
    pub reason: String,
}

/// The dead-letter file of a run.
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<std::io::BufWriter<std::fs::File>>,
    count: AtomicU64,
    job: String,
}

#[derive(Serialize)]
struct Line<'a> {
    job: &'a str,
    partition: &'a str,
    #[serde(flatten)]
    reject: &'a Reject,
}

impl DeadLetter {
    pub fn open(cfg: &DeadLetterConfig, job: &str) -> Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        // Rows and keys are data: readable by the owner only.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&cfg.path)
            .map_err(|e| Error::io(format!("dead_letter.path {}", cfg.path.display()), e))?;
        #[cfg(unix)]
        if let Ok(meta) = file.metadata() {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %cfg.path.display(),
                    "the dead-letter file holds row values and others can read it (chmod 600)"
                );
            }
        }
        Ok(DeadLetter {
            path: cfg.path.clone(),
            file: Mutex::new(std::io::BufWriter::new(file)),
            count: AtomicU64::new(0),
            job: job.to_string(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows set aside by this run.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Append rejects and flush them to the file.
    pub fn record(&self, partition: &str, rejects: &[Reject]) -> Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        for reject in rejects {
            let line = Line {
                job: &self.job,
                partition,
                reject,
            };
            serde_json::to_writer(&mut *file, &line).map_err(|e| {
                Error::io(
                    format!("dead-letter file {}", self.path.display()),
                    e.into(),
                )
            })?;
            file.write_all(b"\n")
                .map_err(|e| Error::io(format!("dead-letter file {}", self.path.display()), e))?;
        }
        file.flush()
            .map_err(|e| Error::io(format!("dead-letter file {}", self.path.display()), e))?;
        self.count
            .fetch_add(rejects.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
