//! Duplicate keys told apart, many at a time.
//!
//! An insert refused with E11000 leaves a [`Pending`] document: its `_id`
//! and the hash of the bytes sent. The writer collects them over many
//! requests and [`Judge::flush`]es them together (when enough are pending,
//! and always before the partition is done): the target's documents with
//! those `_id`s are read back in as few reads as possible and compared by
//! hash. Equal, a document already present (a resumed or repeated run);
//! different, a conflict handled by `target.on_conflict`; absent, the key
//! that clashed was another unique index's, and the row is refused.
//!
//! Reading back in bulk matters on a server that scans for these reads
//! (FerretDB v1 uses no index for `$in` nor for an integer `_id`): one read
//! per request made a repeated 200,000-row load 18 times slower than the
//! first; one read per partition (or per [`MAX_PENDING`] documents, fewer
//! on a small budget) makes it a scan or two.

use std::collections::HashMap;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use futures_util::TryStreamExt;

use super::reply::{set_aside, Destination};
use super::request::hash;
use crate::config::OnConflict;
use crate::deadletter::Reject;
use crate::error::Result;
use crate::mongo::driver_error;
use crate::redact;
use crate::sink::WriteStats;

/// Duplicates held before they are judged, at most: about 60 bytes each,
/// and as many again while they are judged.
const MAX_PENDING: usize = 250_000;
/// Bytes a pending duplicate is counted for against the budget.
const PENDING_BYTES: usize = 128;
/// Ids per read when they are read by list.
const IDS_PER_READ: usize = 10_000;

/// A document refused as a duplicate key, to be judged.
pub(super) struct Pending {
    pub id: Bson,
    pub hash: u128,
}

/// The duplicates of one writer, judged together.
pub(super) struct Judge {
    pending: Vec<Pending>,
    /// Judge once this many are pending.
    cap: usize,
    /// The server's message for the first of them (for a refusal by
    /// another index).
    message: Option<String>,
}

/// An `_id` as the unique index sees it: numbers by value, anything else
/// by its bytes.
#[derive(Hash, PartialEq, Eq)]
enum Key {
    Int(i64),
    Bytes(Vec<u8>),
}

fn key_of(id: &Bson) -> Key {
    match id {
        Bson::Int32(v) => Key::Int(*v as i64),
        Bson::Int64(v) => Key::Int(*v),
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Key::Int(*f as i64),
        other => Key::Bytes(
            RawDocumentBuf::try_from(&doc! {"_id": other.clone()})
                .map(RawDocumentBuf::into_bytes)
                .unwrap_or_default(),
        ),
    }
}

fn int_of(id: &Bson) -> Option<i64> {
    match id {
        Bson::Int32(v) => Some(*v as i64),
        Bson::Int64(v) => Some(*v),
        _ => None,
    }
}

impl Judge {
    /// A judge holding at most `bytes` of pending duplicates (the writer's
    /// share of the budget for one request), within 1,000 and
    /// [`MAX_PENDING`] documents.
    pub fn new(bytes: usize) -> Self {
        Judge {
            pending: Vec::new(),
            cap: (bytes / PENDING_BYTES).clamp(1_000, MAX_PENDING),
            message: None,
        }
    }

    /// Whether enough are pending to judge them now.
    pub fn full(&self) -> bool {
        self.pending.len() >= self.cap
    }

    pub fn add(&mut self, pending: Vec<Pending>, message: Option<String>) {
        if self.message.is_none() {
            self.message = message;
        }
        self.pending.extend(pending);
    }

    /// Judge every pending duplicate: their counts, or the error that
    /// refuses them (or their dead letters).
    pub async fn flush(&mut self, to: &Destination) -> Result<WriteStats> {
        let pending = std::mem::take(&mut self.pending);
        let message = self.message.take().unwrap_or_default();
        if pending.is_empty() {
            return Ok(WriteStats::default());
        }
        let mut stored: HashMap<Key, Option<u128>> =
            pending.iter().map(|p| (key_of(&p.id), None)).collect();
        for filter in reads(&pending) {
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
                if let Some(slot) = id_of(d.as_bytes()).and_then(|id| stored.get_mut(&key_of(&id)))
                {
                    *slot = Some(hash(d.as_bytes()));
                }
            }
        }
        let mut stats = WriteStats::default();
        let mut refused = Vec::new();
        let n = pending.len() as u64;
        for p in pending {
            let reason = match stored.get(&key_of(&p.id)).copied().flatten() {
                Some(h) if h == p.hash => {
                    stats.already_present += 1;
                    continue;
                }
                Some(_) if to.on_conflict == OnConflict::Skip => {
                    stats.kept += 1;
                    continue;
                }
                Some(_) => "a different document with this _id is already in the target: \
                    `mapping.id` is not unique in the source, or the collection holds other data \
                    (target.on_conflict = \"skip\" keeps the one there, \"replace\" overwrites it)"
                    .to_string(),
                None => format!(
                    "refused by another unique index of the target (a duplicate key, not on \
                     _id): {}",
                    redact::scrub(&message)
                ),
            };
            refused.push(Reject {
                row: 0,
                key: format!("_id: {}", p.id),
                column: String::new(),
                reason,
            });
        }
        set_aside(to, refused, n, stats)
    }
}

/// The reads that bring back every pending `_id`: one range read when the
/// ids are integers filling at least half of their range (a resumed or
/// repeated load of a key from a sequence: at most twice the documents
/// needed, and one scan on a server without an index), lists otherwise.
fn reads(pending: &[Pending]) -> Vec<Document> {
    let ints: Option<Vec<i64>> = pending.iter().map(|p| int_of(&p.id)).collect();
    if let Some(ints) = ints {
        let (lo, hi) = (ints.iter().min(), ints.iter().max());
        if let (Some(&lo), Some(&hi)) = (lo, hi) {
            let span = hi as i128 - lo as i128 + 1;
            if span <= 2 * ints.len() as i128 {
                return vec![doc! {"_id": {"$gte": lo, "$lte": hi}}];
            }
        }
    }
    pending
        .chunks(IDS_PER_READ)
        .map(|c| read_back_filter(c.iter().map(|p| &p.id)))
        .collect()
}

/// `{_id: {$in: ids}}`, led by the ids' range when they are all integers or
/// all ObjectIds (whose order is the same everywhere, whatever a collation
/// says). A server that indexes `_id` reads the same few documents either
/// way; one that scans (FerretDB v1 evaluates `$in` on every document of the
/// collection) rejects most documents on the range before trying the list:
/// ten times faster there, measured on 10,000 ids in 200,000 documents.
fn read_back_filter<'a>(ids: impl Iterator<Item = &'a Bson> + Clone) -> Document {
    let list: Vec<Bson> = ids.clone().cloned().collect();
    let range = |lo: Bson, hi: Bson| doc! {"_id": {"$gte": lo, "$lte": hi, "$in": list.clone()}};
    let ints: Option<Vec<i64>> = ids.clone().map(int_of).collect();
    if let Some(ints) = ints {
        if let (Some(lo), Some(hi)) = (ints.iter().min(), ints.iter().max()) {
            return range(Bson::Int64(*lo), Bson::Int64(*hi));
        }
    }
    let oids: Option<Vec<bson::oid::ObjectId>> = ids
        .map(|id| match id {
            Bson::ObjectId(o) => Some(*o),
            _ => None,
        })
        .collect();
    if let Some(oids) = oids {
        if let (Some(lo), Some(hi)) = (oids.iter().min(), oids.iter().max()) {
            return range(Bson::ObjectId(*lo), Bson::ObjectId(*hi));
        }
    }
    doc! {"_id": {"$in": list}}
}

/// The `_id` of a raw document.
pub(super) fn id_of(doc: &[u8]) -> Option<Bson> {
    let raw = RawDocument::from_bytes(doc).ok()?;
    Bson::try_from(raw.get("_id").ok()??).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(ids: impl IntoIterator<Item = Bson>) -> Vec<Pending> {
        ids.into_iter().map(|id| Pending { id, hash: 0 }).collect()
    }

    #[test]
    fn dense_integer_ids_are_read_back_as_one_range() {
        let reads = reads(&pending(
            (10..30i64).map(Bson::Int64).chain([Bson::Int32(35)]),
        ));
        assert_eq!(reads, [doc! {"_id": {"$gte": 10i64, "$lte": 35i64}}]);
    }

    #[test]
    fn sparse_ids_are_read_back_by_lists_of_at_most_ten_thousand() {
        let reads = reads(&pending((0..25_000i64).map(|i| Bson::Int64(i * 3))));
        assert_eq!(reads.len(), 3);
        let cond = reads[0].get_document("_id").unwrap();
        // The range comes first: a scanning server rejects on it before the list.
        assert_eq!(cond.keys().collect::<Vec<_>>(), ["$gte", "$lte", "$in"]);
        assert_eq!(cond.get("$gte"), Some(&Bson::Int64(0)));
        assert_eq!(cond.get("$lte"), Some(&Bson::Int64(29_997)));
        assert_eq!(cond.get_array("$in").unwrap().len(), IDS_PER_READ);
    }

    #[test]
    fn mixed_or_collated_ids_get_the_list_alone() {
        for ids in [
            vec![Bson::Int32(1), Bson::String("1".into())],
            vec![Bson::String("b".into()), Bson::String("a".into())],
            vec![Bson::Double(1.5), Bson::Int64(2)],
        ] {
            let reads = reads(&pending(ids.clone()));
            let cond = reads[0].get_document("_id").unwrap();
            assert_eq!(cond.keys().collect::<Vec<_>>(), ["$in"], "{ids:?}");
        }
    }

    #[test]
    fn the_pending_cap_follows_the_budget() {
        assert_eq!(Judge::new(256 << 10).cap, 2_048);
        assert_eq!(Judge::new(0).cap, 1_000);
        assert_eq!(Judge::new(usize::MAX).cap, MAX_PENDING);
    }

    #[test]
    fn numbers_of_one_value_are_one_key() {
        assert!(key_of(&Bson::Int32(5)) == key_of(&Bson::Int64(5)));
        assert!(key_of(&Bson::Int64(5)) == key_of(&Bson::Double(5.0)));
        assert!(key_of(&Bson::Int64(5)) != key_of(&Bson::Double(5.5)));
        assert!(key_of(&Bson::Int64(5)) != key_of(&Bson::String("5".into())));
    }
}
