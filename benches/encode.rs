//! Arrow → BSON on the reference batch (1,000,000 rows × 10 columns, see
//! `common.rs`): the fast encoder on 1 and 2 threads against the naive path
//! (a `bson::Document` per row, then its serialiser), in the same run; and
//! the 1-thread encoder with the decimal column written as text
//! (`mapping.decimal = "string"`, the benchmark scripts' setting).
//!
//!     cargo bench --bench encode
//!
//! Criterion reports rows/s ("elem/s"); BSON bytes per row are printed once,
//! so MB/s = rows/s × bytes per row.

#[path = "common.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shiftload::config::{DecimalPolicy, MappingConfig, NullPolicy};
use shiftload::encode::{reference, Encoder};

// The allocator the `shiftload` binary uses, with its settings.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: usize = 1_000_000;

fn bench(c: &mut Criterion) {
    shiftload::alloc::tune();
    let batch = common::reference_batch(ROWS, 42);
    let mapping = MappingConfig {
        id: vec!["id".into()],
        ..MappingConfig::default()
    };
    let encoder = Encoder::new(&batch.schema(), &mapping).unwrap();
    let bytes = encoder.encode(&batch, 0).unwrap().bytes;
    eprintln!(
        "reference batch: {ROWS} rows, {bytes} BSON bytes, {:.1} bytes/row",
        bytes as f64 / ROWS as f64
    );

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        group.bench_function(format!("shiftload_{threads}_thread"), |b| {
            b.iter(|| pool.install(|| encoder.encode(&batch, 0).unwrap().bytes))
        });
    }
    let as_text = Encoder::new(
        &batch.schema(),
        &MappingConfig {
            decimal: DecimalPolicy::String,
            ..mapping.clone()
        },
    )
    .unwrap();
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    group.bench_function("shiftload_1_thread_decimal_text", |b| {
        b.iter(|| single.install(|| as_text.encode(&batch, 0).unwrap().bytes))
    });
    group.bench_function("naive_document_per_row", |b| {
        b.iter(|| {
            (0..ROWS)
                .map(|r| reference::document_bytes(&batch, r, Some(0), NullPolicy::Omit).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
