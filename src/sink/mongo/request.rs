//! One write request, ready to send: an unordered `insert` of the documents
//! of a run of rows, or (`target.on_conflict = "replace"` or `"merge"`) an
//! unordered `update` that upserts each of them by `_id`: the document
//! itself as replacement, or the `$set`/`$unset` update that merges it
//! ([`crate::encode::Fields::merge_update`]).
//!
//! A request keeps, for every document, what is needed to judge a
//! duplicate-key error afterwards ([`super::reply`]): its `_id`, and where
//! its bytes can be read again: its own copy for the driver, or (a command,
//! whose bytes are gone once sent) its place in the encoded batch, which
//! the request holds until it is answered. The hash that compares it with
//! the target's document is computed only for a duplicate.

use std::sync::Arc;

use bson::RawDocumentBuf;

use crate::config::SendMode;
use crate::encode::{bson as b, EncodedBatch, Fields};
use crate::error::{Error, Result};

/// What a request does with its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    /// Insert; a document whose `_id` is taken is refused (E11000).
    Insert,
    /// Replace the document with the same `_id` (or merge into it: the
    /// request's `merge` fields), or insert it.
    Upsert,
}

/// The documents of one request.
pub(super) enum Body {
    /// Copies handed to the driver's `insert_many`, which serialises them
    /// again into an `OP_MSG` document sequence.
    Driver(Vec<RawDocumentBuf>),
    /// A command assembled directly from the encoded bytes (one copy),
    /// sent with `run_raw_command`; `array_at` is where its array of
    /// documents (or update statements) begins.
    Command { cmd: Vec<u8>, array_at: usize },
}

/// One request and, per document, its `_id` and where its bytes are.
pub(super) struct Request {
    pub(super) verb: Verb,
    pub(super) body: Body,
    /// How many documents it holds.
    count: usize,
    /// `{_id: ...}` of each document, one after the other: kept for the
    /// driver's body and for upserts (whose statements select by it). An
    /// insert command reads its documents' ids from their places instead.
    ids: Vec<u8>,
    id_ranges: Vec<(usize, usize)>,
    /// The batch a command's documents come from, and per document its
    /// chunk and offset there.
    origin: Option<Arc<EncodedBatch>>,
    places: Vec<(usize, usize)>,
    bytes: usize,
    /// An upsert merges these fields instead of replacing the document.
    merge: Option<Arc<Fields>>,
    /// What merging adds to a statement at most (computed once: the
    /// writer asks for it at every document).
    merge_overhead: usize,
}

impl Request {
    /// A request for about `capacity` documents of `bytes` bytes in all
    /// (room made at once: a command that grows is copied as it grows).
    pub(super) fn new(
        mode: SendMode,
        verb: Verb,
        collection: &str,
        capacity: usize,
        bytes: usize,
    ) -> Request {
        let body = match (mode, verb) {
            (SendMode::InsertMany, Verb::Insert) => Body::Driver(Vec::with_capacity(capacity)),
            _ => {
                let (command, array) = match verb {
                    Verb::Insert => (&b"insert\0"[..], &b"documents\0"[..]),
                    Verb::Upsert => (&b"update\0"[..], &b"updates\0"[..]),
                };
                let mut cmd = Vec::with_capacity(bytes + capacity * 80 + 1024);
                let at = b::begin_doc(&mut cmd);
                debug_assert_eq!(at, 0);
                b::put_element(&mut cmd, b::STRING, command);
                b::put_str(&mut cmd, collection.as_bytes());
                b::put_element(&mut cmd, b::BOOLEAN, b"ordered\0");
                cmd.push(0);
                b::put_element(&mut cmd, b::ARRAY, array);
                let array_at = b::begin_doc(&mut cmd);
                Body::Command { cmd, array_at }
            }
        };
        let places = match body {
            Body::Command { .. } => Vec::with_capacity(capacity),
            Body::Driver(_) => Vec::new(),
        };
        let ids = if keeps_ids(&body, verb) { capacity } else { 0 };
        Request {
            verb,
            body,
            count: 0,
            ids: Vec::with_capacity(ids * 24),
            id_ranges: Vec::with_capacity(ids),
            origin: None,
            places,
            bytes: 0,
            merge: None,
            merge_overhead: 0,
        }
    }

    /// The documents come from `batch`. A command keeps it until the
    /// request is dropped; the driver's body has its own copies.
    pub(super) fn reading_from(mut self, batch: Arc<EncodedBatch>) -> Self {
        if let Body::Command { .. } = self.body {
            self.origin = Some(batch);
        }
        self
    }

    /// Upserts merge `fields` into the stored documents.
    pub(super) fn merging(mut self, fields: Option<Arc<Fields>>) -> Self {
        self.merge_overhead = fields.as_ref().map_or(0, |f| f.merge_overhead());
        self.merge = fields;
        self
    }

    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// BSON bytes of the documents.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes a document of `len` bytes adds to the request beyond itself.
    pub(super) fn overhead(&self) -> usize {
        match self.verb {
            Verb::Insert => 8,
            // {q: {_id}, u: <doc>, upsert: true}
            Verb::Upsert => 64 + self.merge_overhead,
        }
    }

    /// Add `doc`, which starts at `place` (chunk, offset) of the batch given
    /// to [`Request::reading_from`].
    pub(super) fn push(&mut self, doc: &[u8], place: (usize, usize)) -> Result<()> {
        self.bytes += doc.len();
        let index = self.count;
        self.count += 1;
        if keeps_ids(&self.body, self.verb) {
            // `_id` is the document's first element: keep it as `{_id: ...}`.
            let start = self.ids.len();
            let at = b::begin_doc(&mut self.ids);
            self.ids
                .extend_from_slice(&doc[4..4 + first_element_len(doc)]);
            b::end_doc(&mut self.ids, at);
            self.id_ranges.push((start, self.ids.len()));
        }
        match &mut self.body {
            Body::Driver(docs) => docs.push(
                RawDocumentBuf::from_bytes(doc.to_vec())
                    .map_err(|e| Error::Internal(e.to_string()))?,
            ),
            Body::Command { cmd, .. } => {
                // The command's bytes are gone once sent: keep the place.
                self.places.push(place);
                cmd.push(b::DOCUMENT);
                b::put_index_key(cmd, index);
                match self.verb {
                    Verb::Insert => cmd.extend_from_slice(doc),
                    Verb::Upsert => {
                        let (start, end) = self.id_ranges[index];
                        let statement = b::begin_doc(cmd);
                        b::put_element(cmd, b::DOCUMENT, b"q\0");
                        cmd.extend_from_slice(&self.ids[start..end]);
                        b::put_element(cmd, b::DOCUMENT, b"u\0");
                        match &self.merge {
                            Some(fields) => fields.merge_update(doc, cmd)?,
                            None => cmd.extend_from_slice(doc),
                        }
                        b::put_element(cmd, b::BOOLEAN, b"upsert\0");
                        cmd.push(1);
                        b::end_doc(cmd, statement);
                    }
                }
            }
        }
        Ok(())
    }

    /// A document holding document `i`'s `_id`: `{_id: ...}`, or (an
    /// insert command) document `i` itself.
    pub(super) fn id_doc(&self, i: usize) -> Option<&[u8]> {
        if keeps_ids(&self.body, self.verb) {
            self.id_ranges.get(i).map(|&(s, e)| &self.ids[s..e])
        } else {
            self.placed(i)
        }
    }

    /// The hash of document `i`'s bytes.
    pub(super) fn hash(&self, i: usize) -> Option<u128> {
        match &self.body {
            Body::Driver(docs) => docs.get(i).map(|d| hash(d.as_bytes())),
            Body::Command { .. } => self.placed(i).map(hash),
        }
    }

    /// A command's document `i`, read again from its batch.
    fn placed(&self, i: usize) -> Option<&[u8]> {
        let &(chunk, at) = self.places.get(i)?;
        self.origin.as_ref()?.chunks.get(chunk)?.doc_at(at)
    }
}

/// Whether a request keeps each document's `{_id: ...}`: the driver's body
/// and upserts (whose statements select by it) do; an insert command reads
/// it from the document's place when a duplicate is reported.
fn keeps_ids(body: &Body, verb: Verb) -> bool {
    !matches!((body, verb), (Body::Command { .. }, Verb::Insert))
}

/// A 128-bit hash of a document's bytes: equal hashes are taken for equal
/// documents (a chance collision is about 2⁻¹²⁸).
pub(crate) fn hash(doc: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(doc)
}

/// The `_id` element of a raw document (type, name, value) as bytes: equal
/// ids, equal bytes. The first element where it is `_id` (as the encoder and
/// MongoDB put it), else found and copied; empty without one.
pub(crate) fn id_key(doc: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let n = first_element_len(doc);
    if n > 4 && doc.get(5..9) == Some(b"_id\0") {
        return std::borrow::Cow::Borrowed(&doc[4..4 + n]);
    }
    let id = bson::RawDocument::from_bytes(doc)
        .ok()
        .and_then(|d| d.get("_id").ok().flatten())
        .and_then(|id| bson::Bson::try_from(id).ok());
    let Some(id) = id else {
        return std::borrow::Cow::Borrowed(&[]);
    };
    let mut one = RawDocumentBuf::try_from(&bson::doc! {"_id": id})
        .map(RawDocumentBuf::into_bytes)
        .unwrap_or_default();
    one.truncate(one.len().saturating_sub(1));
    std::borrow::Cow::Owned(one.split_off(4.min(one.len())))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::EncodedChunk;
    use bson::{doc, Document};

    fn raw(d: Document) -> Vec<u8> {
        RawDocumentBuf::try_from(&d).unwrap().into_bytes()
    }

    /// The command a request sends, closed and decoded.
    fn command(r: Request) -> Document {
        let Body::Command { mut cmd, array_at } = r.body else {
            panic!("an upsert is a command");
        };
        b::end_doc(&mut cmd, array_at);
        b::end_doc(&mut cmd, 0);
        Document::try_from(RawDocumentBuf::from_bytes(cmd).unwrap()).unwrap()
    }

    #[test]
    fn an_upsert_request_is_an_update_command_by_id() {
        let mut r = Request::new(SendMode::InsertMany, Verb::Upsert, "c", 2, 0);
        r.push(&raw(doc! {"_id": 7i64, "s": "x"}), (0, 0)).unwrap();
        r.push(&raw(doc! {"_id": "k", "n": 1}), (0, 0)).unwrap();
        assert_eq!(
            command(r),
            doc! {"update": "c", "ordered": false, "updates": [
                {"q": {"_id": 7i64}, "u": {"_id": 7i64, "s": "x"}, "upsert": true},
                {"q": {"_id": "k"}, "u": {"_id": "k", "n": 1}, "upsert": true},
            ]}
        );
    }

    #[test]
    fn a_merging_upsert_sets_the_fields_by_path() {
        let fields = Fields(vec![
            ("s".into(), None),
            ("a".into(), Some(Fields(vec![("b".into(), None)]))),
        ]);
        let mut r = Request::new(SendMode::Command, Verb::Upsert, "c", 1, 0)
            .merging(Some(Arc::new(fields)));
        r.push(&raw(doc! {"_id": 7i64, "a": {"b": 1}}), (0, 0))
            .unwrap();
        assert_eq!(
            command(r),
            doc! {"update": "c", "ordered": false, "updates": [
                {"q": {"_id": 7i64}, "u": {"$set": {"a.b": 1}, "$unset": {"s": ""}}, "upsert": true},
            ]}
        );
    }

    #[test]
    fn an_id_key_is_the_same_wherever_the_id_stands() {
        let first = raw(doc! {"_id": 7i64, "a": 1});
        let later = raw(doc! {"a": 1, "_id": 7i64});
        assert_eq!(id_key(&first), id_key(&later));
        assert_ne!(id_key(&first), id_key(&raw(doc! {"_id": 8i64})));
        assert!(id_key(&raw(doc! {"a": 1})).is_empty());
    }

    #[test]
    fn each_document_keeps_its_id_and_hash() {
        let a = raw(doc! {"_id": 1, "s": "a"});
        let b = raw(doc! {"_id": 2, "s": "bb"});
        // The second document in the second chunk, after another.
        let chunks = vec![
            EncodedChunk {
                buf: a.clone(),
                docs: 1,
            },
            EncodedChunk {
                buf: [a.clone(), b.clone()].concat(),
                docs: 2,
            },
        ];
        let batch = Arc::new(EncodedBatch {
            chunks,
            docs: 3,
            bytes: 2 * a.len() + b.len(),
            rejects: Vec::new(),
        });
        let (b_at, b_doc) = batch.chunks[1].iter_at().nth(1).unwrap();
        assert_eq!(b_doc, &b[..]);
        for mode in [SendMode::Command, SendMode::InsertMany] {
            let mut r = Request::new(mode, Verb::Insert, "c", 2, 0).reading_from(batch.clone());
            r.push(&a, (0, 0)).unwrap();
            r.push(&b, (1, b_at)).unwrap();
            // `{_id}` for the driver's copies; the document itself, read
            // again from its place, for a command.
            let id = |i| super::super::judge::id_of(r.id_doc(i).unwrap());
            assert_eq!(id(0), Some(bson::Bson::Int32(1)), "{mode:?}");
            assert_eq!(id(1), Some(bson::Bson::Int32(2)), "{mode:?}");
            assert_eq!(describe_id(r.id_doc(1).unwrap()), "_id: 2");
            assert_eq!(r.id_doc(2), None);
            assert_eq!(r.hash(0), Some(hash(&a)), "{mode:?}");
            assert_eq!(r.hash(1), Some(hash(&b)), "{mode:?}");
            assert_ne!(r.hash(0), Some(hash(&raw(doc! {"_id": 1, "s": "b"}))));
            assert_eq!(r.hash(2), None);
            assert_eq!(r.len(), 2);
            assert_eq!(r.bytes(), a.len() + b.len());
        }
    }
}
