//! Calendar arithmetic on UTC unix seconds.
//!
//! Why our own: the ledger needs exactly three things (civil date <-> days, adding months with the day clamped
//! to the month's end, RFC 3339 in and out), and a date crate would cost more build time than these lines.
//! Every instant in the ledger is a [`UnixTime`]: seconds since 1970-01-01T00:00:00Z.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// An instant: seconds since the unix epoch, UTC. An integer on the wire and in the database; its own type in
/// the code, so an instant cannot be passed where credits or a duration are meant. `t + secs` and `t - secs`
/// move it; `t - u` is the seconds between. It has no `Display`: write [`UnixTime::secs`] (in ids and causes)
/// or [`format_rfc3339`] (for people), whichever is meant.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(i64);

impl UnixTime {
    pub const MIN: UnixTime = UnixTime(i64::MIN);
    pub const MAX: UnixTime = UnixTime(i64::MAX);
    pub const EPOCH: UnixTime = UnixTime(0);

    pub const fn from_secs(secs: i64) -> UnixTime {
        UnixTime(secs)
    }

    pub const fn secs(self) -> i64 {
        self.0
    }
}

impl Add<i64> for UnixTime {
    type Output = UnixTime;
    fn add(self, secs: i64) -> UnixTime {
        UnixTime(self.0 + secs)
    }
}

impl AddAssign<i64> for UnixTime {
    fn add_assign(&mut self, secs: i64) {
        self.0 += secs;
    }
}

impl Sub<i64> for UnixTime {
    type Output = UnixTime;
    fn sub(self, secs: i64) -> UnixTime {
        UnixTime(self.0 - secs)
    }
}

impl Sub for UnixTime {
    type Output = i64;
    fn sub(self, other: UnixTime) -> i64 {
        self.0 - other.0
    }
}

impl From<UnixTime> for i64 {
    fn from(t: UnixTime) -> i64 {
        t.0
    }
}

impl fmt::Debug for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const DAY: i64 = 86_400;

/// 9999-12-31T23:59:59Z: no instant the worker accepts lies beyond it.
pub const MAX_TS: UnixTime = UnixTime(253_402_300_799);

/// Instants a Stripe event or command may carry: 2000-01-01 to 2200-01-01. Anything else is refused as
/// malformed, so no cycle loop walks from the year -300 million.
pub fn plausible(t: UnixTime) -> bool {
    (946_684_800..7_258_118_400).contains(&t.0)
}

/// The wall clock, for the edges (HTTP, CLI, tick). The rules never call it: they get time as an argument.
pub fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `t` moved by `months` calendar months, keeping its time of day, with the day clamped to the target
/// month's length (Jan 31 + 1 month = Feb 28 or 29).
pub fn add_months(t: UnixTime, months: i64) -> UnixTime {
    let t = t.0;
    let days = t.div_euclid(DAY);
    let secs = t.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m as i64 - 1) + months;
    let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
    let nd = d.min(days_in_month(ny, nm));
    UnixTime(days_from_civil(ny, nm, nd) * DAY + secs)
}

/// Format as RFC 3339 in UTC with a `Z`, to the second.
pub fn format_rfc3339(t: UnixTime) -> String {
    let t = t.0;
    let (y, m, d) = civil_from_days(t.div_euclid(DAY));
    let s = t.rem_euclid(DAY);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// Parse RFC 3339 (`2026-01-31T12:00:00Z`, an offset such as `+02:00`, optional fraction, which is dropped),
/// a plain date (`2026-01-31`, midnight UTC), or unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<UnixTime> {
    parse_secs(s).map(UnixTime)
}

fn parse_secs(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        // Unix seconds, up to the end of year 9999 like the dated forms.
        return s.parse().ok().filter(|t| *t <= MAX_TS.0);
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) { part.parse().ok() } else { None }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let date = days_from_civil(y, m, d) * DAY;
    if b.len() == 10 {
        return Some(date);
    }
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let r = rest.as_bytes();
    let offset = match rest {
        "Z" | "z" => 0,
        _ if r.len() == 6 && (r[0] == b'+' || r[0] == b'-') && r[3] == b':' => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if r[0] == b'-' { -o } else { o }
        }
        _ => return None,
    };
    Some(date + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> UnixTime {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for z in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn month_end_clamping() {
        assert_eq!(format_rfc3339(add_months(at("2025-01-31T10:00:00Z"), 1)), "2025-02-28T10:00:00Z");
        assert_eq!(format_rfc3339(add_months(at("2024-01-31T10:00:00Z"), 1)), "2024-02-29T10:00:00Z");
        assert_eq!(format_rfc3339(add_months(at("2025-01-31T10:00:00Z"), 2)), "2025-03-31T10:00:00Z");
        assert_eq!(format_rfc3339(add_months(at("2025-12-15T00:00:00Z"), 1)), "2026-01-15T00:00:00Z");
        assert_eq!(format_rfc3339(add_months(at("2025-03-31T00:00:00Z"), -1)), "2025-02-28T00:00:00Z");
    }

    #[test]
    fn parses_and_formats() {
        assert_eq!(at("1970-01-01T00:00:00Z"), UnixTime::EPOCH);
        assert_eq!(at("2026-11-25T19:29:17.123Z"), at("2026-11-25T19:29:17Z"));
        assert_eq!(at("2026-11-25T21:29:17+02:00"), at("2026-11-25T19:29:17Z"));
        assert_eq!(at("2026-11-25"), at("2026-11-25T00:00:00Z"));
        assert_eq!(at("1700000000"), UnixTime::from_secs(1_700_000_000));
        assert_eq!(format_rfc3339(UnixTime::from_secs(1_700_000_000)), "2023-11-14T22:13:20Z");
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "2026-01-01T25:00:00Z",
            "yesterday",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0é00",
            "2026-01-01T00:00:00é",
            "é026-01-01",
            "99999999999999999",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
