//! Calendar arithmetic shared by every stage: day counts and microseconds
//! since the Unix epoch to and from ISO 8601 text (proleptic Gregorian, UTC).

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + (m <= 2) as i64;
    (y, m, d)
}

fn fmt_year(y: i64) -> String {
    if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else {
        format!("{y:+05}")
    }
}

/// `YYYY-MM-DD` of a day count since the Unix epoch.
pub fn date_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{}-{m:02}-{d:02}", fmt_year(y))
}

/// `HH:MM:SS.ffffff` of microseconds since midnight.
pub fn time_string(micros: i64) -> String {
    let s = micros.div_euclid(1_000_000);
    let f = micros.rem_euclid(1_000_000);
    format!("{:02}:{:02}:{:02}.{f:06}", s / 3600, (s / 60) % 60, s % 60)
}

/// ISO 8601 with microseconds; `Z` appended when the value is known to be UTC.
pub fn timestamp_string(micros: i64, utc: bool) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let rest = micros.rem_euclid(86_400_000_000);
    format!(
        "{}T{}{}",
        date_string(days),
        time_string(rest),
        if utc { "Z" } else { "" }
    )
}

pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn parse_date(t: &str) -> Option<i64> {
    let mut it = t.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.get(..2)?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

/// `YYYY-MM-DD[ HH:MM:SS[.ffffff]][+HH[:MM]]` → microseconds since the epoch (UTC).
pub fn parse_timestamp(t: &str) -> Option<i64> {
    let t = t.replace('T', " ");
    let (date, rest) = t.split_once(' ').unwrap_or((t.as_str(), "00:00:00"));
    let days = parse_date(date)?;
    // A zone suffix: +HH, -HH, +HH:MM.
    let (time, offset) = match rest.rfind(['+', '-']) {
        Some(i) => {
            let (time, zone) = rest.split_at(i);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let mut parts = zone[1..].split(':');
            let h: i64 = parts.next()?.parse().ok()?;
            let m: i64 = parts.next().map_or(Some(0), |m| m.parse().ok())?;
            (time, sign * (h * 3600 + m * 60))
        }
        None => (rest, 0),
    };
    let mut parts = time.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec = parts.next().unwrap_or("0");
    let (s, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: i64 = s.parse().ok()?;
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{:0<6}", &frac[..frac.len().min(6)]).parse().ok()?
    };
    Some((days * 86_400 + h * 3600 + m * 60 + s - offset) * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(-1), "1969-12-31");
        assert_eq!(date_string(19_753), "2024-01-31");
        assert_eq!(timestamp_string(-1, true), "1969-12-31T23:59:59.999999Z");
        assert_eq!(time_string(3_723_000_004), "01:02:03.000004");
    }

    #[test]
    fn text_parses_back() {
        assert_eq!(parse_date("2024-01-31"), Some(19_753));
        assert_eq!(parse_timestamp("1969-12-31 23:59:59.999999"), Some(-1));
        assert_eq!(parse_timestamp("1970-01-01 01:00:00+01"), Some(0));
    }
}
