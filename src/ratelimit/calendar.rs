//! Calendar windows for quotas: an hour, a day, a week (from Monday) or a
//! month, starting at the boundary in the configured time zone, through
//! `jiff` and its bundled time-zone database (so daylight-saving days are 23
//! or 25 hours long, as they are for the people on the plan).

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, ZonedDateTime as Zoned};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    /// `1h`, `1d`, `1w` (7d) or `1month` (humantime's 30.44 days).
    pub fn from_duration(per: std::time::Duration) -> Option<Period> {
        match per.as_secs() {
            3600 => Some(Period::Hour),
            86_400 => Some(Period::Day),
            604_800 => Some(Period::Week),
            2_630_016 => Some(Period::Month),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The window around `now_ms`, as milliseconds since the epoch.
    pub fn bounds(self, now_ms: u64, zone: &TimeZone) -> (u64, u64) {
        let fallback = {
            let len = self.longest_ms();
            (now_ms - now_ms % len, now_ms - now_ms % len + len)
        };
        let Ok(now) = Timestamp::from_millisecond(now_ms as i64) else {
            return fallback;
        };
        let zoned = now.to_zoned_datetime(zone.clone());
        let start = match self.start(&zoned) {
            Ok(start) => start,
            Err(_) => return fallback,
        };
        let span = match self {
            Period::Hour => 1.hour(),
            Period::Day => 1.day(),
            Period::Week => 1.week(),
            Period::Month => 1.month(),
        };
        let Ok(end) = start.checked_add(span) else {
            return fallback;
        };
        let ms = |z: &Zoned| z.timestamp().as_millisecond().max(0) as u64;
        (ms(&start), ms(&end))
    }

    fn start(self, now: &Zoned) -> Result<Zoned, jiff::Error> {
        match self {
            Period::Hour => now.with().minute(0).second(0).subsec_nanosecond(0).build(),
            Period::Day => now.start_of_day(),
            Period::Week => {
                let back = i64::from(now.weekday().to_monday_zero_offset());
                now.start_of_day()?.checked_sub(back.days())
            }
            Period::Month => now.first_of_month()?.start_of_day(),
        }
    }

    /// The longest the window can be, for expiring idle state.
    pub fn longest_ms(self) -> u64 {
        match self {
            Period::Hour => 3_600_000,
            Period::Day => 25 * 3_600_000,
            Period::Week => 7 * 25 * 3_600_000,
            Period::Month => 31 * 25 * 3_600_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    #[test]
    fn days_start_at_local_midnight_and_months_on_the_first() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 23:30 UTC on 24 Nov is 00:30 on 25 Nov in Berlin.
        let (start, end) = Period::Day.bounds(ms("2026-11-24T23:30:00Z"), &berlin);
        assert_eq!((start, end), (ms("2026-11-24T23:00:00Z"), ms("2026-11-25T23:00:00Z")));
        let (start, end) = Period::Month.bounds(ms("2026-02-14T12:00:00Z"), &TimeZone::UTC);
        assert_eq!((start, end), (ms("2026-02-01T00:00:00Z"), ms("2026-03-01T00:00:00Z")));
        // Tuesday 24 Nov 2026: the week began on Monday the 23rd.
        let (start, _) = Period::Week.bounds(ms("2026-11-24T10:00:00Z"), &TimeZone::UTC);
        assert_eq!(start, ms("2026-11-23T00:00:00Z"));
    }

    #[test]
    fn a_daylight_saving_day_is_23_hours_long() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let (start, end) = Period::Day.bounds(ms("2026-03-29T12:00:00Z"), &berlin);
        assert_eq!(end - start, 23 * 3_600_000);
    }
}
