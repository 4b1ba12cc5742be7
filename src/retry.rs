//! What to do after an error, decided in one place.
//!
//! Errors carry a [`Class`] set where they were made (the reader reads
//! SQLSTATEs, the MongoDB side the driver's error kinds); this module
//! turns a class into a decision and owns the one retry loop:
//!
//! - **transient** (connection drops, `57P01`–`57P03`, `53xxx`, `08xxx`,
//!   `40001`, Redshift's serializable-isolation 1023, MongoDB network and
//!   server-selection errors): retried with exponential backoff and jitter;
//! - **timeout** (`57014`: `statement_timeout`, WLM/QMR aborts): retried,
//!   and a partition cancelled for time twice is cut in half;
//! - **data** (a value that cannot be converted, a document the target
//!   rejects): the partition fails, the others go on;
//! - **fatal** and **config** (bad SQL, refused login, bad job): the run
//!   stops.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{Class, Result};

/// What to do with a partition whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try the partition again after this delay.
    Retry(Duration),
    /// Cut the partition in half; both halves go back to pending.
    Split,
    /// Give the partition back unfinished (the run is stopping).
    Release,
    /// Mark the partition failed; the other partitions go on.
    Fail,
    /// Stop the whole run.
    Stop,
}

/// Decide what follows a failed attempt of a partition.
///
/// `timeouts` counts the partition's earlier timeouts and is updated;
/// `next_delay` is the next backoff delay, `None` when the attempts are
/// used up; `can_split` whether the partition's range can be halved;
/// `cancelled` whether the run is stopping.
pub fn decide(
    class: Class,
    timeouts: &mut u32,
    can_split: bool,
    cancelled: bool,
    next_delay: Option<Duration>,
) -> Decision {
    match class {
        Class::Fatal | Class::Config => return Decision::Stop,
        Class::Data => return Decision::Fail,
        Class::Timeout => *timeouts += 1,
        Class::Transient => {}
    }
    if *timeouts >= 2 && can_split {
        Decision::Split
    } else if cancelled {
        Decision::Release
    } else {
        next_delay.map_or(Decision::Fail, Decision::Retry)
    }
}

/// How often and how patiently to retry a partition.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts of one partition in one run before it is marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: usize,
    /// First backoff, in milliseconds; it doubles each time, with jitter.
    #[serde(default = "default_initial_delay_ms")]
    pub initial_delay_ms: u64,
    /// Longest backoff, in milliseconds.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
}

fn default_max_attempts() -> usize {
    5
}
fn default_initial_delay_ms() -> u64 {
    500
}
fn default_max_delay_ms() -> u64 {
    30_000
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            initial_delay_ms: default_initial_delay_ms(),
            max_delay_ms: default_max_delay_ms(),
        }
    }
}

impl RetryConfig {
    /// The delays before each retry (`max_attempts − 1` of them).
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.initial_delay_ms))
            .with_max_delay(Duration::from_millis(self.max_delay_ms))
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1))
            .build()
    }
}

/// Run `op` until it succeeds, fails with an error whose class
/// `retryable` refuses, or `delays` runs out; each retry is logged with
/// `what` and waits the next delay.
pub async fn retry<T, F, Fut>(
    what: &str,
    mut delays: impl Iterator<Item = Duration>,
    retryable: impl Fn(Class) -> bool,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    loop {
        match op().await {
            Err(e) if retryable(e.class()) => match delays.next() {
                Some(delay) => {
                    tracing::warn!(error = %e, ?delay, "{what}: retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Run `op`, retrying transient errors and timeouts with the job's
/// backoff: for steps that are not partitions (describe, planning).
pub async fn with_retries<T, F, Fut>(cfg: &RetryConfig, what: &str, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    retry(
        what,
        cfg.delays(),
        |c| matches!(c, Class::Transient | Class::Timeout),
        op,
    )
    .await
}

/// How long a checkpoint operation waits out an absent target.
const PATIENCE: Duration = Duration::from_secs(60);

/// Run a checkpoint operation, waiting out a target that is briefly away
/// (restart, failover) for up to a minute before giving up.
pub async fn patient<T, F, Fut>(op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    retry(
        "checkpoint store unavailable",
        patience_delays(),
        |c| c == Class::Transient,
        op,
    )
    .await
}

/// 200 ms doubling up to 5 s, for [`PATIENCE`] in all.
fn patience_delays() -> impl Iterator<Item = Duration> {
    let mut total = Duration::ZERO;
    std::iter::successors(Some(Duration::from_millis(200)), |d| {
        Some((*d * 2).min(Duration::from_secs(5)))
    })
    .take_while(move |d| {
        total += *d;
        total <= PATIENCE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Option<Duration> = Some(Duration::from_millis(10));

    #[test]
    fn stop_and_fail_come_first() {
        for cancelled in [false, true] {
            let mut t = 5;
            assert_eq!(
                decide(Class::Fatal, &mut t, true, cancelled, D),
                Decision::Stop
            );
            assert_eq!(
                decide(Class::Config, &mut t, true, cancelled, D),
                Decision::Stop
            );
            assert_eq!(
                decide(Class::Data, &mut t, true, cancelled, D),
                Decision::Fail
            );
            assert_eq!(t, 5, "only timeouts are counted");
        }
    }

    #[test]
    fn transient_errors_retry_until_the_attempts_run_out() {
        let mut t = 0;
        assert_eq!(
            decide(Class::Transient, &mut t, true, false, D),
            Decision::Retry(D.unwrap())
        );
        assert_eq!(
            decide(Class::Transient, &mut t, true, false, None),
            Decision::Fail
        );
        assert_eq!(t, 0);
    }

    #[test]
    fn a_second_timeout_splits_when_the_range_can_be_cut() {
        let mut t = 0;
        assert_eq!(
            decide(Class::Timeout, &mut t, true, false, D),
            Decision::Retry(D.unwrap())
        );
        assert_eq!(t, 1);
        assert_eq!(
            decide(Class::Timeout, &mut t, true, false, D),
            Decision::Split
        );
        assert_eq!(t, 2);
        // A range of one key cannot be cut: retried, then failed.
        let mut t = 1;
        assert_eq!(
            decide(Class::Timeout, &mut t, false, false, D),
            Decision::Retry(D.unwrap())
        );
        assert_eq!(
            decide(Class::Timeout, &mut t, false, false, None),
            Decision::Fail
        );
        // Earlier timeouts count: a transient error after two splits too.
        let mut t = 2;
        assert_eq!(
            decide(Class::Transient, &mut t, true, false, D),
            Decision::Split
        );
    }

    #[test]
    fn a_stopping_run_gives_the_partition_back() {
        let mut t = 0;
        assert_eq!(
            decide(Class::Transient, &mut t, true, true, D),
            Decision::Release
        );
        assert_eq!(
            decide(Class::Timeout, &mut t, false, true, None),
            Decision::Release
        );
        // A split still wins: both halves are pending for the next run.
        let mut t = 1;
        assert_eq!(
            decide(Class::Timeout, &mut t, true, true, D),
            Decision::Split
        );
    }

    #[test]
    fn delays_grow_and_stop() {
        let cfg = RetryConfig {
            max_attempts: 4,
            initial_delay_ms: 100,
            max_delay_ms: 1000,
        };
        let d: Vec<Duration> = cfg.delays().collect();
        assert_eq!(d.len(), 3);
        assert!(
            d[0] >= Duration::from_millis(100) && d[2] <= Duration::from_millis(2000),
            "{d:?}"
        );
        let p: Vec<Duration> = patience_delays().collect();
        assert_eq!(p[0], Duration::from_millis(200));
        assert!(
            p.iter().sum::<Duration>() <= PATIENCE && p.len() > 10,
            "{p:?}"
        );
    }

    #[tokio::test]
    async fn the_loop_retries_only_what_the_class_allows() {
        use crate::error::Error;
        let mut calls = 0;
        let r: Result<()> = retry(
            "t",
            std::iter::repeat_n(Duration::ZERO, 3),
            |c| c == Class::Transient,
            || {
                calls += 1;
                async {
                    Err(Error::Unavailable {
                        system: "x",
                        message: "down".into(),
                    })
                }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 4, "one try and three retries");
        let mut calls = 0;
        let r: Result<()> = retry(
            "t",
            std::iter::repeat_n(Duration::ZERO, 3),
            |c| c == Class::Transient,
            || {
                calls += 1;
                async { Err(Error::config("k", "bad")) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "a config error is not retried");
    }
}
