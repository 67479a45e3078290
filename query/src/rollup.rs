//! The per-day rollup: figures per site, UTC day and key (totals, page, every visit property)
//! kept in `rollup_daily`, so that a month is read from a few rows per day and the events of
//! the days at its edges instead of every event (`sql::rolled`). This module also owns the
//! statements of its upkeep (build, fingerprints, manifest, deletes) and of the rolled-days lookup.
//!
//! A day is a UTC day of visit starts, which is also the day of the visitor-id salt: a visitor's
//! ids of two days never meet, so the exact visitor counts of whole days add up to the period's.
//! A day is rolled up once its visits have ended (a visit lasts at most a day) and rebuilt
//! whenever its events change — late rows, erasure, retention — as told by a fingerprint of
//! its rows (count and visitor-id checksum). A build's rows are written first, then its line in
//! `rollup_days`; readers take only days listed there and each day's newest listed build, so
//! they never see half a build. A running query service ([`Upkeep`]) fingerprints only the
//! days whose events may have changed since its last refresh ([`changes`]).

mod changes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use glimpse_core::config::ClusterName;
use glimpse_core::schema::cluster::alter_table;
use jiff::civil::Date;
use serde::Serialize;

use crate::params::{EventProperty, Property, VisitProperty};
use crate::sql::{self, Group, Sql, DAY};

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
    /// Whether every event was read (the first refresh of a process, or no part marks);
    /// otherwise only the days that may have changed.
    pub read_all: bool,
    /// How many `(site, day)` fingerprints were read.
    pub days_checked: usize,
}

/// A query service's rollup upkeep: what the events' parts looked like at its last refresh,
/// so that the next one reads only the days that may have changed.
#[derive(Debug, Default)]
pub struct Upkeep {
    last: Option<Seen>,
}

/// What the last refresh saw of the events.
#[derive(Debug)]
struct Seen {
    marks: HashMap<String, changes::PartitionMark>,
    until: i64,
    /// The mutations finished by then: their deletes show in `marks`.
    mutations_done: HashSet<String>,
}

impl Upkeep {
    /// Brings the rollup up to date as of `now`, reading all events the first time and only
    /// the changed days after that.
    pub async fn refresh(
        &mut self,
        client: &clickhouse::Client,
        database: &str,
        now: i64,
    ) -> Result<RefreshReport, clickhouse::error::Error> {
        self.refresh_on(client, database, None, now).await
    }

    /// [`refresh`](Self::refresh) on one server or a cluster. On a cluster the events are a
    /// `Distributed` table without parts of its own: every refresh reads all of them.
    pub async fn refresh_on(
        &mut self,
        client: &clickhouse::Client,
        database: &str,
        cluster: Option<&ClusterName>,
        now: i64,
    ) -> Result<RefreshReport, clickhouse::error::Error> {
        let until = settled_until(now);
        // Read before the events: a change landing meanwhile shows in the next marks. The
        // mutations before the parts (one finished by then has its deletes in them) and after
        // (one that appeared in between may have too).
        let mutations = changes::mutations(client, database).await?;
        let parts = changes::active_parts(client, database).await?;
        let marks = changes::partition_marks(&parts);
        let mut days = None;
        if let Some(seen) = self.last.as_ref().filter(|_| !marks.is_empty()) {
            let later = changes::mutations(client, database).await?;
            let deleted = mutations.deleted_since(&seen.mutations_done, &later);
            if let Some(found) = changes::changes(&seen.marks, &parts, deleted) {
                let mut ranges = found.ranges;
                ranges.extend(changes::new_rows_days(client, database, &found.new_parts).await?);
                days = Some(changes::days_to_read(ranges, seen.until, until));
            }
        }
        let report = refresh_days(client, database, cluster, until, days.as_deref()).await?;
        // Kept only after a refresh that succeeded: a failed one is retried from the old marks.
        self.last = (!marks.is_empty()).then_some(Seen {
            marks,
            until,
            mutations_done: mutations.done,
        });
        Ok(report)
    }
}

/// Visits started before this ended before it plus a day, at least [`SETTLE_SECS`] ago.
fn settled_until(now: i64) -> i64 {
    ((now - SETTLE_SECS).div_euclid(DAY) - 1) * DAY
}

#[derive(Debug, clickhouse::Row, Serialize)]
struct RolledDay {
    site: String,
    day: u16,
    version: u64,
    rows: u64,
    checksum: u64,
}

/// Brings the rollup of every site up to date with the events, as of `now` (Unix seconds),
/// reading every event's fingerprint.
pub async fn refresh(
    client: &clickhouse::Client,
    database: &str,
    now: i64,
) -> Result<RefreshReport, clickhouse::error::Error> {
    refresh_on(client, database, None, now).await
}

/// [`refresh`] on one server or, with `cluster`, on a cluster: builds are written through the
/// `Distributed` tables (a site's rollup on one shard, `schema::cluster`), superseded builds
/// deleted on every shard.
pub async fn refresh_on(
    client: &clickhouse::Client,
    database: &str,
    cluster: Option<&ClusterName>,
    now: i64,
) -> Result<RefreshReport, clickhouse::error::Error> {
    refresh_days(client, database, cluster, settled_until(now), None).await
}

/// Brings the rollup up to date for the visits started before `until`: on the UTC days of
/// `only` (inclusive ranges of day numbers), or on every day.
async fn refresh_days(
    client: &clickhouse::Client,
    database: &str,
    cluster: Option<&ClusterName>,
    until: i64,
    only: Option<&[(i64, i64)]>,
) -> Result<RefreshReport, clickhouse::error::Error> {
    let mut events: Vec<(String, String, u64, u64)> = Vec::new();
    match only {
        None => {
            events = fingerprints_statement(database, until)
                .query(client)
                .fetch_all()
                .await?
        }
        Some(ranges) => {
            for &(first, last) in ranges {
                events.extend(
                    day_fingerprints_statement(database, first, last)
                        .query(client)
                        .fetch_all::<(String, String, u64, u64)>()
                        .await?,
                );
            }
        }
    }
    let in_scope = |day: &str| match (only, day_number(day)) {
        (None, _) => true,
        (Some(ranges), Some(n)) => ranges.iter().any(|&(first, last)| first <= n && n <= last),
        (Some(_), None) => false,
    };
    let built: Vec<(String, String, u64, u64, u64)> = manifest_statement(database)
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

    let mut report = RefreshReport {
        read_all: only.is_none(),
        days_checked: events.len(),
        ..RefreshReport::default()
    };
    // Per site: the days to build, with their fingerprints.
    let mut to_build: BTreeMap<String, Vec<(i64, u64, u64)>> = BTreeMap::new();
    let mut with_events = HashSet::new();
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
        if in_scope(day) && !with_events.contains(&(site.clone(), day.clone())) {
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
        for statement in delete_statements(database, cluster, &site, &numbers, Some(version)) {
            statement.query(client).execute().await?;
        }
    }
    for (site, days) in to_remove {
        for statement in delete_statements(database, cluster, &site, &days, None) {
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
        .map(|(property, group)| build_statement(database, site, run, version, property, group))
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
    fetch_days(client, &rolled_days_statement(database, site, first, last)).await
}

/// Runs a lookup of rolled days (`rolled_days_statement`, as in a query plan's
/// `RolledDaysLookup`): the days, as UTC days since 1970, in order.
pub async fn fetch_days(
    client: &clickhouse::Client,
    lookup: &Sql,
) -> Result<Vec<i64>, clickhouse::error::Error> {
    let days: Vec<String> = lookup.query(client).fetch_all().await?;
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
        fingerprints_statement(database, 20_540 * DAY),
        day_fingerprints_statement(database, 20_535, 20_537),
        changes::parts_statement(database),
        changes::mutations_statement(database),
        changes::new_rows_days_statement(database, &["202603_1_1_0", "202603_2_2_0"]),
        manifest_statement(database),
        rolled_days_statement(database, site, 20_530, 20_540),
        listed_rows_statement(database, site, 20_530, 20_540),
    ];
    statements.extend(build_statements(database, site, (20_536, 20_537), 1));
    statements.extend(delete_statements(database, None, site, &days, Some(1)));
    statements.extend(delete_statements(database, None, site, &days, None));
    statements.iter().map(Sql::final_text).collect()
}

/// The `INSERT` of build `version` of `site`'s per-day figures for one grouping of the rollup,
/// for the UTC days `first..=last`: every row of the visits started on those days.
fn build_statement(
    database: &str,
    site: &str,
    (first, last): (i64, i64),
    version: u64,
    property: &str,
    group: &Group,
) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "INSERT INTO {database}.rollup_daily (site, property, day, version, key, visitors, \
         pageviews, events, visits, visit_pageviews, bounces, duration) SELECT "
    );
    sql.bind_str(site)
        .push(", ")
        .bind_str(property)
        .push(", day, toUInt64(")
        .bind_int(i64::try_from(version).unwrap_or(i64::MAX))
        .push("), key, ");
    let exit = *group == Group::Property(Property::Visit(VisitProperty::ExitPage));
    if exit {
        // As `exit_page_pass`: each visit's figures under its last page view.
        let _ = write!(
            sql.template,
            "uniqExact(x_visitor), sum(x_pageviews), sum(x_events), count(), sum(x_pageviews), \
             sum(x_bounce), sum(x_duration) FROM (SELECT session_id, any(visitor_id) AS x_visitor, \
             toDate(any(visit_start), 'UTC') AS day, {} AS key, \
             countIf(name = 'pageview') AS x_pageviews, count() AS x_events, \
             sum(visit_bounce) AS x_bounce, sum(visit_duration) AS x_duration, \
             sum(visit_entry) AS x_entry",
            sql::visit_value(VisitProperty::ExitPage)
        );
    } else {
        sql.push(
            "uniqExact(visitor_id), countIf(name = 'pageview'), count(), sum(visit_entry), \
             countIf(name = 'pageview'), sum(visit_bounce), sum(visit_duration) FROM (SELECT \
             visitor_id, name, visit_entry, visit_bounce, visit_duration, \
             toDate(visit_start, 'UTC') AS day, ",
        );
        match group {
            Group::Property(Property::Visit(p)) => {
                sql.push(&sql::visit_value(*p));
            }
            Group::Property(Property::Event(EventProperty::Page)) => {
                sql.push("pathname");
            }
            _ => {
                sql.push("''");
            }
        }
        sql.push(" AS key");
    }
    let _ = write!(sql.template, " FROM {database}.events WHERE ");
    sql::rows_between(&mut sql, site, first * DAY, (last + 2) * DAY);
    sql.push(" AND visit_start >= toDateTime(")
        .bind_int(first * DAY)
        .push(") AND visit_start < toDateTime(")
        .bind_int((last + 1) * DAY)
        .push(") AND name != 'engagement'");
    sql.push(if exit {
        " GROUP BY session_id HAVING x_entry > 0) GROUP BY day, key"
    } else {
        ") GROUP BY day, key"
    });
    sql
}

/// What the rollup of each site and UTC day (`YYYY-MM-DD`) is built from, for visits started
/// before `until`: the number of rows and a checksum of their visitor ids (rows of a day
/// arriving late, erased or expired change one or the other).
fn fingerprints_statement(database: &str, until: i64) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT toString(site), toString(toDate(visit_start, 'UTC')) AS day, count(), \
         sum(visitor_id) FROM {database}.events WHERE name != 'engagement' AND \
         visit_start >= toDateTime(86400) AND visit_start < toDateTime("
    );
    sql.bind_int(until).push(") GROUP BY site, day");
    sql
}

/// The fingerprints (as [`fingerprints_statement`]) of the visits started on the UTC days
/// `first..=last`. Their rows lie between the first day's start and a visit's length after
/// the last day: the bound on `timestamp` lets ClickHouse skip the other months' partitions.
fn day_fingerprints_statement(database: &str, first: i64, last: i64) -> Sql {
    let (from, to) = (first * DAY, (last + 1) * DAY);
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT toString(site), toString(toDate(visit_start, 'UTC')) AS day, count(), \
         sum(visitor_id) FROM {database}.events WHERE name != 'engagement' AND \
         visit_start >= toDateTime("
    );
    sql.bind_int(from.max(DAY))
        .push(") AND visit_start < toDateTime(")
        .bind_int(to)
        .push(") AND timestamp >= toDateTime(")
        .bind_int(from.max(DAY))
        .push(") AND timestamp < toDateTime(")
        .bind_int(to + sql::MAX_VISIT_SECS)
        .push(") GROUP BY site, day");
    sql
}

/// The newest complete build of every rolled day: site, day, version and what it was built from.
fn manifest_statement(database: &str) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT toString(site), toString(day), max(version), argMax(rows, version), \
         argMax(checksum, version) FROM {database}.rollup_days GROUP BY site, day"
    );
    sql
}

/// The `ALTER TABLE … DELETE`s of a site's rollup for `days`: all builds, or only those older
/// than `below_version`. The listing (`rollup_days`) goes first, so that no reader takes a day
/// whose figures are being deleted.
fn delete_statements(
    database: &str,
    cluster: Option<&ClusterName>,
    site: &str,
    days: &[i64],
    below_version: Option<u64>,
) -> [Sql; 2] {
    ["rollup_days", "rollup_daily"].map(|table| {
        let mut sql = Sql::default();
        let _ = write!(
            sql.template,
            "{} DELETE WHERE site = ",
            alter_table(database, table, cluster)
        );
        sql.bind_str(site).push(" AND ");
        sql::days_condition(&mut sql, days);
        if let Some(version) = below_version {
            sql.push(" AND version < ")
                .bind_int(i64::try_from(version).unwrap_or(i64::MAX));
        }
        sql
    })
}

/// A site's rolled days (`YYYY-MM-DD`) from `first` to `last` (UTC days).
pub(crate) fn rolled_days_statement(database: &str, site: &str, first: i64, last: i64) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT DISTINCT toString(day) FROM {database}.rollup_days WHERE site = "
    );
    sql.bind_str(site).push(" AND ");
    sql::day_range(&mut sql, first, last);
    sql
}

/// The number of a site's events on its rolled days from `first` to `last` (UTC days), as
/// each day's newest build counted them: what the query plan weighs to decide whether to
/// sample (`plan::Request::sampling_lookup`). One `UInt64`; days not rolled up count 0.
pub(crate) fn listed_rows_statement(database: &str, site: &str, first: i64, last: i64) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT toUInt64(sum(day_rows)) FROM (SELECT day, argMax(rows, version) AS day_rows \
         FROM {database}.rollup_days WHERE site = "
    );
    sql.bind_str(site).push(" AND ");
    sql::day_range(&mut sql, first, last);
    sql.push(" GROUP BY day)");
    sql
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
    cluster: Option<ClusterName>,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut wait = std::time::Duration::from_secs(5);
    let mut upkeep = Upkeep::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        wait = interval;
        let now = jiff::Timestamp::now().as_second();
        let started = std::time::Instant::now();
        let result = upkeep
            .refresh_on(&client, &database, cluster.as_ref(), now)
            .await;
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!("glimpse_query_rollup_refresh_duration_seconds").record(seconds);
        match result {
            Ok(report) => {
                metrics::counter!("glimpse_query_rollup_refreshes_total", "result" => "ok")
                    .increment(1);
                tracing::info!(
                    days_built = report.days_built.len(),
                    days_removed = report.days_removed.len(),
                    days_checked = report.days_checked,
                    read_all = report.read_all,
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
