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

#[inline]
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as i32 + 1).to_le_bytes());
    out.extend_from_slice(s);
    out.push(0);
}

/// An array index as an element's key (`"12\0"`), without allocating.
#[inline]
pub fn put_index_key(out: &mut Vec<u8>, index: usize) {
    let mut buf = [0u8; 20];
    let at = digits_into(&mut buf, index as u64);
    out.extend_from_slice(&buf[at..]);
    out.push(0);
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

/// `unscaled · 10^-scale` as decimal text, e.g. `-12.3400`.
pub fn decimal_string(unscaled: i128, scale: i8) -> String {
    let mut out = Vec::with_capacity(48);
    write_decimal(&mut out, unscaled, scale);
    String::from_utf8(out).expect("ASCII digits")
}

/// A BSON string of `unscaled · 10^-scale` as decimal text, written in
/// place (no allocation per value).
#[inline]
pub fn put_decimal_str(out: &mut Vec<u8>, unscaled: i128, scale: i8) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write_decimal(out, unscaled, scale);
    let len = (out.len() - at - 4 + 1) as i32;
    out.push(0);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The text of [`decimal_string`], appended to `out`.
fn write_decimal(out: &mut Vec<u8>, unscaled: i128, scale: i8) {
    // 39 digits hold any i128; 64-bit division where the value fits.
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    let mut n = unscaled.unsigned_abs();
    while n > u64::MAX as u128 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let i = digits_into(&mut buf[..i], n as u64);
    let digits = &buf[i..];
    if unscaled < 0 {
        out.push(b'-');
    }
    if scale <= 0 {
        out.extend_from_slice(digits);
        if unscaled != 0 {
            out.resize(out.len() + (-(scale as i32)) as usize, b'0');
        }
        return;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits);
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
        for i in [0usize, 7, 10, 99_999, usize::MAX] {
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
            put_decimal_str(&mut out, v, scale);
            let mut expected = vec![7];
            put_str(&mut expected, want.as_bytes());
            proptest::prop_assert_eq!(out, expected);
        }
    }
}
