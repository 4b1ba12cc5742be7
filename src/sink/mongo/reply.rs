//! Sending one request and judging the reply: write errors, the write
//! concern, and duplicate keys told apart.
//!
//! A duplicate-key error (E11000) on an insert is looked into: the target's
//! document with that `_id` is read back and compared, by a 128-bit hash of
//! its bytes, with the one sent. Equal, it is a document already present (a
//! resumed or retried run); different, it is a conflict, handled by
//! `target.on_conflict`; absent, the key that clashed was another unique
//! index's, and the row is refused like any other write error.

use std::collections::HashMap;
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use futures_util::TryStreamExt;
use mongodb::error::ErrorKind;
use mongodb::Collection;

use super::request::{describe_id, hash, Body, Request, Verb};
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

/// How a document refused as a duplicate stands against the target's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duplicate {
    /// The target holds this very document.
    Same,
    /// The target holds another document under this `_id`.
    Different,
    /// No document with this `_id`: another unique index refused it.
    OtherIndex,
}

/// Send `request` and account for every one of its documents.
pub(super) async fn execute(to: &Destination, mut request: Request) -> Result<WriteStats> {
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
            stats.replaced = reply.modified;
            stats.already_present = reply.matched.saturating_sub(reply.modified);
        }
    }
    let duplicates: Vec<usize> = reply
        .errors
        .iter()
        .filter(|e| e.code == DUPLICATE_KEY)
        .map(|e| e.index)
        .collect();
    let judged = judge(to, &request, &duplicates).await?;
    let mut refused = Vec::new();
    for e in &reply.errors {
        let reason = match judged.get(&e.index) {
            Some(Duplicate::Same) => {
                stats.already_present += 1;
                continue;
            }
            Some(Duplicate::Different) if to.on_conflict == OnConflict::Skip => {
                stats.kept += 1;
                continue;
            }
            Some(Duplicate::Different) => "a different document with this _id is already in \
                the target: `mapping.id` is not unique in the source, or the collection holds other \
                data (target.on_conflict = \"skip\" keeps the one there, \"replace\" overwrites it)"
                .to_string(),
            Some(Duplicate::OtherIndex) | None if e.code == DUPLICATE_KEY => format!(
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
    set_aside(to, refused, n, stats)
}

/// The refused documents into the dead-letter file, or the error.
fn set_aside(
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

/// How each duplicate of an insert stands against the target's document.
async fn judge(
    to: &Destination,
    request: &Request,
    duplicates: &[usize],
) -> Result<HashMap<usize, Duplicate>> {
    if duplicates.is_empty() {
        return Ok(HashMap::new());
    }
    if request.verb == Verb::Upsert {
        // An upsert by `_id` cannot clash on `_id`.
        return Ok(duplicates
            .iter()
            .map(|&i| (i, Duplicate::OtherIndex))
            .collect());
    }
    let ids: Vec<(usize, Bson)> = duplicates
        .iter()
        .filter_map(|&i| Some((i, id_of(request.id_doc(i)?)?)))
        .collect();
    let filter = doc! {"_id": {"$in": ids.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>()}};
    let mut stored: HashMap<Vec<u8>, u128> = HashMap::new();
    let mut cursor = to
        .collection
        .find(filter)
        .await
        .map_err(|e| driver_error(&to.namespace, &e))?;
    while let Some(d) = cursor
        .try_next()
        .await
        .map_err(|e| driver_error(&to.namespace, &e))?
    {
        if let Some(id) = id_of(d.as_bytes()) {
            stored.insert(key_of(&id), hash(d.as_bytes()));
        }
    }
    Ok(ids
        .into_iter()
        .map(|(i, id)| {
            let verdict = match stored.get(&key_of(&id)) {
                None => Duplicate::OtherIndex,
                Some(&h) if Some(h) == request.hash(i) => Duplicate::Same,
                Some(_) => Duplicate::Different,
            };
            (i, verdict)
        })
        .collect())
}

/// The `_id` of a raw document.
fn id_of(doc: &[u8]) -> Option<Bson> {
    let raw = RawDocument::from_bytes(doc).ok()?;
    Bson::try_from(raw.get("_id").ok()??).ok()
}

/// `{_id: id}` as bytes: equal ids, equal keys.
fn key_of(id: &Bson) -> Vec<u8> {
    RawDocumentBuf::try_from(&doc! {"_id": id.clone()})
        .map(RawDocumentBuf::into_bytes)
        .unwrap_or_default()
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
