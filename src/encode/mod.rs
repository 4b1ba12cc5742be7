//! Arrow record batches → raw BSON documents.
//!
//! The shape follows arrow-json's writer: the job's mapping is resolved once
//! against the schema into a [`Plan`] (which column goes to which key, nested
//! documents, `_id`), and each batch binds the plan to its arrays as a list of
//! per-column encoders whose key bytes (name + NUL) are pre-encoded. The row
//! loop then does no type dispatch and no key formatting: each encoder
//! appends its type byte, key and value to one contiguous buffer.
//!
//! A batch is cut into row ranges encoded in parallel on rayon's pool; each
//! range yields one buffer of back-to-back documents ([`EncodedChunk`]).
//! `_id` is always written first: the driver looks for it there.

pub mod bson;
mod column;
mod fields;
mod geo;
mod json;
mod mapping;
#[doc(hidden)]
pub mod reference;

use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use rayon::prelude::*;

use self::bson as b;
use crate::config::{
    DecimalPolicy, GeometryPolicy, JsonPolicy, MappingConfig, NullPolicy, OverflowPolicy,
    TimestampPolicy,
};
use crate::error::{Error, Result};
use column::{make_encoder, ColumnEncoder};
pub use fields::Fields;
use mapping::{body_tree, id_plan, included_columns};

/// Documents encoded from one row range, back to back. Each document starts
/// with its own little-endian i32 length, so no offsets are kept.
#[derive(Debug, Default)]
pub struct EncodedChunk {
    pub buf: Vec<u8>,
    pub docs: usize,
}

impl EncodedChunk {
    /// Iterate over the documents' bytes.
    pub fn iter(&self) -> DocIter<'_> {
        DocIter { buf: &self.buf }
    }

    /// The documents, each with where it starts in `buf`.
    pub fn iter_at(&self) -> impl Iterator<Item = (usize, &[u8])> {
        let mut at = 0;
        self.iter().map(move |doc| {
            let start = at;
            at += doc.len();
            (start, doc)
        })
    }

    /// The document that starts at `at` in `buf`.
    pub fn doc_at(&self, at: usize) -> Option<&[u8]> {
        DocIter {
            buf: self.buf.get(at..)?,
        }
        .next()
    }
}

/// Iterator over documents stored back to back.
pub struct DocIter<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for DocIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.buf.len() < 5 {
            return None;
        }
        let len = i32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        let (doc, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(doc)
    }
}

/// One batch, encoded.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    pub chunks: Vec<EncodedChunk>,
    pub docs: usize,
    pub bytes: usize,
    /// Rows left out (dead-letter mode): the reader's and the encoder's.
    pub rejects: Vec<crate::deadletter::Reject>,
}

/// A mapping resolved against a schema, reusable for every batch of it.
pub struct Encoder {
    plan: Plan,
    /// BSON bytes per row of the last batch, to size buffers up front (0
    /// before the first).
    bytes_per_row: AtomicUsize,
    /// Set rows that cannot be encoded aside instead of failing.
    dead_letter: bool,
    /// Refuse NaN and ±Infinity doubles (the target cannot store them).
    finite_only: bool,
    /// Refuse Decimal128 values made from JSON big integers (the target
    /// cannot store them).
    no_decimal128: bool,
}

#[derive(Debug)]
struct Plan {
    /// Leaves: (schema column, key bytes). A column may appear twice (as
    /// `_id` and as a field).
    leaves: Vec<Leaf>,
    id: IdPlan,
    body: Vec<Node>,
    /// Where the body's leaves begin when the body is flat: leaves
    /// `flat..` in order, no sub-document. The row loop then walks the
    /// encoders themselves instead of the tree.
    flat: Option<usize>,
    options: Options,
    /// Columns that identify a row in error messages.
    key_columns: Vec<usize>,
}

#[derive(Debug)]
struct Leaf {
    column: usize,
    key: Vec<u8>,
}

#[derive(Debug)]
enum IdPlan {
    /// A fresh ObjectId per document.
    ObjectId,
    /// `_id` is one column's value (leaf index), never null.
    Column(usize),
    /// `_id` is a sub-document of several columns (leaf indices).
    Composite(Vec<usize>),
}

#[derive(Debug)]
enum Node {
    Leaf(usize),
    Doc { key: Vec<u8>, children: Vec<Node> },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    null: NullPolicy,
    decimal: DecimalPolicy,
    decimal_overflow: OverflowPolicy,
    timestamp: TimestampPolicy,
    json: JsonPolicy,
    geometry: GeometryPolicy,
    trim_char: bool,
}

impl Encoder {
    /// Resolve `mapping` against `schema`. Fails with an error naming the
    /// config key and column when the mapping refers to a missing column,
    /// puts two values on one path, or a column cannot be encoded.
    pub fn new(schema: &Schema, mapping: &MappingConfig) -> Result<Self> {
        let included = included_columns(schema, mapping)?;
        let options = Options {
            null: mapping.null,
            decimal: mapping.decimal,
            decimal_overflow: mapping.decimal_overflow,
            timestamp: mapping.timestamp,
            json: mapping.json,
            geometry: mapping.geometry,
            trim_char: mapping.trim_char,
        };
        for &i in &included {
            check_encodable(schema.field(i))?;
        }
        let mut leaves = Vec::new();
        let id_columns: Vec<usize> = mapping
            .id
            .iter()
            .map(|n| crate::error::column_index(schema, "mapping.id", n))
            .collect::<Result<_>>()?;
        for &c in &id_columns {
            check_encodable(schema.field(c))?;
        }
        let id = id_plan(schema, &id_columns, &mut leaves);
        let body = body_tree(schema, mapping, &included, &mut leaves)?;
        let first = leaves.len() - body.len();
        let flat = body
            .iter()
            .enumerate()
            .all(|(i, n)| matches!(n, Node::Leaf(l) if *l == first + i))
            .then_some(first);
        Ok(Encoder {
            plan: Plan {
                leaves,
                id,
                body,
                flat,
                options,
                key_columns: id_columns,
            },
            bytes_per_row: AtomicUsize::new(0),
            dead_letter: false,
            finite_only: false,
            no_decimal128: false,
        })
    }

    /// The fields this encoder writes besides `_id`.
    pub fn fields(&self) -> Fields {
        Fields::of(&self.plan)
    }

    /// The first column written as BSON Decimal128, if any (some
    /// MongoDB-compatible servers cannot store that type).
    pub fn decimal128_column<'s>(&self, schema: &'s Schema) -> Option<&'s str> {
        if self.plan.options.decimal != DecimalPolicy::Decimal128 {
            return None;
        }
        self.plan
            .leaves
            .iter()
            .map(|l| schema.field(l.column))
            .find(|f| matches!(f.data_type(), DataType::Decimal128(_, _)))
            .map(|f| f.name().as_str())
    }

    /// Encode `batch`. `first_row` is the position of its first row in the
    /// whole result, for error messages.
    /// Set rows that cannot be encoded aside (returned in
    /// [`EncodedBatch::rejects`]) instead of failing the batch.
    pub fn with_dead_letter(mut self, on: bool) -> Self {
        self.dead_letter = on;
        self
    }

    /// Treat NaN and ±Infinity doubles as values that cannot be stored (for
    /// servers that refuse them, such as FerretDB v1).
    pub fn with_finite_only(mut self, on: bool) -> Self {
        self.finite_only = on;
        self
    }

    /// Treat JSON integers beyond 64 bits that `mapping.decimal` makes
    /// Decimal128 as values that cannot be stored (for servers without
    /// Decimal128, such as FerretDB v1).
    pub fn without_decimal128(mut self, on: bool) -> Self {
        self.no_decimal128 = on;
        self
    }

    pub fn encode(&self, batch: &RecordBatch, first_row: u64) -> Result<EncodedBatch> {
        self.encode_skipping(batch, first_row, Vec::new())
    }

    /// Encode `batch` without the rows the reader already rejected
    /// (`rejected`, rows of this batch); they are returned with their key.
    pub fn encode_skipping(
        &self,
        batch: &RecordBatch,
        first_row: u64,
        mut rejected: Vec<(usize, crate::deadletter::Reject)>,
    ) -> Result<EncodedBatch> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(EncodedBatch::default());
        }
        rejected.sort_by_key(|(row, _)| *row);
        let skip: Vec<usize> = rejected.iter().map(|(row, _)| *row).collect();
        let encoders = self
            .plan
            .leaves
            .iter()
            .map(|leaf| {
                make_encoder(
                    batch.column(leaf.column),
                    batch.schema().field(leaf.column),
                    &leaf.key,
                    self.plan.options,
                )
                .map(|e| {
                    e.finite_only(self.finite_only)
                        .without_decimal128(self.no_decimal128)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let threads = rayon::current_num_threads().max(1);
        let chunk_rows = n.div_ceil(threads * 4).max(2048);
        let ranges: Vec<(usize, usize)> = (0..n)
            .step_by(chunk_rows)
            .map(|s| (s, (s + chunk_rows).min(n)))
            .collect();
        let estimate = match self.bytes_per_row.load(Ordering::Relaxed) {
            // No batch measured yet: sized from this one's columns.
            0 => 5 + encoders.iter().map(|e| e.element_bytes(n)).sum::<usize>(),
            measured => measured,
        };
        let chunks = ranges
            .into_par_iter()
            .map(|(start, end)| {
                self.encode_range(batch, &encoders, start..end, &skip, first_row, estimate)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut all_rejects: Vec<crate::deadletter::Reject> = Vec::new();
        for (row, mut reject) in rejected {
            reject.row = first_row + row as u64 + 1;
            reject.key = self.row_key(batch, row);
            all_rejects.push(reject);
        }
        let chunks: Vec<EncodedChunk> = chunks
            .into_iter()
            .map(|(chunk, rejects)| {
                all_rejects.extend(rejects);
                chunk
            })
            .collect();
        let bytes: usize = chunks.iter().map(|c| c.buf.len()).sum();
        let docs = chunks.iter().map(|c| c.docs).sum();
        self.bytes_per_row.store(bytes / n + 1, Ordering::Relaxed);
        Ok(EncodedBatch {
            chunks,
            docs,
            bytes,
            rejects: all_rejects,
        })
    }

    /// Encode the rows of `rows` (but those in `skip`) into one chunk; the
    /// rows the policy refuses, in dead-letter mode.
    #[allow(clippy::too_many_arguments)]
    fn encode_range(
        &self,
        batch: &RecordBatch,
        encoders: &[ColumnEncoder<'_>],
        rows: std::ops::Range<usize>,
        skip: &[usize],
        first_row: u64,
        estimate: usize,
    ) -> Result<(EncodedChunk, Vec<crate::deadletter::Reject>)> {
        let (start, end) = (rows.start, rows.end);
        let mut chunk = EncodedChunk {
            // An eighth above the last batch's mean, so that a chunk of
            // slightly wider rows does not grow (and copy) its buffer.
            buf: Vec::with_capacity(estimate * (end - start) * 9 / 8 + 256),
            docs: 0,
        };
        let mut rejects = Vec::new();
        for row in start..end {
            if skip.binary_search(&row).is_ok() {
                continue;
            }
            let at = chunk.buf.len();
            match self.write_document(encoders, row, &mut chunk.buf) {
                Ok(()) => chunk.docs += 1,
                Err((leaf, message)) => {
                    let column = batch
                        .schema()
                        .field(self.plan.leaves[leaf].column)
                        .name()
                        .clone();
                    if !self.dead_letter {
                        return Err(Error::Value {
                            column,
                            row: self.describe_row(batch, row, first_row),
                            message,
                        });
                    }
                    chunk.buf.truncate(at);
                    rejects.push(crate::deadletter::Reject {
                        row: first_row + row as u64 + 1,
                        key: self.row_key(batch, row),
                        column,
                        reason: message,
                    });
                }
            }
        }
        Ok((chunk, rejects))
    }

    /// `order_id=42`: the row's key columns, or empty without `mapping.id`.
    fn row_key(&self, batch: &RecordBatch, row: usize) -> String {
        self.plan
            .key_columns
            .iter()
            .map(|&c| {
                format!(
                    "{}={}",
                    batch.schema().field(c).name(),
                    display_value(batch.column(c), row)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn write_document(
        &self,
        encoders: &[ColumnEncoder<'_>],
        row: usize,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), (usize, String)> {
        let at = b::begin_doc(out);
        match &self.plan.id {
            IdPlan::ObjectId => {
                b::put_element(out, b::OBJECT_ID, b"_id\0");
                out.extend_from_slice(&::bson::oid::ObjectId::new().bytes());
            }
            IdPlan::Column(leaf) => {
                if encoders[*leaf].is_null(row) {
                    return Err((*leaf, "a key column for `_id` is NULL".into()));
                }
                encoders[*leaf].encode(row, out).map_err(|m| (*leaf, m))?;
            }
            IdPlan::Composite(leaves) => {
                b::put_element(out, b::DOCUMENT, b"_id\0");
                let sub = b::begin_doc(out);
                for &leaf in leaves {
                    if encoders[leaf].is_null(row) {
                        return Err((leaf, "a key column for `_id` is NULL".into()));
                    }
                    encoders[leaf].encode(row, out).map_err(|m| (leaf, m))?;
                }
                b::end_doc(out, sub);
            }
        }
        match self.plan.flat {
            Some(first) => {
                for (i, enc) in encoders[first..].iter().enumerate() {
                    self.write_leaf(enc, first + i, row, out)?;
                }
            }
            None => self.write_nodes(&self.plan.body, encoders, row, out)?,
        }
        b::end_doc(out, at);
        Ok(())
    }

    /// The element of `enc` (leaf `leaf`) for `row`, or none for a NULL
    /// under `null = "omit"`.
    #[inline(always)]
    fn write_leaf(
        &self,
        enc: &ColumnEncoder<'_>,
        leaf: usize,
        row: usize,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), (usize, String)> {
        if enc.is_null(row) {
            if self.plan.options.null == NullPolicy::Null {
                enc.put_null(out);
            }
            Ok(())
        } else {
            enc.encode(row, out).map_err(|m| (leaf, m))
        }
    }

    fn write_nodes(
        &self,
        nodes: &[Node],
        encoders: &[ColumnEncoder<'_>],
        row: usize,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), (usize, String)> {
        for node in nodes {
            match node {
                Node::Leaf(leaf) => self.write_leaf(&encoders[*leaf], *leaf, row, out)?,
                Node::Doc { key, children } => {
                    let start = out.len();
                    b::put_element(out, b::DOCUMENT, key);
                    let at = b::begin_doc(out);
                    self.write_nodes(children, encoders, row, out)?;
                    b::end_doc(out, at);
                    // Under `null = "omit"`, a sub-document whose fields are
                    // all NULL is left out too.
                    if out.len() - at == 5 && self.plan.options.null == NullPolicy::Omit {
                        out.truncate(start);
                    }
                }
            }
        }
        Ok(())
    }

    /// `row key order_id=42` when `_id` comes from key columns, else the
    /// row's position in the result.
    fn describe_row(&self, batch: &RecordBatch, row: usize, first_row: u64) -> String {
        let position = format!("row {} of the result", first_row + row as u64 + 1);
        match self.row_key(batch, row) {
            key if key.is_empty() => position,
            key => format!("{position} (row key {key})"),
        }
    }
}

/// A short text form of a key value for error messages.
fn display_value(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    match array.data_type() {
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Utf8 => format!("{:?}", array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => format!("{:?}", array.as_string::<i64>().value(row)),
        DataType::Decimal128(_, s) => {
            b::decimal_string(array.as_primitive::<Decimal128Type>().value(row), *s)
        }
        DataType::Date32 => {
            crate::time::date_string(array.as_primitive::<Date32Type>().value(row) as i64)
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => crate::time::timestamp_string(
            array.as_primitive::<TimestampMicrosecondType>().value(row),
            tz.is_some(),
        ),
        other => format!("<{other}>"),
    }
}

pub(super) fn check_encodable(field: &Field) -> Result<()> {
    let ok = matches!(
        field.data_type(),
        DataType::Boolean
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::Decimal128(_, _)
            | DataType::Date32
            | DataType::Timestamp(_, _)
            | DataType::Time64(TimeUnit::Microsecond)
    );
    if ok {
        Ok(())
    } else {
        Err(Error::UnsupportedType {
            column: field.name().clone(),
            type_name: format!("Arrow {}", field.data_type()),
            hint: String::new(),
        })
    }
}
