//! The per-day rollup: figures per site, UTC day and key (totals, page, every visit property)
//! kept in `rollup_daily`, so that a month is read from a few rows per day and the events of
//! the days at its edges instead of every event (`sql::live_source`).
//!
//! A day is a UTC day of visit starts, which is also the day of the visitor-id salt: a visitor's
//! ids of two days never meet, so the exact visitor counts of whole days add up to the period's.
//! A day is rolled up once its visits have ended (a visit lasts at most a day) and rebuilt
//! whenever its events change — late rows, erasure, retention — as told by a fingerprint of
//! its rows (count and visitor-id checksum). A build's rows are written first, then its line in
//! `rollup_days`; readers take only days listed there and each day's newest listed build, so
//! they never see half a build.

use std::collections::{BTreeMap, HashMap};

use jiff::civil::Date;
use serde::Serialize;

use crate::sql::{self, Sql};

use crate::sql::DAY;

/// How long after a day's last visit could have ended its rows may still be in a collector's
/// buffer or spool: the day is rolled up only after that.
const SETTLE_SECS: i64 = 15 * 60;

/// What one [`refresh`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    /// `(site, day)` built for the first time or rebuilt.
    pub days_built: Vec<(String, String)>,
    /// `(site, day)` whose events are gone (retention, erasure): their figures were removed.
    pub days_removed: Vec<(String, String)>,
}

#[derive(Debug, clickhouse::Row, Serialize)]
struct RolledDay {
    site: String,
    day: u16,
    version: u64,
    rows: u64,
    checksum: u64,
}

/// Brings the rollup of every site up to date with the events, as of `now` (Unix seconds).
pub async fn refresh(
    client: &clickhouse::Client,
    database: &str,
    now: i64,
) -> Result<RefreshReport, clickhouse::error::Error> {
    // Visits started before `until` ended before `until + DAY`, at least SETTLE_SECS ago.
    let until = ((now - SETTLE_SECS).div_euclid(DAY) - 1) * DAY;
    let events: Vec<(String, String, u64, u64)> = sql::rollup_fingerprints(database, until)
        .query(client)
        .fetch_all()
        .await?;
    let built: Vec<(String, String, u64, u64, u64)> = sql::rollup_manifest(database)
        .query(client)
        .fetch_all()
        .await?;
    let newest_version = built.iter().map(|b| b.2).max().unwrap_or(0);
    // Unique per build, so that two query services refreshing at once never share one (their
    // rows would add up): the time in microseconds times 1000 plus a random 0..999, above
    // every earlier build.
    let random = getrandom::u32().unwrap_or_else(|_| std::process::id()) % 1000;
    let micros = u64::try_from(jiff::Timestamp::now().as_microsecond()).unwrap_or(0);
    let version = (micros * 1000 + u64::from(random)).max(newest_version + 1);
    let built: HashMap<(String, String), (u64, u64, u64)> = built
        .into_iter()
        .map(|(site, day, version, rows, checksum)| ((site, day), (version, rows, checksum)))
        .collect();

    let mut report = RefreshReport::default();
    // Per site: the days to build, with their fingerprints.
    let mut to_build: BTreeMap<String, Vec<(i64, u64, u64)>> = BTreeMap::new();
    let mut with_events = std::collections::HashSet::new();
    for (site, day, rows, checksum) in events {
        let Some(number) = day_number(&day) else {
            continue;
        };
        with_events.insert((site.clone(), day.clone()));
        match built.get(&(site.clone(), day.clone())) {
            Some(&(_, r, c)) if r == rows && c == checksum => {}
            _ => {
                to_build
                    .entry(site.clone())
                    .or_default()
                    .push((number, rows, checksum));
                report.days_built.push((site, day));
            }
        }
    }
    let mut to_remove: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (site, day) in built.keys() {
        if !with_events.contains(&(site.clone(), day.clone())) {
            if let Some(number) = day_number(day) {
                to_remove.entry(site.clone()).or_default().push(number);
                report.days_removed.push((site.clone(), day.clone()));
            }
        }
    }

    for (site, mut days) in to_build {
        days.sort_unstable();
        let numbers: Vec<i64> = days.iter().map(|d| d.0).collect();
        for run in sql::day_runs(&numbers) {
            for statement in build_statements(database, &site, run, version) {
                statement.query(client).execute().await?;
            }
        }
        // The build is complete: list it, then drop the builds it replaces.
        let mut insert = client
            .clone()
            .with_database(database)
            .insert::<RolledDay>("rollup_days")
            .await?;
        for &(day, rows, checksum) in &days {
            insert
                .write(&RolledDay {
                    site: site.clone(),
                    day: u16::try_from(day).unwrap_or(u16::MAX),
                    version,
                    rows,
                    checksum,
                })
                .await?;
        }
        insert.end().await?;
        for statement in sql::rollup_deletes(database, &site, &numbers, Some(version)) {
            statement.query(client).execute().await?;
        }
    }
    for (site, days) in to_remove {
        for statement in sql::rollup_deletes(database, &site, &days, None) {
            statement.query(client).execute().await?;
        }
    }
    Ok(report)
}

/// The statements writing build `version` of `site`'s days `first..=last` (UTC), one per
/// grouping the rollup keeps.
pub fn build_statements(database: &str, site: &str, run: (i64, i64), version: u64) -> Vec<Sql> {
    sql::rollup_groups()
        .iter()
        .map(|(property, group)| sql::rollup_build(database, site, run, version, property, group))
        .collect()
}

/// The site's rolled days (UTC days since 1970) from `first` to `last`.
pub async fn rolled_days(
    client: &clickhouse::Client,
    database: &str,
    site: &str,
    first: i64,
    last: i64,
) -> Result<Vec<i64>, clickhouse::error::Error> {
    let days: Vec<String> = sql::rolled_days(database, site, first, last)
        .query(client)
        .fetch_all()
        .await?;
    let mut days: Vec<i64> = days.iter().filter_map(|d| day_number(d)).collect();
    days.sort_unstable();
    Ok(days)
}

/// The final text of every statement the rollup's upkeep runs (builds of each grouping for
/// `site` and a few days, version 1, and the deletions), for checking them on other ClickHouse
/// versions.
pub fn maintenance_statements(database: &str, site: &str) -> Vec<String> {
    let days = [20_536, 20_537, 20_539];
    let mut statements = vec![
        sql::rollup_fingerprints(database, 20_540 * DAY),
        sql::rollup_manifest(database),
        sql::rolled_days(database, site, 20_530, 20_540),
    ];
    statements.extend(build_statements(database, site, (20_536, 20_537), 1));
    statements.extend(sql::rollup_deletes(database, site, &days, Some(1)));
    statements.extend(sql::rollup_deletes(database, site, &days, None));
    statements.iter().map(Sql::final_text).collect()
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn day_number(text: &str) -> Option<i64> {
    let date: Date = text.parse().ok()?;
    Some(glimpse_core::schema::day_number(date))
}

/// Refreshes the rollup a few seconds after start and every `interval` after that, until
/// `shutdown`. Several query services doing the same is harmless: each build is complete on
/// its own and readers take the newest.
pub async fn refresh_periodically(
    client: clickhouse::Client,
    database: String,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut wait = std::time::Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        wait = interval;
        let now = jiff::Timestamp::now().as_second();
        let started = std::time::Instant::now();
        let result = refresh(&client, &database, now).await;
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!("glimpse_query_rollup_refresh_duration_seconds").record(seconds);
        match result {
            Ok(report) => {
                metrics::counter!("glimpse_query_rollup_refreshes_total", "result" => "ok")
                    .increment(1);
                tracing::info!(
                    days_built = report.days_built.len(),
                    days_removed = report.days_removed.len(),
                    seconds,
                    "rollup refreshed"
                )
            }
            Err(error) => {
                metrics::counter!("glimpse_query_rollup_refreshes_total", "result" => "failed")
                    .increment(1);
                tracing::warn!(%error, "rollup not refreshed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_are_clickhouse_dates() {
        assert_eq!(day_number("1970-01-02"), Some(1));
        assert_eq!(day_number("2026-03-24"), Some(20_536));
        assert_eq!(day_number("not a day"), None);
    }
}
