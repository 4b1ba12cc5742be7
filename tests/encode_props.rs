//! Property tests: on random batches of every supported type with nulls, the
//! fast encoder's bytes equal those of the `bson` crate serialising the
//! equivalent `Document` (the naive path), document by document.

use std::sync::Arc;

use arrow_array::builder::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use proptest::prelude::*;
use shiftload::config::{MappingConfig, NullPolicy};
use shiftload::encode::{reference, Encoder};
use shiftload::kind::FieldKind;

/// One column's type and its generated values (None = NULL).
#[derive(Debug, Clone)]
enum Col {
    I16(Vec<Option<i16>>),
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
    F32(Vec<Option<f32>>),
    F64(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<String>>, bool),
    Bin(Vec<Option<Vec<u8>>>),
    Dec(Vec<Option<i128>>, u8, i8),
    Date(Vec<Option<i32>>),
    Ts(Vec<Option<i64>>, bool),
    Time(Vec<Option<i64>>),
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
    rows: usize,
) -> impl Strategy<Value = Vec<Option<T>>> {
    proptest::collection::vec(proptest::option::weighted(0.85, s), rows)
}

fn column(rows: usize) -> impl Strategy<Value = Col> {
    prop_oneof![
        opt(any::<i16>(), rows).prop_map(Col::I16),
        opt(any::<i32>(), rows).prop_map(Col::I32),
        opt(any::<i64>(), rows).prop_map(Col::I64),
        opt(any::<f32>(), rows).prop_map(Col::F32),
        opt(any::<f64>(), rows).prop_map(Col::F64),
        opt(any::<bool>(), rows).prop_map(Col::Bool),
        (opt(".{0,30}", rows), any::<bool>()).prop_map(|(v, char)| {
            // CHAR(n) values are padded as PostgreSQL sends them.
            let v = if char {
                v.into_iter()
                    .map(|s| s.map(|s| format!("{s:<12}")))
                    .collect()
            } else {
                v
            };
            Col::Text(v, char)
        }),
        opt(proptest::collection::vec(any::<u8>(), 0..40), rows).prop_map(Col::Bin),
        (1u8..=34, 0i8..=12).prop_flat_map(move |(p, s)| {
            let s = s.min(p as i8);
            let max = 10i128.pow(p as u32) - 1;
            opt(-max..=max, rows).prop_map(move |v| Col::Dec(v, p, s))
        }),
        opt(-3_000_000i32..3_000_000, rows).prop_map(Col::Date),
        (
            opt(-200_000_000_000_000_000i64..200_000_000_000_000_000, rows),
            any::<bool>()
        )
            .prop_map(|(v, tz)| Col::Ts(v, tz)),
        opt(0i64..86_400_000_000, rows).prop_map(Col::Time),
    ]
}

fn batch(cols: &[Col]) -> RecordBatch {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        // Every other name is longer than the 30 bytes the encoder writes
        // as a padded head, so both ways of writing a head are compared.
        let name = if i % 2 == 1 {
            format!("c{i}_{}", "long".repeat(8))
        } else {
            format!("c{i}")
        };
        let (dt, array, meta): (DataType, ArrayRef, Option<FieldKind>) = match c {
            Col::I16(v) => (
                DataType::Int16,
                Arc::new(arrow_array::Int16Array::from(v.clone())),
                None,
            ),
            Col::I32(v) => (
                DataType::Int32,
                Arc::new(arrow_array::Int32Array::from(v.clone())),
                None,
            ),
            Col::I64(v) => (
                DataType::Int64,
                Arc::new(arrow_array::Int64Array::from(v.clone())),
                None,
            ),
            Col::F32(v) => (
                DataType::Float32,
                Arc::new(arrow_array::Float32Array::from(v.clone())),
                None,
            ),
            Col::F64(v) => (
                DataType::Float64,
                Arc::new(arrow_array::Float64Array::from(v.clone())),
                None,
            ),
            Col::Bool(v) => (
                DataType::Boolean,
                Arc::new(arrow_array::BooleanArray::from(v.clone())),
                None,
            ),
            Col::Text(v, char) => (
                DataType::Utf8,
                Arc::new(arrow_array::StringArray::from(v.clone())),
                char.then_some(FieldKind::Char),
            ),
            Col::Bin(v) => {
                let mut b = BinaryBuilder::new();
                for x in v {
                    b.append_option(x.as_deref());
                }
                (DataType::Binary, Arc::new(b.finish()), None)
            }
            Col::Dec(v, p, s) => (
                DataType::Decimal128(*p, *s),
                Arc::new(
                    arrow_array::Decimal128Array::from(v.clone())
                        .with_precision_and_scale(*p, *s)
                        .unwrap(),
                ),
                None,
            ),
            Col::Date(v) => (
                DataType::Date32,
                Arc::new(arrow_array::Date32Array::from(v.clone())),
                None,
            ),
            Col::Ts(v, tz) => {
                let a = arrow_array::TimestampMicrosecondArray::from(v.clone());
                let a = if *tz { a.with_timezone("UTC") } else { a };
                (a.data_type().clone(), Arc::new(a), None)
            }
            Col::Time(v) => (
                DataType::Time64(TimeUnit::Microsecond),
                Arc::new(arrow_array::Time64MicrosecondArray::from(v.clone())),
                None,
            ),
        };
        let mut f = Field::new(name, dt, true);
        if let Some(m) = meta {
            f = m.mark(f);
        }
        fields.push(f);
        arrays.push(array);
    }
    // A non-null key column for `_id`.
    let n = arrays.first().map_or(0, |a| a.len());
    fields.insert(0, Field::new("key", DataType::Int64, false));
    arrays.insert(
        0,
        Arc::new(arrow_array::Int64Array::from_iter_values(0..n as i64)),
    );
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

fn check(batch: &RecordBatch, null: NullPolicy, with_id: bool) {
    let mapping = MappingConfig {
        id: if with_id { vec!["key".into()] } else { vec![] },
        null,
        ..MappingConfig::default()
    };
    let encoder = Encoder::new(&batch.schema(), &mapping).unwrap();
    let encoded = encoder.encode(batch, 0).unwrap();
    let docs: Vec<&[u8]> = encoded.chunks.iter().flat_map(|c| c.iter()).collect();
    assert_eq!(docs.len(), batch.num_rows());
    for (row, got) in docs.into_iter().enumerate() {
        if with_id {
            let want = reference::document_bytes(batch, row, Some(0), null);
            assert_eq!(got, want.as_slice(), "row {row}");
        } else {
            // Without key columns `_id` is a fresh ObjectId: compare the rest.
            let mut doc = bson::Document::from_reader(got).unwrap();
            assert!(matches!(doc.remove("_id"), Some(bson::Bson::ObjectId(_))));
            // Bytes, not documents: NaN is not equal to itself.
            let want = reference::document_bytes(batch, row, None, null);
            assert_eq!(doc.to_vec().unwrap(), want, "row {row}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn encoder_bytes_equal_the_bson_crate(
        cols in (0usize..40).prop_flat_map(|rows| proptest::collection::vec(column(rows), 1..8)),
        write_nulls in any::<bool>(),
        with_id in any::<bool>(),
        skip in 0usize..12,
    ) {
        let null = if write_nulls { NullPolicy::Null } else { NullPolicy::Omit };
        // A slice of the batch: validity bits, booleans and string offsets
        // that do not start at the buffers' beginning, as after a filter.
        let all = batch(&cols);
        let skip = skip.min(all.num_rows());
        check(&all.slice(skip, all.num_rows() - skip), null, with_id);
    }
}

/// Large enough to be cut into several parallel chunks.
#[test]
fn chunked_batches_keep_row_order() {
    let rows = 20_000;
    let cols = vec![
        Col::I64(
            (0..rows)
                .map(|i| (i % 7 != 0).then_some(i as i64 * 3))
                .collect(),
        ),
        Col::Text((0..rows).map(|i| Some(format!("r{i}"))).collect(), false),
    ];
    check(&batch(&cols), NullPolicy::Omit, true);
}
