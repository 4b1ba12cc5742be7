//! Incremental runs: the window a new generation reads (from the last
//! watermark, less the lookback, and the watermark column's maximum now),
//! and the source narrowed to it.

use std::sync::Arc;

use arrow_schema::Schema;

use super::Prepared;
use crate::checkpoint::{CheckpointStore, Window};
use crate::config::{IncrementalConfig, Lookback};
use crate::error::{Error, Result};
use crate::plan::KeyType;
use crate::retry::with_retries;
use crate::source::{self, PgSource, Source};
use crate::sql::{pushdown_sql, quote_ident, subquery};

const KEY: &str = "incremental.column";

/// The type of the watermark column, from the result's schema.
pub fn column_kind(inc: &IncrementalConfig, schema: &Schema) -> Result<KeyType> {
    let field = schema.field_with_name(&inc.column).map_err(|_| {
        Error::config(
            KEY,
            format!("column `{}` is not in the query result", inc.column),
        )
    })?;
    KeyType::of(field.data_type()).ok_or_else(|| {
        Error::config(
            KEY,
            format!(
                "column `{}` is {}; the watermark must be a TIMESTAMP, TIMESTAMPTZ, DATE or \
                 integer column",
                inc.column,
                field.data_type()
            ),
        )
    })
}

/// The lookback in the column's units: microseconds, days (rounded up) or
/// the integer itself.
fn lookback_in(kind: KeyType, lookback: Option<&Lookback>) -> Result<i64> {
    let bad = |what: &str| Error::config("incremental.lookback", what.to_string());
    let micros = |d: &str| {
        humantime::parse_duration(d)
            .map(|d| d.as_micros().min(i64::MAX as u128) as i64)
            .map_err(|e| bad(&format!("{d:?} is not a duration like \"1h\": {e}")))
    };
    match (kind, lookback) {
        (_, None) => Ok(0),
        (KeyType::Int, Some(Lookback::Number(n))) => Ok(*n),
        (KeyType::Int, Some(Lookback::Duration(_))) => Err(bad(
            "the watermark column is an integer: give the lookback as a number",
        )),
        (_, Some(Lookback::Number(_))) => Err(bad(
            "the watermark column is a date or time: give the lookback as a duration like \"1h\"",
        )),
        (KeyType::Date, Some(Lookback::Duration(d))) => {
            Ok((micros(d)? as u64).div_ceil(86_400_000_000) as i64)
        }
        (KeyType::Timestamp { .. }, Some(Lookback::Duration(d))) => micros(d),
    }
}

/// The window of a new generation of `prepared`'s incremental job (`None`
/// for another job): the rows above the last complete run's watermark less
/// the lookback — every row when there is none, or on a full refresh —
/// and the column's maximum now, the watermark it will leave.
pub(super) async fn next_window(
    prepared: &Prepared,
    store: &dyn CheckpointStore,
    full_refresh: bool,
) -> Result<Option<Window>> {
    let job = &prepared.job;
    let Some(inc) = &job.incremental else {
        return Ok(None);
    };
    let kind = column_kind(inc, &prepared.source.schema())?;
    let last = match full_refresh {
        true => None,
        false => store.status().await?.and_then(|s| s.watermark),
    };
    // A watermark of another column (the job was edited) is no watermark.
    let last = last.filter(|w| w.column == inc.column && w.kind == kind);
    let lookback = lookback_in(kind, inc.lookback.as_ref())?;
    let sql = format!(
        "SELECT max({})::text FROM {} AS shiftload_q",
        quote_ident(&inc.column),
        subquery(&job.source.query)
    );
    let row = with_retries(&job.retry, "read the watermark column's maximum", || {
        PgSource::query_row(&job.source, &sql)
    })
    .await?;
    let upto = match row.into_iter().next().flatten() {
        Some(text) => Some(kind.parse(&text).ok_or_else(|| {
            Error::config(
                KEY,
                format!("cannot read the maximum {text:?} of `{}`", inc.column),
            )
        })?),
        None => None,
    };
    Ok(Some(Window {
        column: inc.column.clone(),
        kind,
        since: last.map(|w| w.value.saturating_sub(lookback)),
        upto,
    }))
}

/// The prepared source, narrowed to `window`'s rows (pushed into the SQL).
pub(super) fn windowed(prepared: &Prepared, window: Option<&Window>) -> Result<Arc<dyn Source>> {
    let Some(predicate) = window.and_then(Window::predicate) else {
        return Ok(prepared.source.clone());
    };
    let mut job = prepared.job.clone();
    job.source.query = pushdown_sql(&job.source.query, None, Some(&predicate));
    source::from_job(
        &job,
        prepared.source.schema(),
        &prepared.budget,
        prepared.dead_letter.is_some(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookback_in_the_columns_units() {
        let ts = KeyType::Timestamp { tz: true };
        let d = |s: &str| Lookback::Duration(s.into());
        assert_eq!(lookback_in(ts, Some(&d("1h"))).unwrap(), 3_600_000_000);
        assert_eq!(lookback_in(KeyType::Date, Some(&d("25h"))).unwrap(), 2);
        assert_eq!(
            lookback_in(KeyType::Int, Some(&Lookback::Number(50))).unwrap(),
            50
        );
        assert_eq!(lookback_in(ts, None).unwrap(), 0);
        for (kind, l) in [(KeyType::Int, d("1h")), (ts, Lookback::Number(5))] {
            let e = lookback_in(kind, Some(&l)).unwrap_err().to_string();
            assert!(e.contains("incremental.lookback"), "{e}");
        }
    }
}
