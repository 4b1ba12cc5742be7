//! The filter's lexer and recursive-descent parser (grammar in the
//! module above).

use std::fmt;

use super::{CmpOp, Expr, Literal, Operand, KEY};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Ident(String),
    Quoted(String),
    Number(String),
    Text(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "`{s}`"),
            Token::Quoted(s) => write!(f, "\"{s}\""),
            Token::Number(s) => write!(f, "number {s}"),
            Token::Text(s) => write!(f, "'{s}'"),
            Token::Op(s) => write!(f, "`{s}`"),
            Token::LParen => f.write_str("`(`"),
            Token::RParen => f.write_str("`)`"),
            Token::Comma => f.write_str("`,`"),
        }
    }
}

/// The quoted text or name starting at `chars[i]` (`''` for a quote),
/// and the index after it.
fn quoted(chars: &[char], mut i: usize) -> Result<(Token, usize)> {
    let quote = chars[i];
    let mut s = String::new();
    i += 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(Error::config(
                    KEY,
                    format!("unterminated {quote}...{quote} starting at character {i}"),
                ))
            }
            Some(&q) if q == quote && chars.get(i + 1) == Some(&quote) => {
                s.push(quote);
                i += 2;
            }
            Some(&q) if q == quote => {
                i += 1;
                break;
            }
            Some(&ch) => {
                s.push(ch);
                i += 1;
            }
        }
    }
    let token = match quote {
        '\'' => Token::Text(s),
        _ => Token::Quoted(s),
    };
    Ok((token, i))
}

/// The number starting at `chars[start]` (sign, digits, point, exponent),
/// and the index after it.
fn number(chars: &[char], start: usize) -> Result<(Token, usize)> {
    let mut i = start + 1;
    while i < chars.len()
        && (chars[i].is_ascii_digit()
            || chars[i] == '.'
            || ((chars[i] == 'e' || chars[i] == 'E')
                && chars
                    .get(i + 1)
                    .is_some_and(|d| d.is_ascii_digit() || *d == '-' || *d == '+'))
            || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
    {
        i += 1;
    }
    let n: String = chars[start..i].iter().collect();
    let n = n.strip_prefix('+').unwrap_or(&n).to_string();
    if n.parse::<f64>().is_err() {
        return Err(Error::config(KEY, format!("`{n}` is not a number")));
    }
    Ok((Token::Number(n), i))
}

pub(super) fn lex(text: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |m: String| Error::config(KEY, m);
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::LParen);
                i += 1
            }
            ')' => {
                out.push(Token::RParen);
                i += 1
            }
            ',' => {
                out.push(Token::Comma);
                i += 1
            }
            '\'' | '"' => {
                let (token, next) = quoted(&chars, i)?;
                out.push(token);
                i = next;
            }
            '=' => {
                out.push(Token::Op("="));
                i += 1
            }
            '<' | '>' | '!' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = match two.as_str() {
                    "<=" => "<=",
                    ">=" => ">=",
                    "<>" | "!=" => "<>",
                    _ if c == '<' => "<",
                    _ if c == '>' => ">",
                    _ => return Err(err("`!` must be followed by `=`".into())),
                };
                i += if matches!(two.as_str(), "<=" | ">=" | "<>" | "!=") {
                    2
                } else {
                    1
                };
                out.push(Token::Op(op));
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+' || c == '.')
                    && chars
                        .get(i + 1)
                        .is_some_and(|d| d.is_ascii_digit() || *d == '.')) =>
            {
                let (token, next) = number(&chars, i)?;
                out.push(token);
                i = next;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
                {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => {
                return Err(err(format!(
                    "unexpected character `{other}` at position {i}"
                )))
            }
        }
    }
    Ok(out)
}

pub(super) struct Parser {
    pub(super) tokens: Vec<Token>,
    pub(super) pos: usize,
}

impl Parser {
    pub(super) fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        match self.peek() {
            Some(Token::Ident(s)) if s.eq_ignore_ascii_case(word) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, want: Token, what: &str) -> Result<()> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(Error::config(KEY, format!("expected {what}, found {t}"))),
            None => Err(Error::config(
                KEY,
                format!("expected {what}, found the end of the filter"),
            )),
        }
    }

    pub(super) fn or(&mut self) -> Result<Expr> {
        let mut left = self.and()?;
        while self.keyword("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr> {
        let mut left = self.not()?;
        while self.keyword("AND") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr> {
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.predicate()
    }

    /// `( literal, literal, ... )` after IN.
    fn in_list(&mut self) -> Result<Vec<Literal>> {
        self.expect(Token::LParen, "`(` after IN")?;
        let mut list = Vec::new();
        loop {
            match self.operand()? {
                Operand::Literal(l) => list.push(l),
                Operand::Column(c) => {
                    return Err(Error::config(
                        KEY,
                        format!("IN (...) takes literals, found column `{c}`"),
                    ))
                }
            }
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::RParen) => return Ok(list),
                other => {
                    return Err(Error::config(
                        KEY,
                        format!(
                            "expected `,` or `)` in IN (...), found {}",
                            other.map_or("the end of the filter".into(), |t| t.to_string())
                        ),
                    ))
                }
            }
        }
    }

    fn predicate(&mut self) -> Result<Expr> {
        if self.peek() == Some(&Token::LParen) {
            self.pos += 1;
            let e = self.or()?;
            self.expect(Token::RParen, "`)`")?;
            return Ok(e);
        }
        let left = self.operand()?;
        let column = |o: &Operand, what: &str| match o {
            Operand::Column(c) => Ok(c.clone()),
            Operand::Literal(l) => Err(Error::config(
                KEY,
                format!("{what} needs a column on its left, found {l}"),
            )),
        };
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            if !self.keyword("NULL") {
                return Err(Error::config(KEY, "expected NULL after IS [NOT]"));
            }
            return Ok(Expr::IsNull {
                column: column(&left, "IS NULL")?,
                negated,
            });
        }
        let negated_in = self.keyword("NOT");
        if self.keyword("IN") {
            let list = self.in_list()?;
            return Ok(Expr::In {
                column: column(&left, "IN")?,
                list,
                negated: negated_in,
            });
        }
        if negated_in {
            return Err(Error::config(KEY, "expected IN after NOT"));
        }
        if let Some(Token::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let op = match op {
                "=" => CmpOp::Eq,
                "<>" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                _ => CmpOp::Ge,
            };
            let right = self.operand()?;
            return Ok(Expr::Cmp(left, op, right));
        }
        match left {
            Operand::Column(c) => Ok(Expr::Column(c)),
            Operand::Literal(l) => Err(Error::config(
                KEY,
                format!("{l} on its own is not a condition"),
            )),
        }
    }

    fn operand(&mut self) -> Result<Operand> {
        let typed = |p: &mut Parser, make: fn(String) -> Literal, kw: &str| match p.next() {
            Some(Token::Text(t)) => Ok(Operand::Literal(make(t))),
            _ => Err(Error::config(
                KEY,
                format!("{kw} must be followed by a quoted value, as in {kw} '2024-01-31'"),
            )),
        };
        match self.next() {
            Some(Token::Number(n)) => Ok(Operand::Literal(Literal::Number(n))),
            Some(Token::Text(t)) => Ok(Operand::Literal(Literal::Text(t))),
            Some(Token::Quoted(c)) => Ok(Operand::Column(c)),
            Some(Token::Ident(w)) => match w.to_ascii_uppercase().as_str() {
                "TRUE" => Ok(Operand::Literal(Literal::Bool(true))),
                "FALSE" => Ok(Operand::Literal(Literal::Bool(false))),
                "DATE" if matches!(self.peek(), Some(Token::Text(_))) => {
                    typed(self, Literal::Date, "DATE")
                }
                "TIMESTAMP" | "TIMESTAMPTZ" if matches!(self.peek(), Some(Token::Text(_))) => {
                    typed(self, Literal::Timestamp, "TIMESTAMP")
                }
                "NULL" => Err(Error::config(
                    KEY,
                    "NULL is never equal to anything: use `column IS NULL` or `IS NOT NULL`",
                )),
                "AND" | "OR" | "NOT" | "IN" | "IS" => Err(Error::config(
                    KEY,
                    format!(
                        "expected a column or a value, found {}",
                        w.to_ascii_uppercase()
                    ),
                )),
                // Unquoted names fold to lower case, as in SQL.
                _ => Ok(Operand::Column(w.to_lowercase())),
            },
            Some(t) => Err(Error::config(
                KEY,
                format!("expected a column or a value, found {t}"),
            )),
            None => Err(Error::config(
                KEY,
                "expected a column or a value, found the end of the filter",
            )),
        }
    }
}
