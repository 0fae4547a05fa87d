//! Epoch seconds to and from RFC 3339 UTC, the snapshot folder name `YYYY-MM-DDTHH:MM:SSZ`
//! (spec §1.5), and the user's `--backup-time` forms. No time zone database needed.

use crate::util::error::{Error, Result};

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of epoch seconds; `None` outside years 0..=9999.
pub fn format_utc(epoch: i64) -> Option<String> {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parse the snapshot folder name exactly (20 characters, literal `Z`).
pub fn parse_snapshot_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[19] != b'Z' {
        return None;
    }
    parse_datetime(&b[..19]).map(|(t, _)| t)
}

/// `YYYY-MM-DDTHH:MM:SS`, validated; returns epoch (as UTC) and the rest of the input.
fn parse_datetime(b: &[u8]) -> Option<(i64, &[u8])> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let y = digits(&b[0..4])? as i64;
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    let h = digits(&b[11..13])?;
    let mi = digits(&b[14..16])?;
    let s = digits(&b[17..19])?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60
    {
        return None;
    }
    let t = days_from_civil(y, mo, d) * 86_400 + (h * 3600 + mi * 60 + s) as i64;
    Some((t, &b[19..]))
}

/// An RFC 3339 time (`Z` or `±HH:MM` offset, optional fraction, which is dropped) or
/// plain epoch seconds.
pub fn parse_time_arg(s: &str) -> Result<i64> {
    let bad = || {
        Error::invalid(
            format!("'{s}'"),
            "not a time: use RFC 3339 (2024-05-02T08:11:33Z) or epoch seconds",
        )
    };
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let (t, mut rest) = parse_datetime(s.as_bytes()).ok_or_else(bad)?;
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(bad());
        }
        rest = &r[n..];
    }
    match rest {
        b"Z" | b"z" => Ok(t),
        [sign @ (b'+' | b'-'), hh1, hh2, b':', mm1, mm2] => {
            let h = digits(&[*hh1, *hh2]).ok_or_else(bad)? as i64;
            let m = digits(&[*mm1, *mm2]).ok_or_else(bad)? as i64;
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let off = h * 3600 + m * 60;
            Ok(if *sign == b'+' { t - off } else { t + off })
        }
        _ => Err(bad()),
    }
}

/// Now, in epoch seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_round_trip() {
        let t = parse_snapshot_time("2024-05-02T08:11:33Z").unwrap();
        assert_eq!(t, 1_714_637_493);
        assert_eq!(format_utc(t).unwrap(), "2024-05-02T08:11:33Z");
        assert_eq!(format_utc(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(parse_snapshot_time("2024-02-30T00:00:00Z"), None);
        assert_eq!(parse_snapshot_time("2024-05-02T08:11:33"), None);
        assert_eq!(parse_snapshot_time("2024-05-02T08:11:33+00:00"), None);
        for t in [-86_400 * 365 * 100, 951_782_400, 4_102_444_799] {
            assert_eq!(parse_snapshot_time(&format_utc(t).unwrap()), Some(t));
        }
    }

    #[test]
    fn time_arguments() {
        assert_eq!(parse_time_arg("1714637493").unwrap(), 1_714_637_493);
        assert_eq!(
            parse_time_arg("2024-05-02T10:11:33+02:00").unwrap(),
            1_714_637_493
        );
        assert_eq!(
            parse_time_arg("2024-05-02T08:11:33.123Z").unwrap(),
            1_714_637_493
        );
        assert!(parse_time_arg("yesterday").is_err());
        assert!(parse_time_arg("2024-05-02T08:11:33+2").is_err());
    }
}
