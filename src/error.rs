//! One error type for the library, with variants that carry the context an
//! operator needs to fix the problem (config key, column, row key, host).
//!
//! Messages never contain secrets: every string that may hold a connection
//! URI goes through [`crate::redact`] before it is stored here.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error from a driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, grouped by what the operator has to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job file cannot be read or parsed, or a key holds a bad value.
    #[error("job file {path}: {message}")]
    Job { path: PathBuf, message: String },

    /// The job is well-formed but asks for something impossible
    /// (a mapping that names a missing column, two fields on one path...).
    #[error("{key}: {message}")]
    Config { key: String, message: String },

    /// A server could not be reached or refused the login.
    #[error("cannot connect to {system} at {target}: {message}")]
    Connect {
        system: &'static str,
        target: String,
        message: String,
        /// A refused login or a bad URL will not heal by waiting
        /// ([`Class::Fatal`], [`Class::Config`]); a refused connection may.
        class: Class,
    },

    /// The source database rejected or aborted the query, or the
    /// connection broke under it.
    #[error("{system} query failed: {message}")]
    Query {
        system: &'static str,
        message: String,
        /// SQLSTATE, when the server sent one.
        code: Option<String>,
        /// What to do about it, decided where the error was read.
        class: Class,
    },

    /// A result column has a type shiftload cannot map.
    #[error("column `{column}` has type {type_name}, which shiftload cannot map{hint}")]
    UnsupportedType {
        column: String,
        type_name: String,
        hint: String,
    },

    /// One value cannot be converted under the configured policy.
    #[error("column `{column}`, {row}: {message}")]
    Value {
        column: String,
        row: String,
        message: String,
    },

    /// The target rejected a write.
    #[error("MongoDB write to {namespace} failed: {message}")]
    Write { namespace: String, message: String },

    /// The target could not be reached for a while (network, failover,
    /// restart): worth retrying.
    #[error("{system} unavailable: {message}")]
    Unavailable {
        system: &'static str,
        message: String,
    },

    /// The checkpoint changed under the run (dropped, restarted by another
    /// process): the run can no longer vouch for its progress.
    #[error("checkpoint: {0}")]
    Checkpoint(String),

    /// A failure that could have been retried, but a retry would write
    /// again what the failed attempt already wrote.
    #[error("{0}")]
    NotRetried(String),

    /// Local I/O (job file, state files).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A worker task panicked or was cancelled.
    #[error("internal: {0}")]
    Internal(String),
}

/// What can be done about an error: set where the error is made, by the
/// code that read the server's answer, and read by [`crate::retry`]. No
/// decision is ever taken from an error's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The server or the network is away for a while: retry.
    Transient,
    /// The source cancelled the statement for time (SQLSTATE 57014:
    /// `statement_timeout`, a WLM/QMR abort): retry, then split.
    Timeout,
    /// This partition's data cannot be stored (a value, a document the
    /// target rejects): fail the partition, the others go on.
    Data,
    /// The run cannot go on (bad SQL, refused login, a protocol fault).
    Fatal,
    /// The user's input is wrong (job file, mapping, types): nothing moves.
    Config,
}

impl Error {
    /// What to do about this error.
    pub fn class(&self) -> Class {
        match self {
            Error::Job { .. } | Error::Config { .. } | Error::UnsupportedType { .. } => {
                Class::Config
            }
            Error::Query { class, .. } | Error::Connect { class, .. } => *class,
            Error::Unavailable { .. } => Class::Transient,
            Error::Checkpoint(_) => Class::Fatal,
            Error::Value { .. }
            | Error::Write { .. }
            | Error::NotRetried(_)
            | Error::Io { .. }
            | Error::Internal(_) => Class::Data,
        }
    }

    /// Whether the error is the user's input to fix (job file, mapping,
    /// types, URL) rather than a fault of a server or the network.
    pub fn is_config(&self) -> bool {
        self.class() == Class::Config
    }

    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The index of column `name` in `schema`, or an error under the job key
/// `key` that lists the columns there are.
pub(crate) fn column_index(schema: &arrow_schema::Schema, key: &str, name: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| {
        Error::config(
            key,
            format!(
                "column `{name}` is not in the result (columns: {})",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// `outer: inner: innermost` of an error and its sources, skipping repeats.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
