//! The reference batch shared by the encoder benchmark and the property
//! tests' fixed cases: 10 columns (Int64 ×2, Int32, Float64, Utf8 16–24 and
//! 6–14 chars, Boolean, Timestamp(µs, UTC), Date32, Decimal128(18,4)), 5 %
//! nulls in every column but the key, fixed seed.
#![allow(dead_code)]

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn reference_batch(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut id = Int64Builder::with_capacity(rows);
    let mut customer = Int64Builder::with_capacity(rows);
    let mut qty = Int32Builder::with_capacity(rows);
    let mut price = Float64Builder::with_capacity(rows);
    let mut name = StringBuilder::with_capacity(rows, rows * 20);
    let mut city = StringBuilder::with_capacity(rows, rows * 10);
    let mut paid = BooleanBuilder::with_capacity(rows);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut day = Date32Builder::with_capacity(rows);
    let mut amount = Decimal128Builder::with_capacity(rows)
        .with_precision_and_scale(18, 4)
        .unwrap();
    let text = |rng: &mut StdRng, lo: usize, hi: usize| -> String {
        let n = rng.random_range(lo..=hi);
        (0..n)
            .map(|_| rng.random_range(b'a'..=b'z') as char)
            .collect()
    };
    for i in 0..rows {
        id.append_value(i as i64);
        macro_rules! maybe {
            ($b:expr, $v:expr) => {
                if rng.random_bool(0.05) {
                    $b.append_null()
                } else {
                    let v = $v;
                    $b.append_value(v)
                }
            };
        }
        maybe!(customer, rng.random_range(0..10_000_000i64));
        maybe!(qty, rng.random_range(-1000..1000i32));
        maybe!(price, rng.random_range(-1e6..1e6f64));
        maybe!(name, text(&mut rng, 16, 24));
        maybe!(city, text(&mut rng, 6, 14));
        maybe!(paid, rng.random_bool(0.5));
        maybe!(
            ts,
            rng.random_range(-2_000_000_000_000_000i64..2_000_000_000_000_000)
        );
        maybe!(day, rng.random_range(-30_000..30_000i32));
        maybe!(
            amount,
            rng.random_range(-999_999_999_999_999_999i128..999_999_999_999_999_999)
        );
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(customer.finish()),
        Arc::new(qty.finish()),
        Arc::new(price.finish()),
        Arc::new(name.finish()),
        Arc::new(city.finish()),
        Arc::new(paid.finish()),
        Arc::new(ts.finish()),
        Arc::new(day.finish()),
        Arc::new(amount.finish()),
    ];
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, true),
        Field::new("quantity", DataType::Int32, true),
        Field::new("price", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("paid", DataType::Boolean, true),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("day", DataType::Date32, true),
        Field::new("amount", DataType::Decimal128(18, 4), true),
    ]);
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}
