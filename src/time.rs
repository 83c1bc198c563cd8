//! Clock helpers at the edge: `now`, ISO 8601 in and out. The pure core
//! never calls these; the orchestrator passes times into it.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::plan::Millis;

/// The wall clock, read once per process.
fn wall_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, on a monotonic clock: the wall clock
/// as it was when the process first asked, plus the monotonic time since.
/// So the durations the core measures (stall, timeouts, back-offs, grace
/// periods) never jump with an NTP step or a changed clock; times journaled
/// by an earlier process (a resumed run) stay comparable, to the precision
/// of the two processes' wall clocks.
pub fn now_ms() -> Millis {
    static ANCHOR: OnceLock<(Millis, Instant)> = OnceLock::new();
    let (wall, mono) = ANCHOR.get_or_init(|| (wall_ms(), Instant::now()));
    wall + mono.elapsed().as_millis() as Millis
}

// Days from 1970-01-01 to y-m-d (proleptic Gregorian), Howard Hinnant's algorithm.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-11-25T21:30:05Z` (seconds precision, UTC).
pub fn iso(ms: Millis) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses Nova's and Keystone's timestamps: `2026-11-25T21:30:05`,
/// with optional fraction and `Z` or `±hh:mm` (no zone means UTC, as Nova means it).
pub fn parse_iso(s: &str) -> Option<Millis> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', ' '])?;
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: i64 = dp.next()?.parse().ok()?;
    let d: i64 = dp.next()?.parse().ok()?;
    let (time, offset_s) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']).filter(|i| *i >= 8) {
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let off = &off[1..];
        let (oh, om) = off.split_once(':').unwrap_or((off, "0"));
        (
            t,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    } else {
        (rest, 0)
    };
    let mut tp = time.split(':');
    let h: i64 = tp.next()?.parse().ok()?;
    let mi: i64 = tp.next()?.parse().ok()?;
    let sec_s = tp.next().unwrap_or("0");
    let (whole, frac) = sec_s.split_once('.').unwrap_or((sec_s, ""));
    let sec: i64 = whole.parse().ok()?;
    let ms_frac: i64 = if frac.is_empty() {
        0
    } else {
        let f: String = frac.chars().chain("000".chars()).take(3).collect();
        f.parse().ok()?
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let total = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    (total >= 0).then(|| (total * 1000 + ms_frac) as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_monotonic_and_anchored_to_the_wall() {
        let a = now_ms();
        let b = now_ms();
        assert!(b >= a);
        assert!(wall_ms().abs_diff(b) < 5_000);
    }

    #[test]
    fn round_trip_and_formats() {
        let t = parse_iso("2026-11-25T21:30:05Z").unwrap();
        assert_eq!(iso(t), "2026-11-25T21:30:05Z");
        assert_eq!(parse_iso("2026-11-25T21:30:05.123456").unwrap(), t + 123);
        assert_eq!(parse_iso("2026-11-25T22:30:05+01:00").unwrap(), t);
        assert_eq!(parse_iso("2026-11-25 21:30:05").unwrap(), t);
        assert_eq!(parse_iso("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
        assert!(parse_iso("yesterday").is_none());
        assert!(parse_iso("2026-13-01T00:00:00").is_none());
    }
}
