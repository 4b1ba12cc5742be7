//! The filter: evaluation with three-valued logic, SQL, errors.

use super::*;
use arrow_array::{Date32Array, Decimal128Array, Int32Array, Int64Array};
use arrow_schema::Field;

fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("n", DataType::Int32, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("d", DataType::Date32, true),
        Field::new("amt", DataType::Decimal128(10, 2), true),
        Field::new("ok", DataType::Boolean, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
            Arc::new(Int32Array::from(vec![
                Some(10),
                None,
                Some(30),
                Some(-5),
                Some(10),
            ])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("it's"),
                None,
                Some("b"),
                Some("a"),
            ])),
            Arc::new(Date32Array::from(vec![
                Some(19723),
                Some(19724),
                None,
                Some(0),
                Some(19800),
            ])),
            Arc::new(
                Decimal128Array::from(vec![Some(150), Some(-1), None, Some(99999), Some(150)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None,
                Some(true),
                None,
            ])),
        ],
    )
    .unwrap()
}

fn kept(filter: &str) -> Vec<i64> {
    let b = batch();
    let out = Expr::parse(filter)
        .unwrap()
        .bind(b.schema().as_ref())
        .unwrap()
        .apply(&b)
        .unwrap();
    out.column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec()
}

#[test]
fn evaluates_with_three_valued_logic() {
    assert_eq!(kept("n = 10"), [1, 5]);
    assert_eq!(kept("n <> 10"), [3, 4]);
    assert_eq!(kept("NOT (n = 10)"), [3, 4], "NULL stays unknown under NOT");
    assert_eq!(kept("n = 10 OR n IS NULL"), [1, 2, 5]);
    assert_eq!(kept("10 < n"), [3]);
    assert_eq!(kept("s IN ('a', 'it''s')"), [1, 2, 5]);
    assert_eq!(kept("s NOT IN ('a')"), [2, 4]);
    assert_eq!(kept("d >= DATE '2024-01-01'"), [1, 2, 5]);
    assert_eq!(kept("d < '2000-01-01'"), [4]);
    assert_eq!(kept("amt > 1.2 and amt <= 999.99"), [1, 4, 5]);
    assert_eq!(kept("amt = -0.01"), [2]);
    assert_eq!(kept("ok"), [1, 4]);
    assert_eq!(kept("NOT ok OR ok IS NULL"), [2, 3, 5]);
    assert_eq!(kept("ok = FALSE"), [2]);
    assert_eq!(kept("n > id"), [1, 3, 5]);
    assert_eq!(kept("(n = 10 OR n = 30) AND NOT s = 'a'"), [0i64; 0]);
    assert_eq!(kept("\"id\" >= 4"), [4, 5]);
    assert_eq!(kept("n >= -5 AND n < 10.00"), [4]);
}

#[test]
fn renders_sql() {
    let e = Expr::parse(
        "n = 10 AND NOT (s IN ('a','it''s') OR d IS NOT NULL) AND \"Odd\"\"Name\" <> 1.50",
    )
    .unwrap();
    assert_eq!(
        e.to_sql().unwrap(),
        "((\"n\" = 10) AND (NOT ((\"s\" IN ('a', 'it''s')) OR (\"d\" IS NOT NULL)))) AND (\"Odd\"\"Name\" <> 1.50)"
    );
    assert_eq!(
        Expr::parse("Created >= TIMESTAMP '2024-01-01 00:00:00'")
            .unwrap()
            .to_sql()
            .unwrap(),
        "\"created\" >= TIMESTAMP '2024-01-01 00:00:00'"
    );
    assert!(Expr::parse("s = 'a\\b'").unwrap().to_sql().is_err());
    assert_eq!(
        Expr::parse("a = 1 AND b = 2 OR c = 3").unwrap().columns(),
        ["a", "b", "c"]
    );
}

#[test]
fn errors_name_the_problem() {
    let b = batch();
    let err = |f: &str| match Expr::parse(f).and_then(|e| e.bind(b.schema().as_ref())) {
        Ok(_) => panic!("{f} was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err("nope = 1").contains("column `nope` is not in the result"));
    assert!(err("n = 'x'").contains("column `n` is Int32"));
    assert!(err("n = 1.5").contains("more decimal places"));
    assert!(err("n < 1e1").contains("exponent"));
    assert!(err("amt = 1.005").contains("more decimal places"));
    assert!(err("d = DATE 'tomorrow'").contains("does not fit"));
    assert!(err("n").contains("not BOOLEAN"));
    assert!(err("n = NULL").contains("IS NULL"));
    assert!(err("n = 1 AND").contains("end of the filter"));
    assert!(err("(n = 1").contains("expected `)`"));
    assert!(err("s = 'open").contains("unterminated"));
    assert!(err("1 = 1").contains("two literals"));
    assert!(err("s = d").contains("cannot be compared"));
    assert!(err("n = 1 n").contains("unexpected"));
    assert!(err("n IN (id)").contains("takes literals"));
    for e in ["nope = 1", "n = 'x'", "n IN (id)"] {
        assert!(err(e).starts_with("source.filter: "), "{}", err(e));
    }
}
