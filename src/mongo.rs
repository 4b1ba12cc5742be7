//! The MongoDB connection and the driver's errors as this crate's, shared by
//! the sink and the checkpoint store (both talk to the target server).

use std::time::Duration;

use mongodb::error::ErrorKind;
use mongodb::options::ClientOptions;
use mongodb::Client;

use crate::error::{error_chain, Class, Error, Result};
use crate::redact;

pub const SYSTEM: &str = "MongoDB";

/// Connect to MongoDB; the password never appears in errors.
pub async fn connect(uri: &str) -> Result<Client> {
    redact::register_uri(uri);
    let target = redact::uri(uri);
    let connect_error = |e: mongodb::error::Error, class| Error::Connect {
        system: SYSTEM,
        target: target.clone(),
        message: redact::scrub(&e.to_string()),
        class,
    };
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| connect_error(e, Class::Config))?;
    if options.server_selection_timeout.is_none() {
        options.server_selection_timeout = Some(Duration::from_secs(10));
    }
    if options.app_name.is_none() {
        options.app_name = Some("shiftload".into());
    }
    Client::with_options(options).map_err(|e| connect_error(e, Class::Config))
}

/// A failed command against `uri`'s server, before any data moved: the
/// server is away (transient) or refused us (fatal).
pub fn connect_error(uri: &str, e: &mongodb::error::Error) -> Error {
    Error::Connect {
        system: SYSTEM,
        target: redact::uri(uri),
        message: redact::scrub(&e.to_string()),
        class: if transient(e) {
            Class::Transient
        } else {
            Class::Fatal
        },
    }
}

/// A driver error met while writing to `namespace`: unavailability when
/// transient, a write error otherwise.
pub fn driver_error(namespace: &str, e: &mongodb::error::Error) -> Error {
    let message = redact::scrub(&error_chain(e));
    if transient(e) {
        Error::Unavailable {
            system: SYSTEM,
            message: format!("{namespace}: {message}"),
        }
    } else {
        Error::Write {
            namespace: namespace.to_string(),
            message,
        }
    }
}

/// Whether a driver error is the server or network being away for a while.
pub fn transient(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
    ) || e.contains_label("RetryableWriteError")
        || e.contains_label("NetworkError")
}

/// Whether the error is a duplicate key (E11000) on a single write.
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}
