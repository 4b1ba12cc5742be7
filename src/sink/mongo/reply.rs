//! Sending one request and reading the reply: write errors and the write
//! concern. Duplicate keys (E11000) of an insert are handed back as
//! [`Pending`] for the [`Judge`](super::judge::Judge), which tells an
//! already-present document from a conflict.

use std::sync::Arc;

use bson::{Bson, Document, RawDocumentBuf};
use mongodb::error::ErrorKind;
use mongodb::Collection;

use super::judge::{id_of, Pending};
use super::request::{describe_id, Body, Request, Verb};
use crate::config::OnConflict;
use crate::deadletter::{DeadLetter, Reject};
use crate::encode::bson as b;
use crate::error::{Error, Result};
use crate::mongo::driver_error;
use crate::redact;
use crate::sink::WriteStats;

const DUPLICATE_KEY: i32 = 11000;

/// Where requests go and what to do with what the target refuses.
pub(super) struct Destination {
    pub collection: Collection<RawDocumentBuf>,
    pub namespace: String,
    /// Set rejected documents aside instead of failing (and under which
    /// partition name).
    pub dead_letter: Option<(Arc<DeadLetter>, String)>,
    pub on_conflict: OnConflict,
}

/// A write error of one document in a request.
struct DocError {
    index: usize,
    code: i32,
    message: String,
}

/// What the server said of one request.
#[derive(Default)]
struct Reply {
    errors: Vec<DocError>,
    concern: Option<String>,
    /// For an upsert: documents matched, modified, and inserted.
    matched: u64,
    modified: u64,
    upserted: u64,
}

/// What one request did: its counts, and the documents refused as
/// duplicate keys, for the judge (with the server's first message on them).
pub(super) struct Sent {
    pub stats: WriteStats,
    pub duplicates: Vec<Pending>,
    pub message: Option<String>,
}

/// Send `request` and account for every one of its documents: written,
/// refused (set aside or the error), or a duplicate to be judged.
pub(super) async fn execute(to: &Destination, mut request: Request) -> Result<Sent> {
    let n = request.len() as u64;
    let reply = match &mut request.body {
        Body::Driver(docs) => send_documents(to, docs).await?,
        Body::Command { cmd, array_at } => {
            send_command(to, std::mem::take(cmd), *array_at, request.verb).await?
        }
    };
    if let Some(concern) = reply.concern {
        return Err(Error::Write {
            namespace: to.namespace.clone(),
            message: format!("write concern error: {}", redact::scrub(&concern)),
        });
    }
    let mut stats = WriteStats {
        bytes: request.bytes() as u64,
        requests: 1,
        ..WriteStats::default()
    };
    match request.verb {
        Verb::Insert => stats.inserted = n - reply.errors.len() as u64,
        Verb::Upsert => {
            stats.inserted = reply.upserted;
            match to.on_conflict {
                OnConflict::Merge => stats.merged = reply.modified,
                _ => stats.replaced = reply.modified,
            }
            stats.already_present = reply.matched.saturating_sub(reply.modified);
        }
    }
    let mut duplicates = Vec::new();
    let mut message = None;
    let mut refused = Vec::new();
    for e in &reply.errors {
        let id = request.id_doc(e.index).and_then(id_of);
        let reason = match (e.code, request.verb, id, request.hash(e.index)) {
            // An insert refused on a key: judged with the others.
            (DUPLICATE_KEY, Verb::Insert, Some(id), Some(hash)) => {
                duplicates.push(Pending { id, hash });
                message.get_or_insert_with(|| e.message.clone());
                continue;
            }
            // An upsert by `_id` cannot clash on `_id`.
            (DUPLICATE_KEY, ..) => format!(
                "refused by another unique index of the target (a duplicate key, not on _id): {}",
                redact::scrub(&e.message)
            ),
            _ => format!(
                "rejected by the server: code {}: {}",
                e.code,
                redact::scrub(&e.message)
            ),
        };
        let key = request
            .id_doc(e.index)
            .map(describe_id)
            .unwrap_or_else(|| format!("document {}", e.index));
        refused.push(Reject {
            row: 0,
            key,
            column: String::new(),
            reason,
        });
    }
    Ok(Sent {
        stats: set_aside(to, refused, n, stats)?,
        duplicates,
        message,
    })
}

/// The refused documents into the dead-letter file, or the error.
pub(super) fn set_aside(
    to: &Destination,
    refused: Vec<Reject>,
    n: u64,
    mut stats: WriteStats,
) -> Result<WriteStats> {
    let Some(first) = refused.first() else {
        return Ok(stats);
    };
    match &to.dead_letter {
        Some((dl, partition)) => {
            dl.record(partition, &refused)?;
            stats.rejected += refused.len() as u64;
            Ok(stats)
        }
        None => Err(Error::Write {
            namespace: to.namespace.clone(),
            message: format!(
                "{} of {n} documents refused; first: {} ({})",
                refused.len(),
                first.reason,
                first.key
            ),
        }),
    }
}

/// `insert_many` (an `OP_MSG` document sequence) of `docs`.
async fn send_documents(to: &Destination, docs: &[RawDocumentBuf]) -> Result<Reply> {
    let e = match to.collection.insert_many(docs).ordered(false).await {
        Ok(_) => return Ok(Reply::default()),
        Err(e) => e,
    };
    let ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
        return Err(driver_error(&to.namespace, &e));
    };
    Ok(Reply {
        errors: failure
            .write_errors
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|w| DocError {
                index: w.index,
                code: w.code,
                message: w.message.clone(),
            })
            .collect(),
        concern: failure
            .write_concern_error
            .as_ref()
            .map(|c| c.message.clone()),
        ..Reply::default()
    })
}

/// The command assembled in `cmd`, closed with the collection's write
/// concern (the driver applies none to a raw command) and sent as it is.
async fn send_command(
    to: &Destination,
    mut cmd: Vec<u8>,
    array_at: usize,
    verb: Verb,
) -> Result<Reply> {
    b::end_doc(&mut cmd, array_at);
    if let Some(concern) = write_concern(&to.collection) {
        b::put_element(&mut cmd, b::DOCUMENT, b"writeConcern\0");
        cmd.extend_from_slice(concern.as_bytes());
    }
    b::end_doc(&mut cmd, 0);
    let raw = RawDocumentBuf::from_bytes(cmd).map_err(|e| Error::Internal(e.to_string()))?;
    let reply = to
        .collection
        .client()
        .database(to.collection.namespace().db.as_str())
        .run_raw_command(raw)
        .await
        .map_err(|e| driver_error(&to.namespace, &e))?;
    Ok(read_reply(&reply, verb))
}

/// The write concern the URI (or client options) set, as a document.
pub(super) fn write_concern(collection: &Collection<RawDocumentBuf>) -> Option<RawDocumentBuf> {
    let concern = collection.write_concern()?;
    let d = bson::serialize_to_document(concern).ok()?;
    if d.is_empty() {
        return None;
    }
    RawDocumentBuf::try_from(&d).ok()
}

fn read_reply(reply: &Document, verb: Verb) -> Reply {
    let count = |key: &str| match reply.get(key) {
        Some(Bson::Int32(n)) => (*n).max(0) as u64,
        Some(Bson::Int64(n)) => (*n).max(0) as u64,
        Some(Bson::Double(n)) => n.max(0.0) as u64,
        _ => 0,
    };
    let errors = match reply.get_array("writeErrors") {
        Ok(list) => list
            .iter()
            .filter_map(|v| v.as_document())
            .map(|d| DocError {
                index: d.get_i32("index").map(|i| i as usize).unwrap_or(usize::MAX),
                code: d.get_i32("code").unwrap_or(0),
                message: d.get_str("errmsg").unwrap_or_default().to_string(),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let upserted = reply.get_array("upserted").map_or(0, |a| a.len() as u64);
    Reply {
        errors,
        concern: reply.get_document("writeConcernError").ok().map(|d| {
            d.get_str("errmsg")
                .unwrap_or("write concern error")
                .to_string()
        }),
        matched: match verb {
            Verb::Upsert => count("n").saturating_sub(upserted),
            Verb::Insert => 0,
        },
        modified: count("nModified"),
        upserted,
    }
}
