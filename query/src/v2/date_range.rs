//! v2's `date_range` resolved in the site's time zone: the ranges v1 also has as v1 resolves
//! them (so both answer the same question alike), the others as whole local days, and
//! date-times as the exact seconds between them.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use super::bad;
use super::request::DateRange;
use crate::error::ApiError;
use crate::params::{Interval, Period};
use crate::period::{self, Range};

/// The range of `range` for a site in `tz` keeping events `retention_days`, relative to
/// `date` (default: today there), and v1's period of the same kind (a comparison with the
/// previous period reads it: the month before a month, as in v1).
pub fn resolve(
    range: &DateRange,
    date: Option<Date>,
    tz: &TimeZone,
    retention_days: u32,
    now: Timestamp,
) -> Result<(Period, Range), ApiError> {
    let today = date.unwrap_or_else(|| now.to_zoned(tz.clone()).date());
    let days_back =
        |n: i64| -> Result<Period, ApiError> { Ok(Period::Custom(add_days(today, 1 - n)?, today)) };
    let period = match range {
        DateRange::Relative(name) => match *name {
            "day" => Period::Day,
            "7d" => Period::SevenDays,
            "30d" => Period::ThirtyDays,
            "month" => Period::Month,
            "6mo" => Period::SixMonths,
            "12mo" => Period::TwelveMonths,
            "28d" => days_back(28)?,
            "91d" => days_back(91)?,
            "year" => Period::Custom(today.first_of_year(), today.last_of_year()),
            // Everything the site still keeps.
            _ => days_back(i64::from(retention_days.max(1)))?,
        },
        DateRange::Dates(first, last) => Period::Custom(*first, *last),
        DateRange::Times(from, to) => {
            let range = times(from, to, tz)?;
            return Ok((Period::Custom(range.first, range.last), range));
        }
    };
    let range = period::resolve(period, Some(today), tz, now).map_err(as_date_range)?;
    Ok((period, range))
}

/// `[from, to]`, both ISO 8601 date-times, `to` inclusive (to the second, as Plausible's
/// `…T15:59:59`); without an offset, in the site's time zone.
fn times(from: &str, to: &str, tz: &TimeZone) -> Result<Range, ApiError> {
    let (start, last) = (instant(from, tz, 0)?, instant(to, tz, 1)?);
    let end = last + 1;
    if start >= end {
        return Err(bad(
            "date_range",
            "#/date_range: the first date-time is after the second",
        ));
    }
    let local = |t: i64| {
        Timestamp::from_second(t)
            .map(|t| t.to_zoned(tz.clone()).date())
            .map_err(|_| bad("date_range", "#/date_range: out of range"))
    };
    Ok(Range {
        start,
        end,
        first: local(start)?,
        last: local(last)?,
        realtime: false,
    })
}

fn instant(text: &str, tz: &TimeZone, index: usize) -> Result<i64, ApiError> {
    let invalid = || {
        bad(
            "date_range",
            format!(
                "#/date_range/{index}: {:?} is neither a date YYYY-MM-DD nor an ISO 8601 date-time",
                crate::params::truncate(text)
            ),
        )
    };
    let seconds = match text.parse::<Timestamp>() {
        Ok(t) => t.as_second(),
        Err(_) => text
            .replace(' ', "T")
            .parse::<DateTime>()
            .map_err(|_| invalid())?
            .to_zoned(tz.clone())
            .map_err(|_| invalid())?
            .timestamp()
            .as_second(),
    };
    // ClickHouse's DateTime holds 1970 to 2105.
    if !(0..=4_102_444_800).contains(&seconds) {
        return Err(bad(
            "date_range",
            format!("#/date_range/{index}: dates are between 1970 and 2100"),
        ));
    }
    Ok(seconds)
}

fn add_days(date: Date, n: i64) -> Result<Date, ApiError> {
    date.checked_add(n.days())
        .map_err(|_| bad("date_range", "#/date_range: out of range"))
}

/// The errors of `period` name `date`; here the field is `date_range`.
fn as_date_range(error: ApiError) -> ApiError {
    match error {
        ApiError::BadParam { message, .. } => bad("date_range", format!("#/date_range: {message}")),
        other => other,
    }
}

/// The interval of the plain `time` dimension: hours for a day at most, days for up to
/// about a month and a half, months beyond.
pub fn auto_interval(range: &Range) -> Interval {
    let days = range.first.until(range.last).map_or(0, |s| s.get_days()) + 1;
    match days {
        ..=1 => Interval::Hour,
        2..=45 => Interval::Date,
        _ => Interval::Month,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn relative_ranges_count_back_from_the_reference_day() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let now = Timestamp::UNIX_EPOCH;
        let on = |name: &'static str| {
            let (_, r) = resolve(
                &DateRange::Relative(name),
                Some(date("2026-03-31")),
                &tz,
                180,
                now,
            )
            .unwrap();
            (r.first.to_string(), r.last.to_string())
        };
        assert_eq!(on("day"), ("2026-03-31".into(), "2026-03-31".into()));
        assert_eq!(on("7d"), ("2026-03-25".into(), "2026-03-31".into()));
        assert_eq!(on("28d"), ("2026-03-04".into(), "2026-03-31".into()));
        assert_eq!(on("91d"), ("2025-12-31".into(), "2026-03-31".into()));
        assert_eq!(on("year"), ("2026-01-01".into(), "2026-12-31".into()));
        assert_eq!(on("all"), ("2025-10-03".into(), "2026-03-31".into()));
        assert_eq!(on("month"), ("2026-03-01".into(), "2026-03-31".into()));
    }

    #[test]
    fn date_times_are_exact_and_the_second_inclusive() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let r = times(
            "2026-03-29T01:00:00+01:00",
            "2026-03-29T03:59:59+02:00",
            &tz,
        )
        .unwrap();
        // 00:00 to 02:00 UTC: two hours across the DST change.
        assert_eq!(r.end - r.start, 2 * 3600);
        let local = times("2026-03-28 10:00:00", "2026-03-28 10:59:59", &tz).unwrap();
        assert_eq!(local.end - local.start, 3600);
        assert_eq!(
            local.start,
            "2026-03-28T09:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_second()
        );
        assert!(times("2026-03-29T05:00:00Z", "2026-03-29T04:00:00Z", &tz).is_err());
        assert!(times("yesterday", "2026-03-29T04:00:00Z", &tz).is_err());
    }
}
