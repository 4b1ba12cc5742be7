//! What to do about an error, decided in one place for both sides.
//!
//! - **retry** with exponential backoff and jitter: connection drops and
//!   resets, PostgreSQL/Redshift `57P01`–`57P03` (admin shutdown, crash,
//!   cannot connect now), `53xxx` (insufficient resources), `40001`/`40P01`
//!   (serialization failure, deadlock; Redshift's "Serializable isolation
//!   violation" 1023), `08xxx` (connection exceptions), MongoDB network and
//!   server-selection errors;
//! - **timeout**: `57014`, query cancelled, which is what Redshift's
//!   `statement_timeout` and WLM/QMR abort actions return; retried, and a
//!   partition cancelled twice is cut in half;
//! - **fail the partition**: a value that cannot be converted, a document
//!   the target rejects; the other partitions go on;
//! - **stop the run**: bad SQL, authentication, configuration.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Error;

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Retry,
    Timeout,
    FailPartition,
    Stop,
}

/// Classify an error.
pub fn classify(e: &Error) -> Action {
    match e {
        Error::Query {
            code: Some(code),
            message,
            ..
        } => match code.as_str() {
            "57014" => Action::Timeout,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" => Action::Retry,
            c if c.starts_with("53") || c.starts_with("08") => Action::Retry,
            _ if message.contains("Serializable isolation violation")
                || message.contains("1023") =>
            {
                Action::Retry
            }
            _ => Action::Stop,
        },
        // No SQLSTATE: the connection itself failed (reset, closed, I/O).
        Error::Query {
            code: None,
            message,
            ..
        } => {
            if message.starts_with("protocol:") || message.contains("returns no columns") {
                Action::Stop
            } else {
                Action::Retry
            }
        }
        Error::Connect { message, .. } => {
            // Refused logins and missing databases will not heal by waiting.
            let fatal = [
                "28P01",
                "28000",
                "3D000",
                "bad connection URL",
                "no TCP host",
                "sslmode=require",
            ];
            if fatal.iter().any(|f| message.contains(f)) {
                Action::Stop
            } else {
                Action::Retry
            }
        }
        Error::Unavailable { .. } => Action::Retry,
        Error::Value { .. } | Error::Write { .. } | Error::Io { .. } | Error::Internal(_) => {
            Action::FailPartition
        }
        Error::Job { .. } | Error::Config { .. } | Error::UnsupportedType { .. } => Action::Stop,
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

/// Run `op`, retrying transient errors (and timeouts) with the configured
/// backoff; for steps that are not partitions (describe, planning).
pub async fn with_retries<T, F, Fut>(
    cfg: &RetryConfig,
    what: &str,
    mut op: F,
) -> crate::error::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<T>>,
{
    let mut delays = cfg.delays();
    loop {
        match op().await {
            Err(e) if matches!(classify(&e), Action::Retry | Action::Timeout) => {
                match delays.next() {
                    Some(delay) => {
                        tracing::warn!(error = %e, ?delay, "{what}: retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e),
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(code: &str, message: &str) -> Error {
        Error::Query {
            system: "PostgreSQL/Redshift",
            message: message.into(),
            code: Some(code.into()),
        }
    }

    #[test]
    fn classes() {
        assert_eq!(
            classify(&q("57014", "canceling statement due to statement timeout")),
            Action::Timeout
        );
        assert_eq!(
            classify(&q(
                "57014",
                "Query (1234) cancelled by WLM abort action of Query Monitoring Rule"
            )),
            Action::Timeout
        );
        assert_eq!(
            classify(&q(
                "57P01",
                "terminating connection due to administrator command"
            )),
            Action::Retry
        );
        assert_eq!(classify(&q("53200", "out of memory")), Action::Retry);
        assert_eq!(
            classify(&q(
                "XX000",
                "1023 Serializable isolation violation on table"
            )),
            Action::Retry
        );
        assert_eq!(
            classify(&q("42P01", "relation does not exist")),
            Action::Stop
        );
        let closed = Error::Query {
            system: "x",
            message: "the server closed the connection".into(),
            code: None,
        };
        assert_eq!(classify(&closed), Action::Retry);
        let auth = Error::Connect {
            system: "x",
            target: "h".into(),
            message: "FATAL 28P01: password authentication failed".into(),
        };
        assert_eq!(classify(&auth), Action::Stop);
        let refused = Error::Connect {
            system: "x",
            target: "h".into(),
            message: "Connection refused".into(),
        };
        assert_eq!(classify(&refused), Action::Retry);
        assert_eq!(classify(&Error::config("k", "m")), Action::Stop);
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
    }
}
