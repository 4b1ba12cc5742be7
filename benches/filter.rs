//! The columnar filter (staged Parquet parts) on the reference batch
//! (1,000,000 rows × 10 columns, see `common.rs`), against the same
//! predicate evaluated row by row over the same Arrow arrays (what a
//! client-side filter in a row-at-a-time script does), and against the
//! encoder on one thread, in the same run: what filtering costs next to the
//! conversion every kept row goes through anyway.
//!
//!     cargo bench --bench filter

#[path = "common.rs"]
mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Float64Type, Int32Type};
use arrow_array::{Array, BooleanArray, RecordBatch};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shiftload::config::MappingConfig;
use shiftload::encode::Encoder;
use shiftload::filter::Expr;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: usize = 1_000_000;

const FILTER: &str = "quantity >= 10 AND price < 500000.5 AND amount > 0 \
                      AND (paid OR day >= DATE '1990-01-01' OR city IS NULL)";

/// The same predicate, one row at a time, with SQL's NULL logic.
fn row_by_row(batch: &RecordBatch) -> usize {
    let q = batch.column(2).as_primitive::<Int32Type>();
    let price = batch.column(3).as_primitive::<Float64Type>();
    let city = batch.column(5);
    let paid = batch.column(6).as_boolean();
    let day = batch.column(8).as_primitive::<Date32Type>();
    let amount = batch.column(9).as_primitive::<Decimal128Type>();
    let get = |a: &dyn Array, r: usize| a.is_valid(r);
    (0..batch.num_rows())
        .filter(|&r| {
            let and = |a: Option<bool>, b: Option<bool>| match (a, b) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            let or = |a: Option<bool>, b: Option<bool>| match (a, b) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            };
            let c1 = get(q, r).then(|| q.value(r) >= 10);
            let c2 = get(price, r).then(|| price.value(r) < 500000.5);
            let c3 = get(amount, r).then(|| amount.value(r) > 0);
            let c4 = get(paid, r).then(|| paid.value(r));
            let c5 = get(day, r).then(|| day.value(r) >= 7305);
            let c6 = Some(city.is_null(r));
            and(and(and(c1, c2), c3), or(or(c4, c5), c6)) == Some(true)
        })
        .count()
}

fn bench(c: &mut Criterion) {
    shiftload::alloc::tune();
    let batch = common::reference_batch(ROWS, 42);
    let filter = Expr::parse(FILTER).unwrap().bind(&batch.schema()).unwrap();
    let kept = filter.evaluate(&batch).unwrap();
    let count = |m: &BooleanArray| m.iter().filter(|v| *v == Some(true)).count();
    assert_eq!(count(&kept), row_by_row(&batch), "both evaluations agree");
    eprintln!("filter keeps {} of {ROWS} rows", count(&kept));

    let mapping = MappingConfig {
        id: vec!["id".into()],
        ..MappingConfig::default()
    };
    let encoder = Encoder::new(&batch.schema(), &mapping).unwrap();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();

    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    group.bench_function("arrow_kernels_apply", |b| {
        b.iter(|| filter.apply(&batch).unwrap().num_rows())
    });
    group.bench_function("row_by_row", |b| b.iter(|| row_by_row(&batch)));
    group.bench_function("encode_1_thread", |b| {
        b.iter(|| one.install(|| encoder.encode(&batch, 0).unwrap().bytes))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
