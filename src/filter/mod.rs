//! The job's row filter: a small SQL-like expression, pushed into the
//! source query where there is one, evaluated on Arrow batches with the
//! compute kernels where there is none (Parquet parts staged on S3).
//!
//! ```text
//! expr      := and (OR and)*
//! and       := not (AND not)*
//! not       := NOT not | predicate
//! predicate := '(' expr ')'
//!            | operand (= | <> | != | < | <= | > | >=) operand
//!            | operand IS [NOT] NULL
//!            | operand [NOT] IN '(' literal (, literal)* ')'
//!            | column                      -- a BOOLEAN column
//! operand   := column | literal
//! column    := name | "quoted name"
//! literal   := 123 | -1.5 | 'text' ('' for a quote) | TRUE | FALSE
//!            | DATE 'YYYY-MM-DD' | TIMESTAMP 'YYYY-MM-DD HH:MM:SS[.ffffff][+00]'
//! ```
//!
//! Both evaluations follow SQL's three-valued logic: a comparison with a
//! NULL is unknown, `NOT unknown` is unknown, and a row is kept only when
//! the whole expression is true. The expression is checked against the
//! result's schema before any data moves: an unknown column or a literal
//! that does not fit its column's type is an error naming `source.filter`.

mod parse;

use std::fmt;
use std::sync::Arc;

use arrow_arith::boolean::{and_kleene, is_not_null, is_null, not, or_kleene};
use arrow_array::{Array, ArrayRef, BooleanArray, Datum, RecordBatch, Scalar, StringArray};
use arrow_cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Schema};

use crate::error::{Error, Result};
use crate::kind::FieldKind;
use crate::sql::quote_ident;
use parse::{lex, Parser};

const KEY: &str = "source.filter";

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// The operator with its operands swapped (`1 < a` is `a > 1`).
    fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }
}

/// A literal as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A number, kept as its text (exact for decimals).
    Number(String),
    Text(String),
    Bool(bool),
    Date(String),
    Timestamp(String),
}

impl Literal {
    fn text(&self) -> String {
        match self {
            Literal::Number(t) | Literal::Text(t) | Literal::Date(t) | Literal::Timestamp(t) => {
                t.clone()
            }
            Literal::Bool(b) => b.to_string(),
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |t: &str| format!("'{}'", t.replace('\'', "''"));
        match self {
            Literal::Number(n) => f.write_str(n),
            Literal::Text(t) => f.write_str(&quoted(t)),
            Literal::Bool(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Literal::Date(t) => write!(f, "DATE {}", quoted(t)),
            Literal::Timestamp(t) => write!(f, "TIMESTAMP {}", quoted(t)),
        }
    }
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Column(String),
    Literal(Literal),
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Cmp(Operand, CmpOp, Operand),
    IsNull {
        column: String,
        negated: bool,
    },
    In {
        column: String,
        list: Vec<Literal>,
        negated: bool,
    },
    /// A BOOLEAN column on its own.
    Column(String),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    /// Parse a filter expression.
    pub fn parse(text: &str) -> Result<Expr> {
        let tokens = lex(text)?;
        let mut p = Parser { tokens, pos: 0 };
        let expr = p.or()?;
        match p.peek() {
            None => Ok(expr),
            Some(t) => Err(Error::config(
                KEY,
                format!("unexpected {t} at the end of the filter"),
            )),
        }
    }

    /// The columns the expression reads, each once, in order of appearance.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit_columns(&mut |c| {
            if !out.iter().any(|o: &String| o == c) {
                out.push(c.to_string());
            }
        });
        out
    }

    fn visit_columns(&self, f: &mut impl FnMut(&str)) {
        match self {
            Expr::Cmp(a, _, b) => {
                for o in [a, b] {
                    if let Operand::Column(c) = o {
                        f(c)
                    }
                }
            }
            Expr::IsNull { column, .. } | Expr::In { column, .. } | Expr::Column(column) => {
                f(column)
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.visit_columns(f);
                b.visit_columns(f);
            }
            Expr::Not(a) => a.visit_columns(f),
        }
    }

    /// The expression as a SQL predicate, for the source query's WHERE.
    /// Every column is quoted and every sub-expression parenthesised.
    pub fn to_sql(&self) -> Result<String> {
        let lit = |l: &Literal| -> Result<String> {
            // Redshift reads a backslash in a literal as an escape, PostgreSQL
            // does not: the same text would mean two things.
            if l.text().contains('\\') {
                return Err(Error::config(
                    KEY,
                    format!("the literal {l} contains a backslash, which Redshift and PostgreSQL read differently"),
                ));
            }
            Ok(l.to_string())
        };
        let operand = |o: &Operand| match o {
            Operand::Column(c) => Ok(quote_ident(c)),
            Operand::Literal(l) => lit(l),
        };
        Ok(match self {
            Expr::Cmp(a, op, b) => format!("{} {} {}", operand(a)?, op.sql(), operand(b)?),
            Expr::IsNull { column, negated } => format!(
                "{} IS {}NULL",
                quote_ident(column),
                if *negated { "NOT " } else { "" }
            ),
            Expr::In {
                column,
                list,
                negated,
            } => format!(
                "{} {}IN ({})",
                quote_ident(column),
                if *negated { "NOT " } else { "" },
                list.iter().map(lit).collect::<Result<Vec<_>>>()?.join(", ")
            ),
            Expr::Column(c) => quote_ident(c),
            Expr::And(a, b) => format!("({}) AND ({})", a.to_sql()?, b.to_sql()?),
            Expr::Or(a, b) => format!("({}) OR ({})", a.to_sql()?, b.to_sql()?),
            Expr::Not(a) => format!("NOT ({})", a.to_sql()?),
        })
    }

    /// Check the expression against a schema and prepare its literals as
    /// Arrow scalars of their columns' types.
    pub fn bind(&self, schema: &Schema) -> Result<Filter> {
        let padded = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| FieldKind::of(f) == Some(FieldKind::Char))
            .map(|(i, _)| i)
            .collect();
        Ok(Filter {
            node: bind(self, schema)?,
            columns: self.columns(),
            padded,
        })
    }
}

/// A filter checked against a schema, ready to evaluate on its batches.
#[derive(Debug)]
pub struct Filter {
    node: Node,
    columns: Vec<String>,
    /// CHAR(n) columns: compared without their trailing blanks, as SQL
    /// compares them.
    padded: Vec<usize>,
}

#[derive(Debug)]
enum Value {
    Column(usize),
    Scalar(Scalar<ArrayRef>),
}

#[derive(Debug)]
enum Node {
    Cmp(Value, CmpOp, Value),
    IsNull(usize, bool),
    /// `column IN (scalars)`, negated or not.
    In(usize, Vec<Scalar<ArrayRef>>, bool),
    Column(usize),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
}

fn column_index(schema: &Schema, name: &str) -> Result<usize> {
    crate::error::column_index(schema, KEY, name)
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    )
}

fn is_numeric(t: &DataType) -> bool {
    is_integer(t)
        || matches!(
            t,
            DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _)
        )
}

/// A number literal's text for a column of `t`: an exponent only for
/// floats, no more decimals than the column holds, `10.00` as the integer
/// 10.
fn number_text(n: &str, column: &str, data_type: &DataType) -> Result<String> {
    let t = data_type;
    if n.contains(['e', 'E']) && !matches!(t, DataType::Float32 | DataType::Float64) {
        return Err(Error::config(
            KEY,
            format!("column `{column}` is {data_type}; write the literal {n} without an exponent"),
        ));
    }
    let fraction = n
        .split_once('.')
        .map_or(0, |(_, f)| f.trim_end_matches('0').len());
    let exact = match t {
        t if is_integer(t) => fraction == 0,
        DataType::Decimal128(_, s) => fraction <= (*s).max(0) as usize,
        _ => true,
    };
    if !exact {
        return Err(Error::config(
            KEY,
            format!(
                "column `{column}` is {data_type}; the literal {n} has more decimal places than it can hold"
            ),
        ));
    }
    if is_integer(t) {
        // `10.00` is the integer 10.
        return Ok(n.split('.').next().unwrap_or(n).to_string());
    }
    Ok(n.to_string())
}

/// A literal as a one-value array of `column`'s type.
fn scalar(
    lit: &Literal,
    column: &str,
    data_type: &DataType,
    padded: bool,
) -> Result<Scalar<ArrayRef>> {
    let mismatch = || {
        Error::config(
            KEY,
            format!(
                "column `{column}` is {data_type}; the literal {lit} is not a value of that type"
            ),
        )
    };
    let fits = match (lit, data_type) {
        (Literal::Number(_), t) => is_numeric(t),
        (Literal::Text(_), DataType::Utf8 | DataType::LargeUtf8) => true,
        (Literal::Text(_) | Literal::Date(_), DataType::Date32) => true,
        (
            Literal::Text(_) | Literal::Timestamp(_) | Literal::Date(_),
            DataType::Timestamp(_, _),
        ) => true,
        (Literal::Bool(_), DataType::Boolean) => true,
        _ => false,
    };
    if !fits {
        return Err(mismatch());
    }
    let mut text = lit.text();
    if padded {
        text = text.trim_end_matches(' ').to_string();
    }
    if let Literal::Number(n) = lit {
        text = number_text(n, column, data_type)?;
    }
    let source: ArrayRef = Arc::new(StringArray::from(vec![text.as_str()]));
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let fail = |e: arrow_schema::ArrowError| {
        Error::config(
            KEY,
            format!("column `{column}` is {data_type}; the literal {lit} does not fit it: {e}"),
        )
    };
    let array = match data_type {
        // Parsed as a UTC instant (an offset in the text is applied), then
        // labelled with the column's zone: timestamps are instants either way.
        DataType::Timestamp(unit, Some(_)) => {
            let utc = cast_with_options(&source, &DataType::Timestamp(*unit, None), &options)
                .map_err(fail)?;
            let data = utc
                .to_data()
                .into_builder()
                .data_type(data_type.clone())
                .build()
                .map_err(fail)?;
            arrow_array::make_array(data)
        }
        _ => cast_with_options(&source, data_type, &options).map_err(fail)?,
    };
    Ok(Scalar::new(array))
}

fn bind(expr: &Expr, schema: &Schema) -> Result<Node> {
    let column = |name: &str| -> Result<(usize, DataType)> {
        let i = column_index(schema, name)?;
        Ok((i, schema.field(i).data_type().clone()))
    };
    let scalar = |l: &Literal, c: &str, t: &DataType| {
        let padded = schema
            .field_with_name(c)
            .is_ok_and(|f| FieldKind::of(f) == Some(FieldKind::Char));
        scalar(l, c, t, padded)
    };
    Ok(match expr {
        Expr::Cmp(a, op, b) => match (a, b) {
            (Operand::Column(x), Operand::Column(y)) => {
                let (i, ti) = column(x)?;
                let (j, tj) = column(y)?;
                let comparable = ti == tj || (is_numeric(&ti) && is_numeric(&tj));
                if !comparable {
                    return Err(Error::config(
                        KEY,
                        format!("columns `{x}` ({ti}) and `{y}` ({tj}) cannot be compared"),
                    ));
                }
                Node::Cmp(Value::Column(i), *op, Value::Column(j))
            }
            (Operand::Column(c), Operand::Literal(l)) => {
                let (i, t) = column(c)?;
                let s = scalar(l, c, &t)?;
                Node::Cmp(Value::Column(i), *op, Value::Scalar(s))
            }
            (Operand::Literal(l), Operand::Column(c)) => {
                let (i, t) = column(c)?;
                let s = scalar(l, c, &t)?;
                Node::Cmp(Value::Column(i), op.flipped(), Value::Scalar(s))
            }
            (Operand::Literal(x), Operand::Literal(y)) => {
                return Err(Error::config(
                    KEY,
                    format!("{x} {} {y} compares two literals; name a column", op.sql()),
                ))
            }
        },
        Expr::IsNull { column: c, negated } => Node::IsNull(column(c)?.0, *negated),
        Expr::In {
            column: c,
            list,
            negated,
        } => {
            let (i, t) = column(c)?;
            let scalars = list
                .iter()
                .map(|l| scalar(l, c, &t))
                .collect::<Result<_>>()?;
            Node::In(i, scalars, *negated)
        }
        Expr::Column(c) => {
            let (i, t) = column(c)?;
            if t != DataType::Boolean {
                return Err(Error::config(
                    KEY,
                    format!("column `{c}` is {t}, not BOOLEAN: compare it with a value"),
                ));
            }
            Node::Column(i)
        }
        Expr::And(a, b) => Node::And(Box::new(bind(a, schema)?), Box::new(bind(b, schema)?)),
        Expr::Or(a, b) => Node::Or(Box::new(bind(a, schema)?), Box::new(bind(b, schema)?)),
        Expr::Not(a) => Node::Not(Box::new(bind(a, schema)?)),
    })
}

fn arrow_err(e: arrow_schema::ArrowError) -> Error {
    Error::Internal(format!("filter: {e}"))
}

impl Filter {
    /// The columns the filter reads.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Which rows of `batch` the filter keeps (`true`), unknown counted as
    /// not kept. `batch` has the schema the filter was bound to.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        eval(
            &self.node,
            &Columns {
                batch,
                padded: &self.padded,
            },
        )
    }

    /// The rows of `batch` the filter keeps.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mask = self.evaluate(batch)?;
        if mask.null_count() == 0 && mask.true_count() == batch.num_rows() {
            return Ok(batch.clone());
        }
        arrow_select::filter::filter_record_batch(batch, &mask).map_err(arrow_err)
    }
}

/// Two columns of different numeric types, cast to one they both fit.
fn common(a: &ArrayRef, b: &ArrayRef) -> Result<(ArrayRef, ArrayRef)> {
    let (ta, tb) = (a.data_type(), b.data_type());
    if ta == tb {
        return Ok((a.clone(), b.clone()));
    }
    let to = if is_integer(ta) && is_integer(tb) {
        DataType::Int64
    } else {
        DataType::Float64
    };
    let cast = |x: &ArrayRef| arrow_cast::cast(x, &to).map_err(arrow_err);
    Ok((cast(a)?, cast(b)?))
}

fn compare(op: CmpOp, l: &dyn Datum, r: &dyn Datum) -> Result<BooleanArray> {
    use arrow_ord::cmp;
    match op {
        CmpOp::Eq => cmp::eq(l, r),
        CmpOp::Ne => cmp::neq(l, r),
        CmpOp::Lt => cmp::lt(l, r),
        CmpOp::Le => cmp::lt_eq(l, r),
        CmpOp::Gt => cmp::gt(l, r),
        CmpOp::Ge => cmp::gt_eq(l, r),
    }
    .map_err(arrow_err)
}

/// A batch's columns as the filter compares them.
struct Columns<'a> {
    batch: &'a RecordBatch,
    padded: &'a [usize],
}

impl Columns<'_> {
    fn get(&self, i: usize) -> ArrayRef {
        let c = self.batch.column(i);
        if !self.padded.contains(&i) {
            return c.clone();
        }
        match c.as_any().downcast_ref::<StringArray>() {
            Some(text) => Arc::new(
                text.iter()
                    .map(|v| v.map(|v| v.trim_end_matches(' ')))
                    .collect::<StringArray>(),
            ),
            None => c.clone(),
        }
    }
}

fn eval(node: &Node, columns: &Columns) -> Result<BooleanArray> {
    let batch = columns.batch;
    match node {
        Node::Cmp(Value::Column(i), op, Value::Scalar(s)) => compare(*op, &columns.get(*i), s),
        Node::Cmp(Value::Column(i), op, Value::Column(j)) => {
            let (a, b) = common(&columns.get(*i), &columns.get(*j))?;
            compare(*op, &a, &b)
        }
        Node::Cmp(..) => Err(Error::Internal("filter: a literal on the left".into())),
        Node::IsNull(i, negated) => {
            let c = batch.column(*i);
            if *negated { is_not_null(c) } else { is_null(c) }.map_err(arrow_err)
        }
        Node::In(i, list, negated) => {
            let c = &columns.get(*i);
            let mut any = BooleanArray::from(vec![false; batch.num_rows()]);
            for s in list {
                any = or_kleene(&any, &compare(CmpOp::Eq, c, s)?).map_err(arrow_err)?;
            }
            if *negated {
                not(&any).map_err(arrow_err)
            } else {
                Ok(any)
            }
        }
        Node::Column(i) => Ok(batch
            .column(*i)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| Error::Internal("filter: boolean column".into()))?
            .clone()),
        Node::And(a, b) => and_kleene(&eval(a, columns)?, &eval(b, columns)?).map_err(arrow_err),
        Node::Or(a, b) => or_kleene(&eval(a, columns)?, &eval(b, columns)?).map_err(arrow_err),
        Node::Not(a) => not(&eval(a, columns)?).map_err(arrow_err),
    }
}

// ---- lexer and parser ----

#[cfg(test)]
mod tests;
