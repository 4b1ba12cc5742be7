//! INTERVAL values as ISO 8601 durations.
//!
//! PostgreSQL sends an interval as microseconds, days and months (16 bytes);
//! Redshift as microseconds and months (12 bytes: it keeps no days field,
//! a day is 24 hours), and its `INTERVAL YEAR TO MONTH` / `DAY TO SECOND`
//! as months alone or microseconds alone. All become the same text: days
//! are carried out of the microseconds (24 hours each) so that both servers
//! give the same document for the same value, and each component keeps its
//! own sign (`P1M-1D`, as PostgreSQL allows mixed signs).

use std::fmt::Write;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Write `months`, `days`, `micros` as an ISO 8601 duration (`P1Y2M3DT4H5M6.5S`).
pub fn write_iso8601(out: &mut impl Write, months: i32, days: i32, micros: i64) {
    let days = days as i64 + micros / MICROS_PER_DAY;
    let micros = micros % MICROS_PER_DAY;
    let _ = out.write_char('P');
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        let _ = write!(out, "{years}Y");
    }
    if months != 0 {
        let _ = write!(out, "{months}M");
    }
    if days != 0 {
        let _ = write!(out, "{days}D");
    }
    if micros == 0 {
        if years == 0 && months == 0 && days == 0 {
            let _ = out.write_str("T0S");
        }
        return;
    }
    let _ = out.write_char('T');
    let hours = micros / 3_600_000_000;
    let minutes = micros / 60_000_000 % 60;
    let seconds = micros % 60_000_000;
    if hours != 0 {
        let _ = write!(out, "{hours}H");
    }
    if minutes != 0 {
        let _ = write!(out, "{minutes}M");
    }
    if seconds != 0 {
        let (whole, frac) = (seconds / 1_000_000, (seconds % 1_000_000).abs());
        let sign = if seconds < 0 && whole == 0 { "-" } else { "" };
        if frac == 0 {
            let _ = write!(out, "{sign}{whole}S");
        } else {
            let digits = format!("{frac:06}");
            let _ = write!(out, "{sign}{whole}.{}S", digits.trim_end_matches('0'));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(months: i32, days: i32, micros: i64) -> String {
        let mut s = String::new();
        write_iso8601(&mut s, months, days, micros);
        s
    }

    #[test]
    fn durations() {
        assert_eq!(iso(0, 0, 0), "PT0S");
        assert_eq!(iso(14, 3, 14_706_000_001), "P1Y2M3DT4H5M6.000001S");
        assert_eq!(iso(1, -1, 0), "P1M-1D");
        assert_eq!(iso(0, 0, -5_400_000_000), "PT-1H-30M");
        assert_eq!(iso(0, 0, -500_000), "PT-0.5S");
        // A Redshift day is 24 hours in the microseconds: same text as
        // PostgreSQL's days field.
        assert_eq!(
            iso(0, 0, 3 * MICROS_PER_DAY + 1_000_000),
            iso(0, 3, 1_000_000)
        );
        assert_eq!(iso(-12, 0, 0), "P-1Y");
    }
}
