//! Periods in a site's time zone: which UTC seconds a period covers, the period it is compared
//! with (the previous one, a year earlier, or custom dates), the labels of a timeseries'
//! buckets and which buckets of the two periods face each other, DST changes included.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::error::ApiError;
use crate::params::{Comparison, Interval, Period};

/// `[start, end)` in Unix seconds (UTC), the local dates it spans, and how to label buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub start: i64,
    pub end: i64,
    /// First and last local date (inclusive).
    pub first: Date,
    pub last: Date,
    /// Realtime: 30 minutes, not whole days.
    pub realtime: bool,
}

/// Most buckets a timeseries may have.
const MAX_BUCKETS: usize = 10_000;

/// The range a period covers for a site in `tz`, relative to `date` (default: today there).
pub fn resolve(
    period: Period,
    date: Option<Date>,
    tz: &TimeZone,
    now: Timestamp,
) -> Result<Range, ApiError> {
    let today = now.to_zoned(tz.clone()).date();
    let date = date.unwrap_or(today);
    let (first, last) = match period {
        Period::Realtime => {
            let end = now.as_second() + 1;
            return Ok(Range {
                start: end - 30 * 60,
                end,
                first: today,
                last: today,
                realtime: true,
            });
        }
        Period::Day => (date, date),
        Period::SevenDays => (add_days(date, -6)?, date),
        Period::ThirtyDays => (add_days(date, -29)?, date),
        Period::Month => (date.first_of_month(), date.last_of_month()),
        Period::SixMonths => (add_months(date.first_of_month(), -5)?, date.last_of_month()),
        Period::TwelveMonths => (
            add_months(date.first_of_month(), -11)?,
            date.last_of_month(),
        ),
        Period::Custom(from, to) => (from, to),
    };
    days(first, last, tz)
}

/// The period just before `range`, of the same kind: the previous calendar month(s) for
/// month periods, else as many days just before.
pub fn previous(period: Period, range: &Range, tz: &TimeZone) -> Result<Range, ApiError> {
    if range.realtime {
        let length = range.end - range.start;
        return Ok(Range {
            start: range.start - length,
            end: range.start,
            ..range.clone()
        });
    }
    let months = match period {
        Period::Month => Some(1),
        Period::SixMonths => Some(6),
        Period::TwelveMonths => Some(12),
        _ => None,
    };
    let (first, last) = match months {
        Some(n) => {
            let first = add_months(range.first, -n)?;
            (first, add_days(range.first, -1)?)
        }
        None => {
            let length = range
                .first
                .until(range.last)
                .map_err(date_error)?
                .get_days() as i64;
            let last = add_days(range.first, -1)?;
            (add_days(last, -length)?, last)
        }
    };
    days(first, last, tz)
}

/// The range `range` (of `period`) is compared with. A year earlier shifts both local dates by
/// a year (February 29 becomes February 28), so the comparison covers the same calendar days
/// and, around DST changes, the UTC hours those days had then.
pub fn compared(
    period: Period,
    comparison: Comparison,
    range: &Range,
    tz: &TimeZone,
) -> Result<Range, ApiError> {
    match comparison {
        Comparison::PreviousPeriod => previous(period, range, tz),
        Comparison::YearOverYear if range.realtime => Err(ApiError::bad(
            "comparison",
            "period=realtime compares with the previous 30 minutes only",
        )),
        Comparison::YearOverYear => {
            days(add_years(range.first, -1)?, add_years(range.last, -1)?, tz)
        }
        Comparison::Custom(from, to) => days(from, to, tz),
    }
}

/// Plausible's `match_day_of_week`: the `compared` range moved to start on the weekday
/// `current` starts on, at the nearest such day (not `current`'s own first day), its length
/// kept.
pub fn matching_day_of_week(
    compared: &Range,
    current: &Range,
    tz: &TimeZone,
) -> Result<Range, ApiError> {
    let want = current.first.weekday().to_monday_zero_offset() as i64;
    let have = compared.first.weekday().to_monday_zero_offset() as i64;
    let later = (want - have).rem_euclid(7);
    if later == 0 {
        return Ok(compared.clone());
    }
    let earlier = later - 7;
    // The nearest (ties cannot happen: 7 is odd), unless it is the current period's start.
    let (near, far) = if later < -earlier {
        (later, earlier)
    } else {
        (earlier, later)
    };
    let shift = if add_days(compared.first, near)? == current.first {
        far
    } else {
        near
    };
    days(
        add_days(compared.first, shift)?,
        add_days(compared.last, shift)?,
        tz,
    )
}

/// For each of a timeseries' buckets (`current`, its labels), the index of the bucket of the
/// comparison (`compared`) it faces, if any. Days, weeks and months face the one at the same
/// place (the n-th day of one period and the n-th of the other; the longer period's last
/// buckets face nothing). Hours face the same local hour of the same day of the period, so
/// that 03:00 on the day clocks go forward faces 03:00, not the 02:00 that day does not have.
/// Minutes (realtime) face the minute at the same place.
pub fn aligned(current: &[String], compared: &[String], interval: Interval) -> Vec<Option<usize>> {
    if interval != Interval::Hour {
        return (0..current.len())
            .map(|i| (i < compared.len()).then_some(i))
            .collect();
    }
    // (day of the period, local time of day) of each label `YYYY-MM-DD HH:00:00`.
    fn places(labels: &[String]) -> Vec<(usize, &str)> {
        let mut day = 0;
        labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                if i > 0 && labels[i - 1].get(..10) != label.get(..10) {
                    day += 1;
                }
                (day, label.get(11..).unwrap_or(""))
            })
            .collect()
    }
    let by_place: std::collections::HashMap<(usize, &str), usize> = places(compared)
        .into_iter()
        .enumerate()
        .map(|(i, place)| (place, i))
        .collect();
    places(current)
        .into_iter()
        .map(|place| by_place.get(&place).copied())
        .collect()
}

fn days(first: Date, last: Date, tz: &TimeZone) -> Result<Range, ApiError> {
    if first.year() < 1970 {
        return Err(ApiError::bad("date", "dates are between 1970 and 2100"));
    }
    let start = first
        .to_zoned(tz.clone())
        .map_err(date_error)?
        .timestamp()
        .as_second();
    let end = add_days(last, 1)?
        .to_zoned(tz.clone())
        .map_err(date_error)?
        .timestamp()
        .as_second();
    Ok(Range {
        start,
        end,
        first,
        last,
        realtime: false,
    })
}

fn add_days(date: Date, n: i64) -> Result<Date, ApiError> {
    date.checked_add(n.days()).map_err(date_error)
}

fn add_months(date: Date, n: i64) -> Result<Date, ApiError> {
    date.checked_add(n.months()).map_err(date_error)
}

fn add_years(date: Date, n: i64) -> Result<Date, ApiError> {
    // jiff clamps February 29 to February 28 in a year without it.
    date.checked_add(n.years()).map_err(date_error)
}

fn date_error(error: jiff::Error) -> ApiError {
    ApiError::bad("date", format!("date out of range: {error}"))
}

/// The format ClickHouse's `formatDateTime` and these labels share for sub-day buckets.
pub const HOUR_FORMAT: &str = "%Y-%m-%d %H:00:00";
pub const MINUTE_FORMAT: &str = "%Y-%m-%d %H:%M:00";

/// Every bucket label of a timeseries over `range`, in order, as the SQL labels them:
/// `2026-03-29 03:00:00` for hours (a DST day has 23 or 25 hours, the repeated hour once),
/// `2026-03-29` for dates, the Monday for weeks, the first day for months.
pub fn bucket_labels(
    range: &Range,
    interval: Interval,
    tz: &TimeZone,
) -> Result<Vec<String>, ApiError> {
    let mut labels: Vec<String> = Vec::new();
    let too_many = || {
        ApiError::bad(
            "interval",
            format!("more than {MAX_BUCKETS} buckets; choose a longer interval"),
        )
    };
    match interval {
        Interval::Minute | Interval::Hour => {
            // Quarter-hour steps find every local hour, even in zones with :30 and :45
            // offsets; a repeated (DST) hour is one bucket, as in the SQL.
            let (step, format) = if interval == Interval::Minute {
                (60, MINUTE_FORMAT)
            } else {
                (900, HOUR_FORMAT)
            };
            if (range.end - range.start) / step > 4 * MAX_BUCKETS as i64 {
                return Err(too_many());
            }
            let mut seen = std::collections::HashSet::new();
            let mut t = range.start - range.start.rem_euclid(60);
            while t < range.end {
                let zoned = Timestamp::from_second(t)
                    .map_err(date_error)?
                    .to_zoned(tz.clone());
                let label = zoned.strftime(format).to_string();
                if seen.insert(label.clone()) {
                    labels.push(label);
                }
                t += step;
            }
        }
        Interval::Date | Interval::Week | Interval::Month => {
            let mut d = match interval {
                Interval::Week => monday_of(range.first)?,
                Interval::Month => range.first.first_of_month(),
                _ => range.first,
            };
            while d <= range.last {
                labels.push(d.to_string());
                if labels.len() > MAX_BUCKETS {
                    return Err(too_many());
                }
                d = match interval {
                    Interval::Week => add_days(d, 7)?,
                    Interval::Month => add_months(d, 1)?,
                    _ => add_days(d, 1)?,
                };
            }
        }
    }
    Ok(labels)
}

fn monday_of(date: Date) -> Result<Date, ApiError> {
    let back = date.weekday().to_monday_zero_offset() as i64;
    add_days(date, -back)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    fn date(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn a_dst_day_has_23_or_25_hours() {
        let tz = berlin();
        let now = Timestamp::UNIX_EPOCH;
        let spring = resolve(Period::Day, Some(date("2026-03-29")), &tz, now).unwrap();
        assert_eq!(spring.end - spring.start, 23 * 3600);
        let labels = bucket_labels(&spring, Interval::Hour, &tz).unwrap();
        assert_eq!(labels.len(), 23);
        assert_eq!(labels[1], "2026-03-29 01:00:00");
        assert_eq!(labels[2], "2026-03-29 03:00:00");
        let autumn = resolve(Period::Day, Some(date("2026-10-25")), &tz, now).unwrap();
        assert_eq!(autumn.end - autumn.start, 25 * 3600);
        // The repeated 02:00 hour is one bucket.
        assert_eq!(
            bucket_labels(&autumn, Interval::Hour, &tz).unwrap().len(),
            24
        );
    }

    #[test]
    fn a_year_earlier_is_the_same_dates_february_29_becoming_28() {
        let tz = berlin();
        let now = Timestamp::UNIX_EPOCH;
        let yoy = |period, d: &str| {
            let r = resolve(period, Some(date(d)), &tz, now).unwrap();
            let c = compared(period, Comparison::YearOverYear, &r, &tz).unwrap();
            (c.first.to_string(), c.last.to_string())
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            yoy(Period::Day, "2028-02-29"),
            pair("2027-02-28", "2027-02-28")
        );
        assert_eq!(
            yoy(Period::Month, "2028-02-10"),
            pair("2027-02-01", "2027-02-28")
        );
        // A year after a leap month: 28 days compared with 29.
        assert_eq!(
            yoy(Period::Month, "2029-02-10"),
            pair("2028-02-01", "2028-02-28")
        );
        assert_eq!(
            yoy(Period::Month, "2026-03-31"),
            pair("2025-03-01", "2025-03-31")
        );
        assert_eq!(
            yoy(Period::SevenDays, "2028-03-03"),
            pair("2027-02-26", "2027-03-03")
        );
        assert_eq!(
            yoy(
                Period::Custom(date("2028-02-29"), date("2028-03-01")),
                "2028-01-01"
            ),
            pair("2027-02-28", "2027-03-01")
        );
        // 2026-03-29 (Berlin's spring change) had 23 hours; 2025-03-29 had 24, and
        // 2025-03-30, its own change, 23 again.
        let spring = resolve(Period::Day, Some(date("2026-03-29")), &tz, now).unwrap();
        let before = compared(Period::Day, Comparison::YearOverYear, &spring, &tz).unwrap();
        assert_eq!(before.end - before.start, 24 * 3600);
        assert_eq!(
            before.start,
            date("2025-03-29")
                .to_zoned(tz.clone())
                .unwrap()
                .timestamp()
                .as_second()
        );
        let realtime = resolve(Period::Realtime, None, &tz, now).unwrap();
        assert!(compared(Period::Realtime, Comparison::YearOverYear, &realtime, &tz).is_err());
    }

    #[test]
    fn custom_comparisons_and_the_previous_month_end() {
        let tz = berlin();
        let now = Timestamp::UNIX_EPOCH;
        let r = resolve(Period::Month, Some(date("2026-03-15")), &tz, now).unwrap();
        let c = compared(
            Period::Month,
            Comparison::Custom(date("2025-10-20"), date("2025-10-27")),
            &r,
            &tz,
        )
        .unwrap();
        assert_eq!((c.first, c.last), (date("2025-10-20"), date("2025-10-27")));
        // Eight days with the autumn change (2025-10-26): 8 * 24 + 1 hours.
        assert_eq!(c.end - c.start, (8 * 24 + 1) * 3600);
        // The month before March 31 is the whole of February, not March 3.
        let p = compared(Period::Month, Comparison::PreviousPeriod, &r, &tz).unwrap();
        assert_eq!((p.first, p.last), (date("2026-02-01"), date("2026-02-28")));
    }

    #[test]
    fn buckets_face_the_same_place_and_hours_the_same_local_hour() {
        let tz = berlin();
        let now = Timestamp::UNIX_EPOCH;
        let spring = resolve(Period::Day, Some(date("2026-03-29")), &tz, now).unwrap();
        let before = compared(Period::Day, Comparison::YearOverYear, &spring, &tz).unwrap();
        let a = bucket_labels(&spring, Interval::Hour, &tz).unwrap();
        let b = bucket_labels(&before, Interval::Hour, &tz).unwrap();
        assert_eq!((a.len(), b.len()), (23, 24));
        let faces = aligned(&a, &b, Interval::Hour);
        assert_eq!(b[faces[2].unwrap()], "2025-03-29 03:00:00");
        assert_eq!(a[2], "2026-03-29 03:00:00");
        assert_eq!(b[faces[22].unwrap()], "2025-03-29 23:00:00");
        // Days: the n-th of each; March has three days more than February.
        let march = resolve(Period::Month, Some(date("2026-03-01")), &tz, now).unwrap();
        let feb = compared(Period::Month, Comparison::PreviousPeriod, &march, &tz).unwrap();
        let a = bucket_labels(&march, Interval::Date, &tz).unwrap();
        let b = bucket_labels(&feb, Interval::Date, &tz).unwrap();
        let faces = aligned(&a, &b, Interval::Date);
        assert_eq!(b[faces[27].unwrap()], "2026-02-28");
        assert_eq!(&faces[28..], [None, None, None]);
    }

    #[test]
    fn periods_and_their_previous() {
        let tz = TimeZone::UTC;
        let now = Timestamp::UNIX_EPOCH;
        let d = Some(date("2026-03-15"));
        let r = resolve(Period::SevenDays, d, &tz, now).unwrap();
        assert_eq!((r.first, r.last), (date("2026-03-09"), date("2026-03-15")));
        let p = previous(Period::SevenDays, &r, &tz).unwrap();
        assert_eq!((p.first, p.last), (date("2026-03-02"), date("2026-03-08")));
        let m = resolve(Period::Month, d, &tz, now).unwrap();
        assert_eq!((m.first, m.last), (date("2026-03-01"), date("2026-03-31")));
        let pm = previous(Period::Month, &m, &tz).unwrap();
        assert_eq!(
            (pm.first, pm.last),
            (date("2026-02-01"), date("2026-02-28"))
        );
        let six = resolve(Period::SixMonths, d, &tz, now).unwrap();
        assert_eq!(six.first, date("2025-10-01"));
        let weeks = bucket_labels(&m, Interval::Week, &tz).unwrap();
        assert_eq!(weeks.first().unwrap(), "2026-02-23");
        assert_eq!(weeks.len(), 6);
    }
}
