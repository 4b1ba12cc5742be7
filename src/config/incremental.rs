//! `[incremental]`: keep the collection equal to the source from a
//! watermark column, run after run.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{JobConfig, OnConflict};

/// Keep the collection up to date: the first run (and `--full-refresh`)
/// loads everything; each later run reads only the rows whose `column` is
/// above the last complete run's watermark minus `lookback`, and upserts
/// them by `_id`. The watermark is the column's maximum, read from the
/// source when the run is planned, and stored only when the run completes.
/// Rows whose `column` is NULL are read by full loads only.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// A column of the result that grows whenever a row is inserted or
    /// updated: TIMESTAMP, TIMESTAMPTZ, DATE or an integer.
    pub column: String,
    /// How far below the last watermark each run reads again, for rows
    /// committed late (a long transaction, a late batch): a duration
    /// (`"90s"`, `"15m"`, `"1h"`, `"2d"`) for a time column, a number for an
    /// integer column. A row changed with a value older than that is missed
    /// until `shiftload run --full-refresh`. Default: none.
    #[serde(default)]
    pub lookback: Option<Lookback>,
}

/// `[reconcile]`: deletions. `shiftload reconcile JOB` deletes the
/// documents whose key the source no longer has; with `after_run`, every
/// complete run of the job does the same.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Reconcile after each complete run (a full load, an incremental run
    /// or a full refresh). Default: false.
    #[serde(default)]
    pub after_run: bool,
    /// The largest share of the collection a reconcile deletes without
    /// `--force` (0.05: 5 %). Above it nothing is deleted and the command
    /// fails: an emptied or misconfigured source query must not empty the
    /// collection. Default: 0.05.
    #[serde(default = "default_max_delete_share")]
    pub max_delete_share: f64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            after_run: false,
            max_delete_share: default_max_delete_share(),
        }
    }
}

fn default_max_delete_share() -> f64 {
    0.05
}

/// A lookback: a duration for a time column, a number for an integer one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Lookback {
    Number(i64),
    Duration(String),
}

impl Lookback {
    /// In microseconds (a duration) or as is (a number).
    pub fn amount(&self) -> std::result::Result<Lookback, String> {
        match self {
            Lookback::Number(n) if *n >= 0 => Ok(self.clone()),
            Lookback::Number(n) => Err(format!("`incremental.lookback` is negative ({n})")),
            Lookback::Duration(d) => humantime::parse_duration(d)
                .map(|d| Lookback::Number(d.as_micros().min(i64::MAX as u128) as i64))
                .map_err(|e| {
                    format!("`incremental.lookback` {d:?} is not a duration like \"1h\": {e}")
                }),
        }
    }
}

impl JobConfig {
    /// `[reconcile]` deletes by `_id`, which only key columns make stable.
    pub(super) fn check_reconcile(&self) -> std::result::Result<(), String> {
        let share = self.reconcile.max_delete_share;
        if !(0.0..=1.0).contains(&share) {
            return Err(format!(
                "`reconcile.max_delete_share` is {share}; give a share between 0 and 1 (0.05: 5 %)"
            ));
        }
        if self.reconcile.after_run && self.mapping.id.is_empty() {
            return Err(
                "`reconcile.after_run` needs `mapping.id`: documents are deleted by \
                        the `_id` their key columns make"
                    .into(),
            );
        }
        Ok(())
    }

    /// `[incremental]` needs stable `_id`s and a query, and writes by
    /// upsert: documents that changed replace the ones there (or, with
    /// `target.on_conflict = "merge"`, are merged into them).
    pub(super) fn check_incremental(&mut self) -> std::result::Result<(), String> {
        let Some(inc) = &self.incremental else {
            return Ok(());
        };
        if inc.column.trim().is_empty() {
            return Err("`incremental.column` is empty".into());
        }
        if let Some(l) = &inc.lookback {
            l.amount()?;
        }
        if self.mapping.id.is_empty() {
            return Err(
                "`[incremental]` needs `mapping.id`: a changed row replaces its document \
                        by `_id`, and without key columns every `_id` is new"
                    .into(),
            );
        }
        if self.source.reads_existing_parts() {
            return Err(
                "`[incremental]` reads a query from its watermark; staged parts that \
                        already exist (`source.staging.mode = \"existing\"`) have no query"
                    .into(),
            );
        }
        match self.target.on_conflict {
            OnConflict::Skip => Err(
                "`target.on_conflict = \"skip\"` would keep the old version \
                                     of a changed row; `[incremental]` replaces documents"
                    .into(),
            ),
            OnConflict::Fail => {
                self.target.on_conflict = OnConflict::Replace;
                Ok(())
            }
            OnConflict::Replace | OnConflict::Merge => Ok(()),
        }
    }
}
