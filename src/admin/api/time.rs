//! Times in API parameters: microseconds since the epoch, or RFC 3339
//! (`2025-01-31T12:00:00Z`, fractions and offsets allowed; a bare date is
//! its midnight UTC), read with a proleptic Gregorian calendar of our own
//! (no time crate).
//!
//! Untrusted text: never panics (fuzzed in `fuzz/fuzz_targets/parsers.rs`).

/// Microseconds since the epoch from digits, or from RFC 3339
/// (`2025-01-31T12:00:00Z`, fractions and offsets allowed; a bare date is
/// its midnight UTC).
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        d.iter().try_fold(0i64, |n, &c| {
            n.checked_mul(10)?.checked_add(i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return days.checked_mul(86_400_000_000);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..6 {
            micros *= 10;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hour * 3600 + min * 60 + sec - offset)?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_rfc3339_and_micros() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1700000000000000"), Some(1_700_000_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000_000));
        assert_eq!(
            parse_time("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096_789_000)
        );
        assert_eq!(
            parse_time("2024-02-29T14:34:56.789123456+02:00"),
            Some(1_709_210_096_789_123)
        );
        assert_eq!(
            parse_time("2024-02-29t12:34:56-00:30"),
            Some(1_709_211_896_000_000)
        );
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Some(-1_000_000));
        for bad in [
            "",
            "yesterday",
            "2023-02-29",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0200",
            "2024-01-01T00:00:00Zjunk",
            "99999999999999999999",
            "-5",
            "2024-01-01T00:00:00+24:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    /// (year, month, day) of days since 1970-01-01 (the inverse of
    /// `days_from_civil`).
    fn civil(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    proptest::proptest! {
        /// Any instant from year 1 to 9999, written in RFC 3339 with any
        /// offset, parses back to itself.
        #[test]
        fn rfc3339_round_trips(
            us in -62_135_596_800_000_000i64..253_402_214_400_000_000i64,
            offset_min in -(23 * 60 + 59)..=(23 * 60 + 59i64),
        ) {
            let local = us.div_euclid(1_000_000) + offset_min * 60;
            let (y, m, d) = civil(local.div_euclid(86_400));
            proptest::prop_assume!((1..=9999).contains(&y));
            let rem = local.rem_euclid(86_400);
            let sign = if offset_min < 0 { '-' } else { '+' };
            let text = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}{sign}{:02}:{:02}",
                rem / 3600,
                rem / 60 % 60,
                rem % 60,
                us.rem_euclid(1_000_000),
                offset_min.abs() / 60,
                offset_min.abs() % 60
            );
            proptest::prop_assert_eq!(parse_time(&text), Some(us), "{}", text);
        }
    }
}
