//! Low-level BSON writing: element type bytes, Decimal128 in its BID layout,
//! ISO 8601 text for dates and times, and JSON text → BSON.

pub const DOUBLE: u8 = 0x01;
pub const STRING: u8 = 0x02;
pub const DOCUMENT: u8 = 0x03;
pub const ARRAY: u8 = 0x04;
pub const BINARY: u8 = 0x05;
pub const OBJECT_ID: u8 = 0x07;
pub const BOOLEAN: u8 = 0x08;
pub const DATETIME: u8 = 0x09;
pub const NULL: u8 = 0x0A;
pub const INT32: u8 = 0x10;
pub const INT64: u8 = 0x12;
pub const DECIMAL128: u8 = 0x13;

/// Largest coefficient a BSON Decimal128 holds: 10^34 − 1.
const MAX_COEFFICIENT: u128 = 9_999_999_999_999_999_999_999_999_999_999_999;

/// `key` followed by NUL, as BSON element names are written.
pub fn cstring_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k
}

#[inline]
pub fn put_element(out: &mut Vec<u8>, ty: u8, key: &[u8]) {
    out.push(ty);
    out.extend_from_slice(key);
}

/// Bytes an element's head is padded to: a head this long or shorter (a key
/// of up to 30 bytes) is written with one fixed-size copy.
const HEAD: usize = 32;
/// Bytes of text a short string is copied in, the same way.
const SHORT_TEXT: usize = 32;

/// An element's head (type byte, key, NUL) kept padded, so that writing it
/// with its value takes one capacity check and fixed-size copies, where
/// `extend_from_slice` would check and call `memcpy` for each part.
#[derive(Clone, Debug)]
pub struct Head {
    /// A type byte (written over per element), the key and its NUL, then
    /// zeros up to `HEAD`; only used when `len <= HEAD`.
    padded: [u8; HEAD],
    /// The key and its NUL (the slow path for long keys).
    key: Vec<u8>,
    len: usize,
}

impl Head {
    /// The head of elements named `key` (NUL included, as [`cstring_key`]).
    pub fn new(key: &[u8]) -> Head {
        let mut padded = [0u8; HEAD];
        let len = 1 + key.len();
        if len <= HEAD {
            padded[1..len].copy_from_slice(key);
        }
        Head {
            padded,
            key: key.to_vec(),
            len,
        }
    }

    /// The key and its NUL.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Append an element of type `ty` whose value is `value`.
    #[inline(always)]
    pub fn put<const V: usize>(&self, out: &mut Vec<u8>, ty: u8, value: [u8; V]) {
        if self.len > HEAD {
            out.push(ty);
            out.extend_from_slice(&self.key);
            out.extend_from_slice(&value);
            return;
        }
        out.reserve(HEAD + V);
        // SAFETY: `reserve` made room for HEAD + V bytes past the length.
        // The head's HEAD bytes and the value's V bytes are written inside
        // that room (the value at `self.len <= HEAD`), and the length grows
        // by the `self.len + V` of them that are the element.
        unsafe {
            let at = out.len();
            let dst = out.as_mut_ptr().add(at);
            std::ptr::copy_nonoverlapping(self.padded.as_ptr(), dst, HEAD);
            *dst = ty;
            std::ptr::copy_nonoverlapping(value.as_ptr(), dst.add(self.len), V);
            out.set_len(at + self.len + V);
        }
    }

    /// Append a string element holding the first `len` bytes of `text`.
    /// `text` is where those bytes are in their buffer: up to
    /// `SHORT_TEXT` bytes are copied from it in one fixed-size copy when
    /// the buffer has them, whatever follows the string.
    #[inline(always)]
    pub fn put_text(&self, out: &mut Vec<u8>, text: &[u8], len: usize) {
        debug_assert!(len <= text.len());
        let short = match text.get(..SHORT_TEXT) {
            Some(s) if len <= SHORT_TEXT && self.len <= HEAD => s,
            _ => {
                self.put(out, STRING, []);
                put_str(out, &text[..len]);
                return;
            }
        };
        out.reserve(HEAD + 4 + SHORT_TEXT + 1);
        // SAFETY: `reserve` made room for HEAD + 4 + SHORT_TEXT + 1 bytes
        // past the length. The head takes HEAD of them; the string's length
        // is written at `self.len <= HEAD`, its SHORT_TEXT bytes after it and
        // its NUL after the `len <= SHORT_TEXT` that belong to it; the length
        // grows by the element's `self.len + 4 + len + 1` bytes.
        unsafe {
            let at = out.len();
            let dst = out.as_mut_ptr().add(at);
            std::ptr::copy_nonoverlapping(self.padded.as_ptr(), dst, HEAD);
            *dst = STRING;
            let v = dst.add(self.len);
            std::ptr::copy_nonoverlapping((len as i32 + 1).to_le_bytes().as_ptr(), v, 4);
            std::ptr::copy_nonoverlapping(short.as_ptr(), v.add(4), SHORT_TEXT);
            *v.add(4 + len) = 0;
            out.set_len(at + self.len + 4 + len + 1);
        }
    }
}

#[inline]
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as i32 + 1).to_le_bytes());
    out.extend_from_slice(s);
    out.push(0);
}

/// An array index as an element's key (`"12\0"`), without allocating.
#[inline(always)]
pub fn put_index_key(out: &mut Vec<u8>, index: usize) {
    // Keys up to 9,999 (a request holds `target.write_batch_docs`
    // documents, 1,000 by default) in copies of a fixed size, which
    // compile to a store or two instead of a call to `memmove`.
    let pair = |n: usize| [DIGIT_PAIRS[2 * n], DIGIT_PAIRS[2 * n + 1]];
    match index {
        0..=9 => out.extend_from_slice(&[b'0' + index as u8, 0]),
        10..=99 => {
            let [a, b] = pair(index);
            out.extend_from_slice(&[a, b, 0]);
        }
        100..=999 => {
            let [b, c] = pair(index % 100);
            out.extend_from_slice(&[b'0' + (index / 100) as u8, b, c, 0]);
        }
        1000..=9999 => {
            let ([a, b], [c, d]) = (pair(index / 100), pair(index % 100));
            out.extend_from_slice(&[a, b, c, d, 0]);
        }
        _ => {
            let mut buf = [0u8; 20];
            let at = digits_into(&mut buf, index as u64);
            out.extend_from_slice(&buf[at..]);
            out.push(0);
        }
    }
}

/// The decimal digits of `n` at the end of `buf`; returns where they begin.
#[inline]
fn digits_into(buf: &mut [u8], mut n: u64) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// Start a (sub-)document: returns where its length goes.
#[inline]
pub fn begin_doc(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Close a document begun at `at`: terminator and length.
#[inline]
pub fn end_doc(out: &mut Vec<u8>, at: usize) {
    out.push(0);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The 16 bytes of a BSON Decimal128 equal to `unscaled · 10^-scale`, or
/// `None` when it needs more than 34 significant digits.
///
/// BID layout: sign at bit 127, exponent biased by 6176 at bit 113,
/// coefficient in the low 113 bits. Trailing zeros of a too-long
/// coefficient move into the exponent, which keeps the value exact.
pub fn decimal128(unscaled: i128, scale: i8) -> Option<[u8; 16]> {
    let negative = unscaled < 0;
    let mut coefficient = unscaled.unsigned_abs();
    let mut exponent = -(scale as i32);
    while coefficient > MAX_COEFFICIENT {
        if !coefficient.is_multiple_of(10) {
            return None;
        }
        coefficient /= 10;
        exponent += 1;
    }
    let biased = (exponent + 6176) as u128;
    let bits = ((negative as u128) << 127) | (biased << 113) | coefficient;
    Some(bits.to_le_bytes())
}

/// Longest decimal text of an i128 at any scale: a sign, 39 digits and a
/// point, or 128 zeros after the digits, or a point before 127 digits.
const DECIMAL_TEXT: usize = 168;

/// `unscaled · 10^-scale` as decimal text, e.g. `-12.3400`.
pub fn decimal_string(unscaled: i128, scale: i8) -> String {
    let mut buf = [0u8; DECIMAL_TEXT + SHORT_TEXT];
    let at = write_decimal_text(&mut buf, unscaled, scale);
    String::from_utf8(buf[at..DECIMAL_TEXT].to_vec()).expect("ASCII digits")
}

impl Head {
    /// Append a string element holding `unscaled · 10^-scale` as decimal
    /// text (made on the stack: no allocation per value).
    #[inline]
    pub fn put_decimal(&self, out: &mut Vec<u8>, unscaled: i128, scale: i8) {
        // Room after the text, so that a short one is copied in one move.
        let mut buf = [0u8; DECIMAL_TEXT + SHORT_TEXT];
        let at = write_decimal_text(&mut buf, unscaled, scale);
        self.put_text(out, &buf[at..], DECIMAL_TEXT - at);
    }
}

/// The text of [`decimal_string`], written right to left so that it ends
/// at `DECIMAL_TEXT`; returns where it begins.
#[inline]
fn write_decimal_text(
    buf: &mut [u8; DECIMAL_TEXT + SHORT_TEXT],
    unscaled: i128,
    scale: i8,
) -> usize {
    let mut n = unscaled.unsigned_abs();
    let mut i = DECIMAL_TEXT;
    match (u64::try_from(n), scale) {
        // Nearly every value: 64 bits, a scale 10^scale fits in.
        (Ok(m), 0..=19) => {
            if scale > 0 {
                let unit = POW10[scale as usize];
                put_digits(buf, &mut i, m % unit, scale as usize);
                i -= 1;
                buf[i] = b'.';
                put_digits(buf, &mut i, m / unit, 1);
            } else {
                put_digits(buf, &mut i, m, 1);
            }
        }
        _ => {
            let mut put = |i: &mut usize, c: u8| {
                *i -= 1;
                buf[*i] = c;
            };
            if scale < 0 && unscaled != 0 {
                for _ in 0..-(scale as i32) {
                    put(&mut i, b'0');
                }
            }
            if scale > 0 {
                for _ in 0..scale {
                    put(&mut i, b'0' + pop_digit(&mut n));
                }
                put(&mut i, b'.');
            }
            loop {
                put(&mut i, b'0' + pop_digit(&mut n));
                if n == 0 {
                    break;
                }
            }
        }
    }
    if unscaled < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    i
}

/// 10^0 to 10^19, the powers of ten a `u64` holds.
const POW10: [u64; 20] = {
    let mut p = [1u64; 20];
    let mut k = 1;
    while k < 20 {
        p[k] = p[k - 1] * 10;
        k += 1;
    }
    p
};

/// "00", "01", … "99": two digits per division.
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut k = 0;
    while k < 100 {
        t[2 * k] = b'0' + (k / 10) as u8;
        t[2 * k + 1] = b'0' + (k % 10) as u8;
        k += 1;
    }
    t
};

/// The digits of `x`, written right to left to end at `*i`: at least `min`
/// of them (zeros in front), and at least one.
#[inline(always)]
fn put_digits(buf: &mut [u8], i: &mut usize, mut x: u64, min: usize) {
    let end = *i;
    while x >= 100 {
        let pair = (x % 100) as usize * 2;
        x /= 100;
        *i -= 2;
        buf[*i..*i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if x >= 10 {
        let pair = x as usize * 2;
        *i -= 2;
        buf[*i..*i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else if x > 0 || *i == end {
        *i -= 1;
        buf[*i] = b'0' + x as u8;
    }
    while end - *i < min {
        *i -= 1;
        buf[*i] = b'0';
    }
}

/// The last decimal digit of `n`, removed from it (64-bit division where
/// `n` fits).
#[inline(always)]
fn pop_digit(n: &mut u128) -> u8 {
    if let Ok(m) = u64::try_from(*n) {
        *n = (m / 10) as u128;
        (m % 10) as u8
    } else {
        let d = (*n % 10) as u8;
        *n /= 10;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn decimal128_matches_bson_parser() {
        let cases: &[(i128, i8, &str)] = &[
            (0, 0, "0"),
            (0, 4, "0.0000"),
            (123_456_780, 4, "12345.6780"),
            (-1, 10, "-1E-10"),
            (
                9_999_999_999_999_999_999_999_999_999_999_999,
                0,
                "9999999999999999999999999999999999",
            ),
            (i64::MIN as i128, 2, "-92233720368547758.08"),
            (5, -3, "5E+3"),
        ];
        for &(unscaled, scale, text) in cases {
            let ours = decimal128(unscaled, scale).unwrap();
            let theirs = bson::Decimal128::from_str(text).unwrap().bytes();
            assert_eq!(ours, theirs, "{unscaled} scale {scale}");
        }
    }

    #[test]
    fn decimal128_folds_trailing_zeros_and_refuses_35_digits() {
        // 10^37 at scale 0: 38 digits, but exact as 10^33 · 10^4.
        let v = 10i128.pow(37);
        assert_eq!(
            decimal128(v, 0).unwrap(),
            bson::Decimal128::from_str("1000000000000000000000000000000000E+4")
                .unwrap()
                .bytes()
        );
        assert!(decimal128(10i128.pow(35) + 1, 0).is_none());
    }

    #[test]
    fn index_keys() {
        // Every key of the fixed-size paths, and the general one past them.
        let general = [10_000usize, 10_001, 99_999, 123_456_789, usize::MAX];
        for i in (0..10_000).chain(general) {
            let mut out = Vec::new();
            put_index_key(&mut out, i);
            assert_eq!(out, format!("{i}\0").into_bytes());
        }
    }

    #[test]
    fn decimal_text() {
        assert_eq!(decimal_string(-1234, 2), "-12.34");
        assert_eq!(decimal_string(5, 3), "0.005");
        assert_eq!(decimal_string(5, -2), "500");
        assert_eq!(decimal_string(0, 2), "0.00");
        assert_eq!(decimal_string(i128::MIN, 0), i128::MIN.to_string());
        assert_eq!(
            decimal_string(-(u64::MAX as i128) - 1, 20),
            "-0.18446744073709551616"
        );
        // The longest texts, at the ends of the scale's range.
        let min = i128::MIN.to_string();
        assert_eq!(
            decimal_string(i128::MIN, -128),
            format!("{min}{}", "0".repeat(128))
        );
        assert_eq!(
            decimal_string(i128::MIN, 127),
            format!("-0.{}{}", "0".repeat(127 - 39), &min[1..])
        );
        assert_eq!(decimal_string(1, 127), format!("0.{}1", "0".repeat(126)));
        // Either side of the 64-bit path's edges: u64::MAX, scale 19 and 20.
        assert_eq!(decimal_string(u64::MAX as i128, 0), u64::MAX.to_string());
        assert_eq!(
            decimal_string(u64::MAX as i128 + 1, 0),
            (u64::MAX as u128 + 1).to_string()
        );
        assert_eq!(
            decimal_string(-(u64::MAX as i128), 19),
            "-1.8446744073709551615"
        );
        assert_eq!(
            decimal_string(u64::MAX as i128, 20),
            "0.18446744073709551615"
        );
        assert_eq!(decimal_string(100, 0), "100");
        assert_eq!(decimal_string(100, 1), "10.0");
        assert_eq!(decimal_string(100, 3), "0.100");
        assert_eq!(decimal_string(-7, 1), "-0.7");
        assert_eq!(decimal_string(99, 2), "0.99");
    }

    proptest::proptest! {
        /// The text written in place is Arrow's text of the same decimal,
        /// in a BSON string.
        #[test]
        fn decimal_text_is_arrows(v in -(10i128.pow(38) - 1)..10i128.pow(38), scale in 0i8..=38) {
            use arrow_array::types::{Decimal128Type, DecimalType};
            let want = Decimal128Type::format_decimal(v, 38, scale);
            proptest::prop_assert_eq!(decimal_string(v, scale), want.clone());
            let mut out = vec![7];
            Head::new(b"k\0").put_decimal(&mut out, v, scale);
            let mut expected = vec![7, STRING, b'k', 0];
            put_str(&mut expected, want.as_bytes());
            proptest::prop_assert_eq!(out, expected);
        }

        /// The same where nearly every value falls: 64 bits, scale to 20,
        /// and few digits as often as many.
        #[test]
        fn decimal_text_is_arrows_in_64_bits(
            digits in 1u32..=20,
            seed in proptest::prelude::any::<u64>(),
            negative in proptest::prelude::any::<bool>(),
            scale in 0i8..=20,
        ) {
            use arrow_array::types::{Decimal128Type, DecimalType};
            let m = if digits == 20 { seed } else { seed % 10u64.pow(digits) };
            let v = if negative { -(m as i128) } else { m as i128 };
            let want = Decimal128Type::format_decimal(v, 38, scale);
            proptest::prop_assert_eq!(decimal_string(v, scale), want);
        }
    }
}
