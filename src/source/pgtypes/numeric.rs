//! NUMERIC in its three wire forms, each into an unscaled i128 at the
//! column's scale: PostgreSQL's binary base-10000 groups, Redshift's binary
//! 8- or 16-byte unscaled integer, and decimal text.
//!
//! Which form a column arrives in is decided once, from the server and the
//! protocol version it confirmed, before any row is read — never from a
//! value's length: in PostgreSQL's form an 8-byte value is a numeric with no
//! digit groups (zero), which is exactly how Redshift's 8-byte 1234 would
//! read.

/// Why a NUMERIC cannot become an Arrow Decimal128 at the column's scale.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumericError {
    #[error("NaN cannot be stored as a decimal")]
    NaN,
    #[error("{0}Infinity cannot be stored as a decimal")]
    Infinity(&'static str),
    #[error("value has more digits than 38")]
    Overflow,
    #[error("value has more fractional digits than the column's scale")]
    Inexact,
    #[error("malformed numeric from the server")]
    Malformed,
}

/// Decode PostgreSQL's binary NUMERIC into an unscaled i128 at `scale`.
///
/// The wire form is `ndigits, weight, sign, dscale` (i16 each) and `ndigits`
/// base-10000 digit groups, most significant first; the value is
/// `Σ digit[i] · 10000^(weight − i)`. Leading and trailing zero groups are
/// stripped, so the scale is derived from `weight` and `ndigits`, never from
/// `dscale`. Zero has no groups.
pub fn numeric_to_i128(v: &[u8], scale: i8) -> Result<i128, NumericError> {
    if v.len() < 8 {
        return Err(NumericError::Malformed);
    }
    let ndigits = i16::from_be_bytes([v[0], v[1]]) as i32;
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err(NumericError::NaN),
        0xD000 => return Err(NumericError::Infinity("+")),
        0xF000 => return Err(NumericError::Infinity("-")),
        _ => return Err(NumericError::Malformed),
    }
    if ndigits < 0 || v.len() != 8 + 2 * ndigits as usize {
        return Err(NumericError::Malformed);
    }
    let groups = &v[8..];
    let acc = if ndigits <= 4 {
        short_groups(groups, weight, scale)?
    } else {
        long_groups(groups, weight, scale)?
    };
    Ok(if sign == 0x4000 { -acc } else { acc })
}

/// Up to four groups (16 digits, nearly every value): gathered in a `u64`,
/// then scaled by one power of ten.
fn short_groups(groups: &[u8], weight: i32, scale: i8) -> Result<i128, NumericError> {
    let mut h: u64 = 0;
    for g in groups.chunks_exact(2) {
        let d = i16::from_be_bytes([g[0], g[1]]);
        if !(0..10_000).contains(&d) {
            return Err(NumericError::Malformed);
        }
        h = h * 10_000 + d as u64;
    }
    // Zero is zero at any scale, though 10^e may not fit.
    if h == 0 {
        return Ok(0);
    }
    // The last group is worth 10000^(weight − ndigits + 1), so h is worth
    // 10^e in the unscaled integer.
    let e = 4 * (weight - (groups.len() / 2) as i32 + 1) + scale as i32;
    if e >= 0 {
        return 10i128
            .checked_pow(e as u32)
            .and_then(|p| p.checked_mul(h as i128))
            .ok_or(NumericError::Overflow);
    }
    // Digits below the scale must all be zeros (h < 10^16 < 10^19).
    match 10u64.checked_pow((-e) as u32) {
        Some(p) if h.is_multiple_of(p) => Ok((h / p) as i128),
        _ => Err(NumericError::Inexact),
    }
}

/// Any number of groups, each scaled on its own in `i128`.
fn long_groups(groups: &[u8], weight: i32, scale: i8) -> Result<i128, NumericError> {
    // Each group i is worth d · 10^(4·(weight − i)) · 10^scale in the
    // unscaled integer; a group below the scale must contribute only zeros.
    let mut acc: i128 = 0;
    for (i, g) in groups.chunks_exact(2).enumerate() {
        let d = i16::from_be_bytes([g[0], g[1]]);
        if !(0..10_000).contains(&d) {
            return Err(NumericError::Malformed);
        }
        // A zero group adds nothing, however far up or down it sits.
        if d == 0 {
            continue;
        }
        let e = 4 * (weight - i as i32) + scale as i32;
        let term = if e >= 0 {
            10i128
                .checked_pow(e as u32)
                .and_then(|p| p.checked_mul(d as i128))
                .ok_or(NumericError::Overflow)?
        } else if e > -4 {
            let p = 10i16.pow((-e) as u32);
            if d % p != 0 {
                return Err(NumericError::Inexact);
            }
            (d / p) as i128
        } else if d != 0 {
            return Err(NumericError::Inexact);
        } else {
            0
        };
        acc = acc.checked_add(term).ok_or(NumericError::Overflow)?;
    }
    Ok(acc)
}

/// Redshift's binary NUMERIC (server protocol 2 and above): the unscaled
/// value as a big-endian two's-complement integer of 8 bytes (precision up
/// to 19) or 16 bytes; the scale is the column's. Any other length is an
/// error, never a guess.
pub fn unscaled_to_i128(v: &[u8]) -> Result<i128, NumericError> {
    match v.len() {
        8 => Ok(i64::from_be_bytes(v.try_into().expect("8 bytes")) as i128),
        16 => Ok(i128::from_be_bytes(v.try_into().expect("16 bytes"))),
        _ => Err(NumericError::Malformed),
    }
}

/// Decimal text (`-12345.6789`, as PostgreSQL and Redshift print NUMERIC)
/// into an unscaled i128 at `scale`. Fractional digits beyond the scale
/// must be zeros; `NaN` and `±Infinity` are refused by name.
pub fn text_to_i128(v: &[u8], scale: i8) -> Result<i128, NumericError> {
    match v {
        b"NaN" => return Err(NumericError::NaN),
        b"Infinity" => return Err(NumericError::Infinity("+")),
        b"-Infinity" => return Err(NumericError::Infinity("-")),
        _ => {}
    }
    let (negative, digits) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, v),
    };
    let (int, frac) = match digits.iter().position(|&c| c == b'.') {
        Some(p) => (&digits[..p], &digits[p + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(NumericError::Malformed);
    }
    let scale = scale as i32;
    let mut acc: i128 = 0;
    let mut push = |c: u8| -> Result<(), NumericError> {
        if !c.is_ascii_digit() {
            return Err(NumericError::Malformed);
        }
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add((c - b'0') as i128))
            .ok_or(NumericError::Overflow)?;
        Ok(())
    };
    // Integer digits, less the last -scale of them when the scale is
    // negative (those must be zeros).
    let keep_int = (int.len() as i32 + scale.min(0)).max(0) as usize;
    for &c in &int[..keep_int] {
        push(c)?;
    }
    zeros_only(&int[keep_int..])?;
    let keep_frac = (scale.max(0) as usize).min(frac.len());
    for &c in &frac[..keep_frac] {
        push(c)?;
    }
    zeros_only(&frac[keep_frac..])?;
    // Pad to the scale when the text has fewer fractional digits.
    for _ in keep_frac..scale.max(0) as usize {
        acc = acc.checked_mul(10).ok_or(NumericError::Overflow)?;
    }
    Ok(if negative { -acc } else { acc })
}

/// Digits beyond the scale: zeros, or the value is inexact.
fn zeros_only(digits: &[u8]) -> Result<(), NumericError> {
    match digits.iter().find(|&&c| c != b'0') {
        None => Ok(()),
        Some(c) if c.is_ascii_digit() => Err(NumericError::Inexact),
        Some(_) => Err(NumericError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, negative: bool, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(if negative { 0x4000u16 } else { 0 }.to_be_bytes());
        v.extend(0u16.to_be_bytes()); // dscale is ignored on purpose
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_groups_and_scale() {
        // 12345.678 = [1, 2345, 6780] weight 1
        assert_eq!(
            numeric_to_i128(&numeric(1, false, &[1, 2345, 6780]), 4),
            Ok(123_456_780)
        );
        // -0.0001 = [1] weight -1
        assert_eq!(numeric_to_i128(&numeric(-1, true, &[1]), 4), Ok(-1));
        // 10^8 = [1] weight 2 (trailing zero groups stripped)
        assert_eq!(
            numeric_to_i128(&numeric(2, false, &[1]), 2),
            Ok(10_000_000_000)
        );
        // zero has no groups
        assert_eq!(numeric_to_i128(&numeric(0, false, &[]), 10), Ok(0));
        // more fractional digits than the scale
        assert_eq!(
            numeric_to_i128(&numeric(-1, false, &[5]), 2),
            Err(NumericError::Inexact)
        );
        let mut nan = numeric(0, false, &[]);
        nan[4..6].copy_from_slice(&0xC000u16.to_be_bytes());
        assert_eq!(numeric_to_i128(&nan, 2), Err(NumericError::NaN));
        // 38 digits whose last group carries trailing zeros beyond the scale:
        // -9999999999999999999999999999.9999999999 at scale 10.
        let mut groups = vec![9999i16; 10];
        groups[9] = 9900;
        assert_eq!(
            numeric_to_i128(&numeric(6, true, &groups), 10),
            Ok(-99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
    }

    proptest::proptest! {
        /// Up to four groups, zero groups anywhere and none at all
        /// included, the short path gives what the general one gives: the
        /// same value, or the same error.
        #[test]
        fn short_groups_agree_with_the_general_path(
            digits in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(0i16), 0i16..10_000],
                0..=4,
            ),
            weight in -12i32..12,
            scale in -8i8..=38,
        ) {
            let groups: Vec<u8> = digits.iter().flat_map(|d| d.to_be_bytes()).collect();
            proptest::prop_assert_eq!(
                short_groups(&groups, weight, scale),
                long_groups(&groups, weight, scale)
            );
        }
    }

    #[test]
    fn short_groups_edges() {
        // 9999 9999 9999 9999 · 10^22 fits i128; · 10^23 does not.
        let nines = numeric(3, false, &[9999; 4]);
        assert_eq!(
            numeric_to_i128(&nines, 22),
            Ok(9_999_999_999_999_999 * 10i128.pow(22))
        );
        assert_eq!(numeric_to_i128(&nines, 23), Err(NumericError::Overflow));
        // A digit group out of range, on the short path and the long one.
        for n in [2, 6] {
            let mut groups = vec![1i16; n];
            groups[n - 1] = 10_000;
            assert_eq!(
                numeric_to_i128(&numeric(0, false, &groups), 30),
                Err(NumericError::Malformed)
            );
        }
        // 0.0000 0000 0000 0000 0001 (a group 20 digits down) at scale 19.
        assert_eq!(
            numeric_to_i128(&numeric(-5, false, &[1]), 19),
            Err(NumericError::Inexact)
        );
        assert_eq!(numeric_to_i128(&numeric(-5, false, &[1]), 20), Ok(1));
        // Zero (no groups) in a NUMERIC(38, 35…38) column, and 1 at scale 37.
        for scale in [35, 37, 38] {
            assert_eq!(numeric_to_i128(&numeric(0, false, &[]), scale), Ok(0));
        }
        assert_eq!(
            numeric_to_i128(&numeric(0, false, &[1]), 37),
            Ok(10i128.pow(37))
        );
    }

    #[test]
    fn redshift_unscaled_integers() {
        // 12.34 in NUMERIC(8,2) is the 8-byte integer 1234; read as
        // PostgreSQL's form it would be a numeric with no groups: zero.
        let v = 1234i64.to_be_bytes();
        assert_eq!(unscaled_to_i128(&v), Ok(1234));
        assert_eq!(numeric_to_i128(&v, 2), Ok(0), "the silent zero");
        assert_eq!(unscaled_to_i128(&(-5i64).to_be_bytes()), Ok(-5));
        let big = -99_999_999_999_999_999_999_999_999_999_999_999_999i128;
        assert_eq!(unscaled_to_i128(&big.to_be_bytes()), Ok(big));
        // zero high bytes in a 16-byte value
        assert_eq!(unscaled_to_i128(&7i128.to_be_bytes()), Ok(7));
        assert_eq!(unscaled_to_i128(&[0; 12]), Err(NumericError::Malformed));
    }

    /// Byte-exact values from the Redshift Python driver's unit fixtures
    /// (its `numeric_in_binary` cases): bytes, scale, the decimal they are.
    #[test]
    fn redshift_driver_fixtures() {
        let cases: [(&[u8], i8, &str); 8] = [
            (
                &[0x01, 0xb6, 0x9b, 0x4b, 0xac, 0xd0, 0x5f, 0x15],
                0,
                "123456789123456789",
            ),
            (
                &[0xff, 0xff, 0xfe, 0xe0, 0x8e, 0x04, 0xf7, 0xc8],
                8,
                "-12345.67891",
            ),
            (&[0, 0, 0, 0, 0, 0, 0x30, 0x39], 8, "0.00012345"),
            (
                &[0, 0, 0x01, 0x1f, 0x71, 0xfb, 0x08, 0x38],
                8,
                "12345.67891",
            ),
            (
                &[
                    0x09, 0x49, 0xb0, 0xf7, 0x13, 0xe9, 0x18, 0x5f, 0x7e, 0x8f, 0x1a, 0x99, 0xa9,
                    0x9b, 0xb6, 0xdb,
                ],
                0,
                "12345678912345678991234567891234567899",
            ),
            (
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x49, 0x96, 0x02, 0xd3],
                5,
                "12345.67891",
            ),
            (
                &[
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xd5, 0xfa, 0x0e,
                    0, 0, 0,
                ],
                10,
                "-32768",
            ),
            (
                &[
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbe,
                    0x6f, 0x55, 0,
                ],
                10,
                "-0.11",
            ),
        ];
        for (bytes, scale, text) in cases {
            assert_eq!(
                unscaled_to_i128(bytes),
                text_to_i128(text.as_bytes(), scale),
                "{text} at scale {scale}"
            );
        }
    }

    #[test]
    fn decimal_text() {
        assert_eq!(text_to_i128(b"12.34", 2), Ok(1234));
        assert_eq!(text_to_i128(b"-0.0001", 4), Ok(-1));
        assert_eq!(text_to_i128(b"5", 3), Ok(5000));
        assert_eq!(text_to_i128(b"1.50", 1), Ok(15));
        assert_eq!(text_to_i128(b"1.55", 1), Err(NumericError::Inexact));
        assert_eq!(text_to_i128(b"1200", -2), Ok(12));
        assert_eq!(text_to_i128(b"1250", -2), Err(NumericError::Inexact));
        assert_eq!(text_to_i128(b"NaN", 2), Err(NumericError::NaN));
        assert_eq!(text_to_i128(b"1e5", 2), Err(NumericError::Malformed));
        assert_eq!(text_to_i128(b"", 2), Err(NumericError::Malformed));
        assert_eq!(
            text_to_i128(b"-9999999999999999999999999999.9999999999", 10),
            Ok(-99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
    }
}
