//! The encoder's instructions per row, for machines whose timings are too
//! noisy to compare two builds: run under cachegrind by
//! `scripts/bench-encode-instructions.sh`, which subtracts a run that only
//! builds the reference batch from one that also encodes it.
//!
//!     encode_count fast|text|naive|none ROWS
//!
//! `text` is the fast path with the decimal column written as text
//! (`mapping.decimal = "string"`).

#[path = "common.rs"]
mod common;

use shiftload::config::{DecimalPolicy, MappingConfig, NullPolicy};
use shiftload::encode::{reference, Encoder};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    shiftload::alloc::tune();
    let args: Vec<String> = std::env::args().collect();
    let (path, rows) = match args.as_slice() {
        [_, path, rows, ..] => (path.as_str(), rows.parse().expect("ROWS is a number")),
        _ => panic!("usage: encode_count fast|text|naive|none ROWS"),
    };
    let batch = common::reference_batch(rows, 42);
    let mapping = MappingConfig {
        id: vec!["id".into()],
        decimal: match path {
            "text" => DecimalPolicy::String,
            _ => DecimalPolicy::Decimal128,
        },
        ..MappingConfig::default()
    };
    let encoder = Encoder::new(&batch.schema(), &mapping).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let bytes = match path {
        "fast" | "text" => pool.install(|| encoder.encode(&batch, 0).unwrap().bytes),
        "naive" => (0..rows)
            .map(|r| reference::document_bytes(&batch, r, Some(0), NullPolicy::Omit).len())
            .sum(),
        "none" => 0,
        other => panic!("unknown path {other}"),
    };
    println!("{bytes}");
}
