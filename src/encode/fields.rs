//! The fields a mapping writes, as a tree, and what a merge does with them
//! (`target.on_conflict = "merge"`).
//!
//! A merge updates only the fields the job writes and leaves every other
//! field of the document as it is. Each encoded document becomes the update
//! `{$set: {...}, $unset: {...}}`: a field present in the document is set
//! by its full dotted path (`address.city`), so the other fields of a
//! sub-document the mapping builds survive too; a field the document lacks
//! (its column was NULL under `mapping.null = "omit"`) is unset, so a value
//! cleared at the source is cleared in the copy. Values that are documents
//! of their own (JSON, SUPER, GeoJSON) are set whole.

use super::bson as b;
use super::{Node, Plan};
use crate::error::{Error, Result};

/// The fields a mapping writes besides `_id`, in the order it writes them.
/// A field with children is a sub-document the mapping builds from dotted
/// paths (`mapping.rename`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, Option<Fields>)>);

impl Fields {
    pub(super) fn of(plan: &Plan) -> Fields {
        fn walk(plan: &Plan, nodes: &[Node]) -> Fields {
            Fields(
                nodes
                    .iter()
                    .map(|n| match n {
                        Node::Leaf(i) => (name(&plan.leaves[*i].key), None),
                        Node::Doc { key, children } => (name(key), Some(walk(plan, children))),
                    })
                    .collect(),
            )
        }
        fn name(key: &[u8]) -> String {
            String::from_utf8_lossy(&key[..key.len().saturating_sub(1)]).into_owned()
        }
        walk(plan, &plan.body)
    }

    /// Bytes a merge update may add to a document of these fields: every
    /// leaf's full path once more (as `$set` or `$unset` key) and the
    /// operators around them.
    pub fn merge_overhead(&self) -> usize {
        fn walk(f: &Fields, prefix: usize) -> usize {
            f.0.iter()
                .map(|(name, children)| match children {
                    Some(c) => walk(c, prefix + name.len() + 1),
                    None => prefix + name.len() + 8,
                })
                .sum()
        }
        32 + walk(self, 0)
    }

    /// The update `{$set: {...}[, $unset: {...}]}` that merges `doc` (an
    /// encoded document, `_id` first) into the one stored under its `_id`,
    /// appended to `out`. A document with no field to set or unset (a
    /// mapping of key columns only) becomes `{$setOnInsert: {_id}}`.
    pub fn merge_update(&self, doc: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let elements = elements(doc)?;
        let (id, rest) = match elements.split_first() {
            Some((first, rest)) if first.1 == b"_id" => (Some(first), rest),
            _ => (None, &elements[..]),
        };
        let mut set = Vec::new();
        let mut unset = Vec::new();
        self.flatten(rest, &mut String::new(), &mut set, &mut unset)?;
        let update = b::begin_doc(out);
        if set.is_empty() && unset.is_empty() {
            let (ty, name, value) = id.ok_or_else(|| {
                Error::Internal("a merged document without fields has no _id".into())
            })?;
            b::put_element(out, b::DOCUMENT, b"$setOnInsert\0");
            let at = b::begin_doc(out);
            put_raw(out, *ty, name, value);
            b::end_doc(out, at);
        }
        if !set.is_empty() {
            b::put_element(out, b::DOCUMENT, b"$set\0");
            let at = b::begin_doc(out);
            for (ty, path, value) in set {
                put_raw(out, ty, path.as_bytes(), value);
            }
            b::end_doc(out, at);
        }
        if !unset.is_empty() {
            b::put_element(out, b::DOCUMENT, b"$unset\0");
            let at = b::begin_doc(out);
            for path in unset {
                b::put_element(out, b::STRING, &b::cstring_key(&path));
                b::put_str(out, b"");
            }
            b::end_doc(out, at);
        }
        b::end_doc(out, update);
        Ok(())
    }

    /// Split `elements` (of a document of these fields, at `prefix`) into
    /// leaves to set, by full path, and paths to unset.
    fn flatten<'d>(
        &self,
        found: &[Element<'d>],
        prefix: &mut String,
        set: &mut Vec<(u8, String, &'d [u8])>,
        unset: &mut Vec<String>,
    ) -> Result<()> {
        let mut next = 0;
        for (name, children) in &self.0 {
            // The encoder writes fields in this order: look at the next
            // element first, then anywhere.
            let at = match found.get(next) {
                Some(e) if e.1 == name.as_bytes() => Some(next),
                _ => found.iter().position(|e| e.1 == name.as_bytes()),
            };
            let depth = prefix.len();
            prefix.push_str(name);
            match (at.map(|i| found[i]), children) {
                (Some((b::DOCUMENT, _, value)), Some(children)) => {
                    prefix.push('.');
                    children.flatten(&elements(value)?, prefix, set, unset)?;
                }
                (Some((ty, _, value)), _) => set.push((ty, prefix.clone(), value)),
                (None, Some(children)) => {
                    prefix.push('.');
                    children.flatten(&[], prefix, set, unset)?;
                }
                (None, None) => unset.push(prefix.clone()),
            }
            prefix.truncate(depth);
            if let Some(i) = at {
                next = i + 1;
            }
        }
        Ok(())
    }

    /// `doc` reduced to `_id` and these fields, in this order, without the
    /// sub-documents left empty: what a merge job's copy is compared by
    /// (`shiftload verify`), whatever other fields the stored documents
    /// hold and in whatever order a merge left them.
    pub fn project(&self, doc: &[u8]) -> Result<Vec<u8>> {
        let elements = elements(doc)?;
        let mut out = Vec::with_capacity(doc.len());
        let at = b::begin_doc(&mut out);
        if let Some((ty, name, value)) = elements.iter().find(|e| e.1 == b"_id") {
            put_raw(&mut out, *ty, name, value);
        }
        self.project_into(&elements, &mut out)?;
        b::end_doc(&mut out, at);
        Ok(out)
    }

    fn project_into(&self, found: &[Element<'_>], out: &mut Vec<u8>) -> Result<()> {
        for (name, children) in &self.0 {
            let Some(&(ty, key, value)) = found.iter().find(|e| e.1 == name.as_bytes()) else {
                continue;
            };
            match children {
                Some(children) if ty == b::DOCUMENT => {
                    let start = out.len();
                    put_raw(out, ty, key, &[]);
                    let at = b::begin_doc(out);
                    children.project_into(&elements(value)?, out)?;
                    b::end_doc(out, at);
                    if out.len() - at == 5 {
                        out.truncate(start);
                    }
                }
                _ => put_raw(out, ty, key, value),
            }
        }
        Ok(())
    }
}

/// An element of a raw document: type, name (without NUL), value bytes.
type Element<'d> = (u8, &'d [u8], &'d [u8]);

/// Element `name` (without NUL) of type `ty` whose value bytes are `value`.
fn put_raw(out: &mut Vec<u8>, ty: u8, name: &[u8], value: &[u8]) {
    out.push(ty);
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(value);
}

/// The elements of a raw document.
fn elements(doc: &[u8]) -> Result<Vec<Element<'_>>> {
    let raw = bson::RawDocument::from_bytes(doc).map_err(bad)?;
    let mut at = 4;
    let mut out = Vec::new();
    for element in raw.iter_elements() {
        let element = element.map_err(bad)?;
        let name = element.key().as_str().as_bytes();
        let value = at + 1 + name.len() + 1;
        let end = value + element.size();
        let bytes = doc
            .get(value..end)
            .ok_or_else(|| bad("element past its document"))?;
        out.push((element.element_type() as u8, name, bytes));
        at = end;
    }
    Ok(out)
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("malformed document: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, Document, RawDocumentBuf};

    fn raw(d: Document) -> Vec<u8> {
        RawDocumentBuf::try_from(&d).unwrap().into_bytes()
    }

    fn back(bytes: Vec<u8>) -> Document {
        Document::try_from(RawDocumentBuf::from_bytes(bytes).unwrap()).unwrap()
    }

    /// `n`, `addr {city, zip}`, `j` (a JSON value: a document set whole).
    fn fields() -> Fields {
        Fields(vec![
            ("n".into(), None),
            (
                "addr".into(),
                Some(Fields(vec![("city".into(), None), ("zip".into(), None)])),
            ),
            ("j".into(), None),
        ])
    }

    fn update(d: Document) -> Document {
        let mut out = Vec::new();
        fields().merge_update(&raw(d), &mut out).unwrap();
        back(out)
    }

    #[test]
    fn a_merge_sets_leaves_by_path_and_unsets_what_is_missing() {
        let u = update(doc! {"_id": 1, "n": 2, "addr": {"city": "Oslo"}, "j": {"a": [1]}});
        assert_eq!(
            u,
            doc! {"$set": {"n": 2, "addr.city": "Oslo", "j": {"a": [1]}}, "$unset": {"addr.zip": ""}}
        );
        // All NULL: every field unset, nothing set.
        let u = update(doc! {"_id": "k"});
        assert_eq!(
            u,
            doc! {"$unset": {"n": "", "addr.city": "", "addr.zip": "", "j": ""}}
        );
        // A mapping of key columns only: insert if absent, else leave it.
        let mut out = Vec::new();
        Fields::default()
            .merge_update(&raw(doc! {"_id": {"a": 1, "b": "x"}}), &mut out)
            .unwrap();
        assert_eq!(
            back(out),
            doc! {"$setOnInsert": {"_id": {"a": 1, "b": "x"}}}
        );
    }

    #[test]
    fn the_overhead_covers_the_longest_update() {
        let d = raw(doc! {"_id": 1, "n": 2, "addr": {"city": "Oslo", "zip": "0150"}, "j": 1});
        let mut out = Vec::new();
        fields().merge_update(&d, &mut out).unwrap();
        assert!(
            out.len() <= d.len() + fields().merge_overhead(),
            "{}",
            out.len()
        );
        let d = raw(doc! {"_id": 1});
        out.clear();
        fields().merge_update(&d, &mut out).unwrap();
        assert!(
            out.len() <= d.len() + fields().merge_overhead(),
            "{}",
            out.len()
        );
    }

    #[test]
    fn a_projection_keeps_the_mapped_fields_in_mapping_order() {
        let stored = raw(doc! {
            "_id": 1, "extra": true, "j": {"a": 1}, "addr": {"note": "x", "zip": "z"}, "n": 2,
        });
        assert_eq!(
            back(fields().project(&stored).unwrap()),
            doc! {"_id": 1, "n": 2, "addr": {"zip": "z"}, "j": {"a": 1}}
        );
        // A sub-document left with none of the mapped fields is dropped, as
        // the encoder drops one whose columns are all NULL.
        let stored = raw(doc! {"_id": 1, "addr": {"note": "x"}});
        assert_eq!(back(fields().project(&stored).unwrap()), doc! {"_id": 1});
    }
}
