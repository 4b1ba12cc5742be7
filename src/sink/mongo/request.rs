//! One insert request and its reply: duplicates, write errors, the write
//! concern.
//!
//! A duplicate-key error (E11000) means the document is already there, from
//! an earlier attempt: it is counted as such, not as a failure.

use std::sync::Arc;

use bson::RawDocumentBuf;
use mongodb::error::ErrorKind;
use mongodb::Collection;

use crate::config::SendMode;
use crate::deadletter::{DeadLetter, Reject};
use crate::encode::bson as b;
use crate::error::{Error, Result};
use crate::mongo::driver_error;
use crate::redact;
use crate::sink::WriteStats;

const DUPLICATE_KEY: i32 = 11000;

/// One insert request: the documents of a run of rows, ready to send.
pub(super) enum Request {
    /// Copies handed to the driver's `insert_many`, which serialises them
    /// again into an `OP_MSG` document sequence.
    Driver {
        docs: Vec<RawDocumentBuf>,
        bytes: usize,
    },
    /// An `insert` command assembled directly from the encoded bytes (one
    /// copy), sent with `run_raw_command`. The command goes to the driver,
    /// so each document's `_id` is kept aside as a small document of its
    /// own (`ids`, `id_ranges`), to name a document the server rejects.
    Command {
        cmd: Vec<u8>,
        array_at: usize,
        ids: Vec<u8>,
        id_ranges: Vec<(usize, usize)>,
        bytes: usize,
    },
}

impl Request {
    pub(super) fn new(mode: SendMode, collection: &str, capacity: usize) -> Request {
        match mode {
            SendMode::InsertMany => Request::Driver {
                docs: Vec::with_capacity(capacity),
                bytes: 0,
            },
            SendMode::Command => {
                let mut cmd = Vec::with_capacity(1 << 16);
                let at = b::begin_doc(&mut cmd);
                debug_assert_eq!(at, 0);
                b::put_element(&mut cmd, b::STRING, b"insert\0");
                b::put_str(&mut cmd, collection.as_bytes());
                b::put_element(&mut cmd, b::BOOLEAN, b"ordered\0");
                cmd.push(0);
                b::put_element(&mut cmd, b::ARRAY, b"documents\0");
                let array_at = b::begin_doc(&mut cmd);
                Request::Command {
                    cmd,
                    array_at,
                    ids: Vec::with_capacity(capacity * 24),
                    id_ranges: Vec::with_capacity(capacity),
                    bytes: 0,
                }
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Request::Driver { docs, .. } => docs.len(),
            Request::Command { id_ranges, .. } => id_ranges.len(),
        }
    }

    pub(super) fn push(&mut self, doc: &[u8]) -> Result<()> {
        match self {
            Request::Driver { docs, bytes } => {
                *bytes += doc.len();
                docs.push(
                    RawDocumentBuf::from_bytes(doc.to_vec())
                        .map_err(|e| Error::Internal(e.to_string()))?,
                );
            }
            Request::Command {
                cmd,
                ids,
                id_ranges,
                bytes,
                ..
            } => {
                *bytes += doc.len();
                cmd.push(b::DOCUMENT);
                cmd.extend_from_slice(id_ranges.len().to_string().as_bytes());
                cmd.push(0);
                cmd.extend_from_slice(doc);
                // `_id` is the first element: keep it as `{_id: ...}`.
                let start = ids.len();
                let at = b::begin_doc(ids);
                ids.extend_from_slice(&doc[4..4 + first_element_len(doc)]);
                b::end_doc(ids, at);
                id_ranges.push((start, ids.len()));
            }
        }
        Ok(())
    }

    /// A document holding at least document `i`'s `_id`.
    fn id_doc(&self, i: usize) -> Option<&[u8]> {
        match self {
            Request::Driver { docs, .. } => docs.get(i).map(|d| d.as_bytes()),
            Request::Command { ids, id_ranges, .. } => id_ranges.get(i).map(|&(s, e)| &ids[s..e]),
        }
    }

    /// BSON bytes of the documents.
    pub(super) fn bytes(&self) -> usize {
        match self {
            Request::Driver { bytes, .. } | Request::Command { bytes, .. } => *bytes,
        }
    }
}

/// A write error of one document in a request.
struct DocError {
    index: usize,
    code: i32,
    message: String,
}

/// What the server said of one request: per-document write errors and a
/// write-concern error.
struct Reply {
    errors: Vec<DocError>,
    concern: Option<String>,
}

/// Send one request; duplicates count as already present, other rejected
/// documents go to the dead-letter file or fail the request.
pub(super) async fn insert(
    collection: Collection<RawDocumentBuf>,
    namespace: String,
    mut request: Request,
    dead_letter: Option<(Arc<DeadLetter>, String)>,
) -> Result<WriteStats> {
    let n = request.len() as u64;
    let base = WriteStats {
        inserted: n,
        bytes: request.bytes() as u64,
        requests: 1,
        ..WriteStats::default()
    };
    let reply = match &mut request {
        Request::Driver { docs, .. } => send_documents(&collection, &namespace, docs).await?,
        Request::Command { cmd, array_at, .. } => {
            send_command(&collection, &namespace, cmd, *array_at).await?
        }
    };
    if let Some(concern) = reply.concern {
        return Err(Error::Write {
            namespace,
            message: format!("write concern error: {}", redact::scrub(&concern)),
        });
    }
    let errors = reply.errors;
    let dups = errors.iter().filter(|w| w.code == DUPLICATE_KEY).count() as u64;
    let others: Vec<&DocError> = errors.iter().filter(|w| w.code != DUPLICATE_KEY).collect();
    if others.is_empty() {
        return Ok(WriteStats {
            inserted: n - dups,
            already_present: dups,
            ..base
        });
    }
    let describe = |i: usize| {
        request
            .id_doc(i)
            .map(describe_id)
            .unwrap_or_else(|| format!("document {i}"))
    };
    if let Some((dl, partition)) = &dead_letter {
        let rejects: Vec<Reject> = others
            .iter()
            .map(|w| Reject {
                row: 0,
                key: describe(w.index),
                column: String::new(),
                reason: format!(
                    "rejected by the server: code {}: {}",
                    w.code,
                    redact::scrub(&w.message)
                ),
            })
            .collect();
        dl.record(partition, &rejects)?;
        let rejected = rejects.len() as u64;
        return Ok(WriteStats {
            inserted: n - dups - rejected,
            already_present: dups,
            rejected,
            ..base
        });
    }
    let w = others[0];
    Err(Error::Write {
        namespace,
        message: format!(
            "{} of {} documents rejected; first: code {}: {} ({})",
            others.len(),
            n,
            w.code,
            redact::scrub(&w.message),
            describe(w.index)
        ),
    })
}

/// `insert_many` (an `OP_MSG` document sequence) of `docs`.
async fn send_documents(
    collection: &Collection<RawDocumentBuf>,
    namespace: &str,
    docs: &[RawDocumentBuf],
) -> Result<Reply> {
    let e = match collection.insert_many(docs).ordered(false).await {
        Ok(_) => {
            return Ok(Reply {
                errors: Vec::new(),
                concern: None,
            })
        }
        Err(e) => e,
    };
    let ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
        return Err(driver_error(namespace, &e));
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
    })
}

/// The `insert` command assembled in `cmd`, closed and sent as it is.
async fn send_command(
    collection: &Collection<RawDocumentBuf>,
    namespace: &str,
    cmd: &mut Vec<u8>,
    array_at: usize,
) -> Result<Reply> {
    b::end_doc(cmd, array_at);
    b::end_doc(cmd, 0);
    let raw = RawDocumentBuf::from_bytes(std::mem::take(cmd))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let reply = collection
        .client()
        .database(collection.namespace().db.as_str())
        .run_raw_command(raw)
        .await
        .map_err(|e| driver_error(namespace, &e))?;
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
    let concern = reply.get_document("writeConcernError").ok().map(|d| {
        d.get_str("errmsg")
            .unwrap_or("write concern error")
            .to_string()
    });
    Ok(Reply { errors, concern })
}

/// Length of a document's first element (type, name, value); 0 when it is
/// of a type an `_id` written by the encoder never has.
fn first_element_len(doc: &[u8]) -> usize {
    let Some(&ty) = doc.get(4) else { return 0 };
    let Some(name) = doc[5..].iter().position(|&c| c == 0) else {
        return 0;
    };
    let value = 5 + name + 1;
    let i32_at = |at: usize| {
        doc.get(at..at + 4).map_or(0, |b| {
            i32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
        })
    };
    let len = match ty {
        b::INT32 => 4,
        b::INT64 | b::DATETIME | b::DOUBLE => 8,
        b::OBJECT_ID => 12,
        b::DECIMAL128 => 16,
        b::BOOLEAN => 1,
        b::STRING => 4 + i32_at(value),
        b::DOCUMENT | b::ARRAY => i32_at(value),
        b::BINARY => 5 + i32_at(value),
        _ => return 0,
    };
    if value + len <= doc.len() {
        1 + name + 1 + len
    } else {
        0
    }
}

/// `_id: 42` of a raw document, for messages.
pub(super) fn describe_id(doc: &[u8]) -> String {
    match bson::RawDocument::from_bytes(doc)
        .ok()
        .and_then(|d| d.get("_id").ok().flatten())
    {
        Some(id) => match bson::Bson::try_from(id) {
            Ok(b) => format!("_id: {b}"),
            Err(_) => "_id unreadable".into(),
        },
        None => "no _id".into(),
    }
}
