//! The per-day rollup, on a database of its own (it changes the figures).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use glimpse_collector::ingest::sessions::stamp_visits;
use glimpse_core::schema::EventRow;
use jiff::tz::TimeZone;
use serde_json::{json, Value};

use crate::breakdowns::{check_breakdown_rows, PROPERTIES};
use crate::expected::{day_range, expected, Key};
use crate::fixture::utc_seconds;
use crate::service::Service;
use crate::{common, BERLIN, OTHER, SITE, WEEK};

/// The metrics the rollup answers (all but the engagement ones).
pub const ROLLUP_METRICS: &str =
    "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events";

/// Aggregate and every rolled breakdown of `site` over `params` (a period covering the local
/// days `first..=last`), checked against the fixture; returns the rows compared.
pub async fn check_rolled_questions(
    s: &Service,
    (site, key, tz): (&str, &str, &str),
    params: &[(&str, &str)],
    (first, last): (&str, &str),
    previous: Option<(&str, &str)>,
) -> usize {
    let range = day_range(tz, first, last);
    let mut q = vec![("site_id", site), ("metrics", ROLLUP_METRICS)];
    q.extend_from_slice(params);
    if previous.is_some() {
        q.push(("compare", "previous_period"));
    }
    let got = s.json_at(&s.base, key, "/api/v1/stats/aggregate", &q).await;
    let want = expected(&s.fixture, site, range, &[], Key::Total, 0);
    let want = want.get("").expect("events in range");
    for m in ROLLUP_METRICS.split(',') {
        assert_eq!(
            got["results"][m]["value"],
            want.metric(m),
            "{site} {params:?} {m}"
        );
    }
    if let Some((first, last)) = previous {
        let range = day_range(tz, first, last);
        let before = expected(&s.fixture, site, range, &[], Key::Total, 0);
        let before = before.get("").cloned().unwrap_or_default();
        for m in ROLLUP_METRICS.split(',') {
            assert_eq!(
                got["results"][m]["comparison_value"],
                before.metric(m),
                "{site} {params:?} {m} (previous period)"
            );
        }
    }
    let mut compared = 1;
    let properties = PROPERTIES
        .iter()
        .filter(|p| **p == "event:page" || p.starts_with("visit:"));
    for property in properties {
        let metrics = if *property == "event:page" {
            "visitors,pageviews,events"
        } else {
            ROLLUP_METRICS
        };
        let mut q = vec![
            ("site_id", site),
            ("property", property),
            ("metrics", metrics),
            ("limit", "1000"),
        ];
        q.extend_from_slice(params);
        let got = s.json_at(&s.base, key, "/api/v1/stats/breakdown", &q).await;
        let want = expected(&s.fixture, site, range, &[], Key::Property(property), 0);
        compared += check_breakdown_rows(
            &format!("{site} {params:?}"),
            &got,
            &want,
            property,
            metrics,
        );
    }
    compared
}

/// The rollup, built for the fixture's days, answers with exactly the figures of the events
/// (UTC periods, and Berlin periods whose edges cut UTC days, over the DST change); the API
/// does read it (a late row of a rolled day shows only after the next refresh, which rebuilds
/// that day); a day whose events are gone loses its figures.
pub async fn rollup(s: &Service) {
    use glimpse_query::rollup::refresh;
    let now = jiff::Timestamp::now().as_second();
    let report = refresh(&s.ch.client, s.db, now).await.unwrap();
    // Every row the service's database holds: the fixture and the funnels' hand-made visits.
    let visit_days: BTreeSet<(String, String)> = s
        .fixture
        .iter()
        .chain(&crate::funnels::rows())
        .filter(|e| e.name != "engagement")
        .map(|e| {
            let day = jiff::Timestamp::from_second(i64::from(e.visit_start))
                .unwrap()
                .to_zoned(TimeZone::UTC)
                .date();
            (e.site.clone(), day.to_string())
        })
        .collect();
    let built: BTreeSet<(String, String)> = report.days_built.iter().cloned().collect();
    assert_eq!(built, visit_days, "every day with visits is rolled up");
    assert!(report.days_removed.is_empty());
    let again = refresh(&s.ch.client, s.db, now).await.unwrap();
    assert!(
        again.days_built.is_empty() && again.days_removed.is_empty(),
        "nothing changed, nothing to do: {again:?}"
    );
    println!("rollup: {} site days built", built.len());

    let utc = (SITE, s.key.as_str(), "UTC");
    let berlin = (BERLIN, s.berlin_key.as_str(), "Europe/Berlin");
    // (site, period, its local days, the comparison's local days)
    type Case<'a> = (
        (&'a str, &'a str, &'a str),
        &'a str,
        (&'a str, &'a str),
        Option<(&'a str, &'a str)>,
    );
    let cases: [Case; 5] = [
        (
            utc,
            "2026-03-24,2026-03-31",
            ("2026-03-24", "2026-03-31"),
            None,
        ),
        (utc, "month", ("2026-03-01", "2026-03-31"), None),
        (
            utc,
            "2026-03-28,2026-03-31",
            ("2026-03-28", "2026-03-31"),
            Some(("2026-03-24", "2026-03-27")),
        ),
        (
            berlin,
            "2026-03-28,2026-03-31",
            ("2026-03-28", "2026-03-31"),
            None,
        ),
        (
            berlin,
            "2026-03-25,2026-03-31",
            ("2026-03-25", "2026-03-31"),
            Some(("2026-03-18", "2026-03-24")),
        ),
    ];
    let mut compared = 0;
    for (site, period, days, previous) in cases {
        let params: Vec<(&str, &str)> = if period == "month" {
            vec![("period", "month"), ("date", "2026-03-10")]
        } else {
            vec![("period", "custom"), ("date", period)]
        };
        compared += check_rolled_questions(s, site, &params, days, previous).await;
    }
    println!("rollup: {compared} aggregate and breakdown rows equal the fixture's");
    rollup_answers_the_same_on_current_clickhouse(s, &visit_days).await;

    // A late visit on a rolled day (a collector's spool replayed after an outage).
    let visitors = |body: Value| body["results"]["visitors"]["value"].as_u64().unwrap();
    let week: Vec<(&str, &str)> = [("site_id", SITE), ("metrics", "visitors")]
        .into_iter()
        .chain(WEEK)
        .collect();
    let before = visitors(s.json("/api/v1/stats/aggregate", &week).await);
    insert_visit(s, SITE, utc_seconds("2026-03-26", 12, 0), "/late", 777_777).await;
    assert_eq!(
        visitors(s.json("/api/v1/stats/aggregate", &week).await),
        before,
        "a rolled day is read from the rollup until it is rebuilt"
    );
    let report = refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(
        report.days_built,
        vec![(SITE.to_string(), "2026-03-26".to_string())]
    );
    assert_eq!(
        visitors(s.json("/api/v1/stats/aggregate", &week).await),
        before + 1
    );

    // Its erasure: the day is rebuilt without it.
    delete_events(s, "visitor_id = 777777").await;
    let rebuilt = refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(rebuilt.days_built, report.days_built);
    assert_eq!(
        visitors(s.json("/api/v1/stats/aggregate", &week).await),
        before
    );

    // Two query services refreshing at once (both rebuild every day: the listing is gone)
    // write two complete builds; readers take one, so the figures do not double.
    s.ch.client
        .query(&format!("TRUNCATE TABLE {}.rollup_days", s.db))
        .execute()
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        refresh(&s.ch.client, s.db, now),
        refresh(&s.ch.client, s.db, now)
    );
    assert_eq!(a.unwrap().days_built.len(), built.len());
    assert_eq!(b.unwrap().days_built.len(), built.len());
    let after = check_rolled_questions(s, utc, &WEEK, ("2026-03-24", "2026-03-31"), None).await;
    assert!(after > 0);

    // A day whose events are all gone (retention) loses its rollup.
    let (_, day) = visit_days
        .iter()
        .find(|(site, _)| site == OTHER)
        .expect("other.org has visits");
    let of_day = format!(
        "site = '{OTHER}' AND toDate(visit_start, 'UTC') = toDate('{day}') AND name != 'engagement'"
    );
    delete_events(s, &of_day).await;
    let report = refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(report.days_removed, vec![(OTHER.to_string(), day.clone())]);
    assert!(report.days_built.is_empty(), "{report:?}");
    // The removal is a mutation, which 18.16 runs after the statement returns: until it has,
    // the next refresh finds the day still listed and removes it again (harmless, but not
    // what the next steps count).
    let listed = format!(
        "SELECT count() FROM {}.rollup_days WHERE site = '{OTHER}' AND day = toDate('{day}')",
        s.db
    );
    for _ in 0..100 {
        if s.ch.count(&listed).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.ch.count(&listed).await,
        0,
        "{day} still listed after 10 s"
    );

    incremental_upkeep(s, now).await;
}

/// A running query service's refreshes read only the days whose events may have changed (told
/// by the events' parts), and rebuild exactly the changed days and nothing else: a late row
/// (its day alone is read), an import, an erasure, retention, a month far from the others; a
/// merge changes nothing, nor does a refresh with nothing new.
async fn incremental_upkeep(s: &Service, now: i64) {
    use glimpse_query::rollup::Upkeep;
    let mut upkeep = Upkeep::default();
    let first = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    assert!(
        first.read_all,
        "the first refresh of a process reads everything"
    );
    assert!(
        first.days_built.is_empty() && first.days_removed.is_empty(),
        "{first:?}"
    );
    let march_days = first.days_checked;
    assert!(march_days > 10, "{first:?}");
    let noop = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    assert!(!noop.read_all);
    assert_eq!(
        noop.days_checked, 0,
        "nothing changed, nothing read: {noop:?}"
    );

    // A row in a month of its own: only its day is read.
    insert_visit(s, OTHER, utc_seconds("2025-11-15", 9, 0), "/upkeep", 9_001).await;
    let report = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(
        (
            report.days_built.clone(),
            report.days_checked,
            report.read_all
        ),
        (
            vec![(OTHER.to_string(), "2025-11-15".to_string())],
            1,
            false
        ),
        "{report:?}"
    );
    // Merging the parts changes no mark.
    s.ch.client
        .query(&format!("OPTIMIZE TABLE {}.events FINAL", s.db))
        .execute()
        .await
        .unwrap();
    let merged = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(merged.days_checked, 0, "a merge: {merged:?}");
    // Its erasure: the day's figures go; nothing else is read.
    delete_events(s, "visitor_id = 9001").await;
    let report = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(
        report.days_removed,
        vec![(OTHER.to_string(), "2025-11-15".to_string())]
    );
    assert!(report.days_built.is_empty(), "{report:?}");
    assert_eq!(report.days_checked, 0, "{report:?}");
    // A late row on an old day: that day alone is read (every site's figures of it) and
    // rebuilt, not its month.
    insert_visit(s, OTHER, utc_seconds("2026-03-20", 9, 0), "/upkeep", 9_002).await;
    let report = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(
        report.days_built,
        vec![(OTHER.to_string(), "2026-03-20".to_string())]
    );
    assert_eq!(
        report.days_checked,
        site_days_on(s, &["2026-03-20"]).await,
        "{report:?}"
    );
    assert!(report.days_removed.is_empty());
    let late_row_read = report.days_checked;
    let noop = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(
        (noop.days_built.len(), noop.days_checked),
        (0, 0),
        "{noop:?}"
    );

    // A late row merged with the parts seen before the refresh sees it: the merged part is
    // read for its days, and still only the late row's day is rebuilt.
    insert_visit(s, OTHER, utc_seconds("2026-03-21", 9, 0), "/upkeep", 9_005).await;
    s.ch.client
        .query(&format!("OPTIMIZE TABLE {}.events FINAL", s.db))
        .execute()
        .await
        .unwrap();
    let report = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(
        (report.days_built.clone(), report.days_removed.len()),
        (vec![(OTHER.to_string(), "2026-03-21".to_string())], 0),
        "{report:?}"
    );

    // An import (`glimpse import`, two batches on two old days): exactly those days.
    let imported = [
        visit_row(SITE, utc_seconds("2026-03-22", 10, 0), "/imported", 9_003),
        visit_row(SITE, utc_seconds("2026-03-27", 11, 0), "/imported", 9_003),
    ];
    let lines: String = imported
        .iter()
        .map(|row| serde_json::to_string(row).unwrap() + "\n")
        .collect();
    let rows = glimpse_collector::admin::export::import(
        &s.ch.client,
        s.db,
        lines.as_bytes(),
        glimpse_collector::admin::export::Format::JsonLines,
        1,
    )
    .await
    .unwrap();
    assert_eq!(rows, 2);
    let report = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    let import_days = [
        (SITE.to_string(), "2026-03-22".to_string()),
        (SITE.to_string(), "2026-03-27".to_string()),
    ];
    assert_eq!(
        site_days(&report.days_built),
        BTreeSet::from(import_days.clone())
    );
    assert_eq!(
        report.days_checked,
        site_days_on(s, &["2026-03-22", "2026-03-27"]).await,
        "{report:?}"
    );
    assert!(report.days_removed.is_empty());

    // The erasure of that visitor (`glimpse erase`): exactly their days are rebuilt; which
    // days lost rows no part tells, so their month is read.
    let erased = glimpse_collector::admin::erase::visitor(&s.ch.client, s.db, None, SITE, 9_003)
        .await
        .unwrap();
    assert_eq!(erased, 2);
    let gone = glimpse_collector::admin::erase::wait_until_erased(
        &s.ch.client,
        s.db,
        SITE,
        9_003,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(gone, "the erasure did not run within 30 s");
    let report = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    // Rebuilt without them, or removed where they were the day's only visitor.
    assert_eq!(touched(&report), BTreeSet::from(import_days), "{report:?}");
    assert_eq!(
        report.days_checked,
        site_days_between(s, "2026-02-28", "2026-03-31").await,
        "March and the day before it: {report:?}"
    );

    // Retention (`glimpse retention apply`) keeping no full day of other.org as of March 31
    // noon: exactly its days with rows before March 31 are rebuilt or removed.
    let cutoff = utc_seconds("2026-03-31", 0, 0);
    let expired = format!(
        "SELECT DISTINCT toString(toDate(visit_start, 'UTC')) FROM {}.events WHERE site = '{OTHER}' \
         AND timestamp < toDateTime({cutoff}) AND name != 'engagement'",
        s.db
    );
    let expired: Vec<String> = s.ch.client.query(&expired).fetch_all().await.unwrap();
    assert!(!expired.is_empty(), "other.org has days before March 31");
    let mut other = glimpse_core::site::Site::new(OTHER);
    other.retention_days = 0;
    let as_of = utc_seconds("2026-03-31", 12, 0) as u32;
    let retention =
        glimpse_collector::admin::retention::apply(&s.ch.client, s.db, None, &[other], as_of)
            .await
            .unwrap();
    assert_eq!(retention.rows_scheduled.len(), 1, "{retention:?}");
    let deleted = glimpse_collector::admin::retention::wait_for_events_deleted(
        &s.ch.client,
        s.db,
        OTHER,
        cutoff as u32,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(deleted, "retention's delete did not run within 30 s");
    let report = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    let want: BTreeSet<(String, String)> = expired
        .iter()
        .map(|day| (OTHER.to_string(), day.clone()))
        .collect();
    assert_eq!(touched(&report), want, "{report:?}");
    let noop = upkeep.refresh(&s.ch.client, s.db, now).await.unwrap();
    assert_eq!(
        (
            noop.days_built.len(),
            noop.days_removed.len(),
            noop.days_checked
        ),
        (0, 0, 0),
        "{noop:?}"
    );
    println!(
        "rollup upkeep: {march_days} days read at start, 0 when nothing changed, 1 for a month \
         of its own, {late_row_read} for a late row in March (every site's figures of its day); \
         retention touched {} days of other.org",
        expired.len()
    );
}

/// The `(site, day)`s of a report, as a set.
fn site_days(days: &[(String, String)]) -> BTreeSet<(String, String)> {
    days.iter().cloned().collect()
}

/// The `(site, day)`s a refresh rebuilt or removed.
fn touched(report: &glimpse_query::rollup::RefreshReport) -> BTreeSet<(String, String)> {
    report
        .days_built
        .iter()
        .chain(&report.days_removed)
        .cloned()
        .collect()
}

/// How many `(site, UTC day)`s have visits from `first` to `last` (`YYYY-MM-DD`).
async fn site_days_between(s: &Service, first: &str, last: &str) -> usize {
    let sql = format!(
        "SELECT count() FROM (SELECT DISTINCT site, toDate(visit_start, 'UTC') AS day \
         FROM {}.events WHERE name != 'engagement' AND day >= toDate('{first}') \
         AND day <= toDate('{last}'))",
        s.db
    );
    s.ch.count(&sql).await as usize
}

/// How many `(site, UTC day)`s have visits on `days` (`YYYY-MM-DD`): what a refresh reading
/// those days fingerprints.
async fn site_days_on(s: &Service, days: &[&str]) -> usize {
    let days: Vec<String> = days.iter().map(|d| format!("'{d}'")).collect();
    let sql = format!(
        "SELECT count() FROM (SELECT DISTINCT site, toString(toDate(visit_start, 'UTC')) AS day \
         FROM {}.events WHERE name != 'engagement' AND day IN ({}))",
        s.db,
        days.join(", ")
    );
    s.ch.count(&sql).await as usize
}

/// Inserts a one-page visit of `visitor` on `site` at `time` straight into the events (as a
/// collector's spool replayed late would).
async fn insert_visit(s: &Service, site: &str, time: i64, path: &str, visitor: u64) {
    let row = visit_row(site, time, path, visitor);
    let mut insert =
        s.ch.client
            .clone()
            .with_database(s.db)
            .insert::<EventRow>("events")
            .await
            .unwrap();
    insert.write(&row).await.unwrap();
    insert.end().await.unwrap();
}

/// A one-page visit of `visitor` on `site` at `time`.
fn visit_row(site: &str, time: i64, path: &str, visitor: u64) -> EventRow {
    let mut rows = vec![EventRow {
        site: site.into(),
        timestamp: time as u32,
        name: "pageview".into(),
        hostname: site.into(),
        pathname: path.into(),
        visitor_id: visitor,
        session_id: visitor,
        ..EventRow::default()
    }];
    stamp_visits(&mut rows);
    rows.remove(0)
}

/// Deletes the events matching `condition` and waits until the mutation has run.
pub async fn delete_events(s: &Service, condition: &str) {
    s.ch.client
        .query(&format!(
            "ALTER TABLE {}.events DELETE WHERE {condition}",
            s.db
        ))
        .execute()
        .await
        .unwrap();
    let left = format!("SELECT count() FROM {}.events WHERE {condition}", s.db);
    for _ in 0..100 {
        if s.ch.count(&left).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{condition}: still there after 10 s");
}

/// On ClickHouse 26.x (chdb, `tests/chdb/rollup.py`): the rollup built there by the same
/// statements from the same events answers every rolled question (UTC and Berlin periods, with
/// comparisons) with the rows the events give.
pub async fn rollup_answers_the_same_on_current_clickhouse(
    s: &Service,
    visit_days: &BTreeSet<(String, String)>,
) {
    use glimpse_query::params::Endpoint;
    let dir = tempfile::tempdir().unwrap();
    let mut export =
        s.ch.client
            .query(&format!("SELECT * FROM {}.events", s.db))
            .fetch_bytes("Native")
            .unwrap();
    let mut native = Vec::new();
    while let Some(chunk) = export.next().await.unwrap() {
        native.extend_from_slice(&chunk);
    }
    std::fs::write(dir.path().join("events.native"), native).unwrap();

    let day_number = |day: &str| glimpse_core::schema::day_number(day.parse().unwrap());
    let mut builds = Vec::new();
    let mut days_of: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (site, day) in visit_days {
        days_of.entry(site).or_default().push(day_number(day));
    }
    for (site, days) in &days_of {
        for run in glimpse_query::sql::day_runs(days) {
            builds.extend(
                glimpse_query::rollup::build_statements("glimpse", site, run, 1)
                    .iter()
                    .map(glimpse_query::sql::Sql::final_text),
            );
        }
    }

    let now = jiff::Timestamp::now();
    let mut questions = Vec::new();
    let cases = [
        (SITE, "UTC", "2026-03-24,2026-03-31"),
        (SITE, "UTC", "2026-03-26,2026-03-29"),
        (BERLIN, "Europe/Berlin", "2026-03-25,2026-03-31"),
    ];
    for (domain, tz, dates) in cases {
        let site = glimpse_core::site::Site::parse(glimpse_core::site::SiteConfig {
            timezone: tz.into(),
            ..glimpse_core::site::SiteConfig::new(domain)
        })
        .unwrap();
        let rolled = &days_of[domain];
        let mut ask = |endpoint: Endpoint, extra: &[(&str, &str)]| {
            let mut query: HashMap<String, String> = [
                ("site_id", domain),
                ("period", "custom"),
                ("date", dates),
                ("compare", "previous_period"),
            ]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            if endpoint == Endpoint::Breakdown {
                query.remove("compare");
            }
            let request =
                glimpse_query::plan::Request::new(endpoint, &query, site.clone(), now).unwrap();
            let statements = |days: &[i64]| request.stats_plan("glimpse", 0, days).unwrap().texts();
            questions.push(json!({
                "name": format!("{domain} {dates} {extra:?}"),
                "raw": statements(&[]),
                "rolled": statements(rolled),
            }));
        };
        ask(Endpoint::Aggregate, &[("metrics", ROLLUP_METRICS)]);
        for property in PROPERTIES
            .iter()
            .filter(|p| **p == "event:page" || p.starts_with("visit:"))
        {
            let metrics = if *property == "event:page" {
                "visitors,pageviews,events"
            } else {
                ROLLUP_METRICS
            };
            ask(
                Endpoint::Breakdown,
                &[
                    ("property", property),
                    ("metrics", metrics),
                    ("limit", "1000"),
                ],
            );
        }
    }
    let write = |name: &str, value: &Value| {
        std::fs::write(dir.path().join(name), serde_json::to_vec(value).unwrap()).unwrap();
    };
    write(
        "schema.json",
        &json!(glimpse_core::schema::migration_statements(
            glimpse_core::schema::Flavor::Modern,
            "glimpse"
        )),
    );
    write("builds.json", &json!(builds));
    write("questions.json", &json!(questions));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chdb/rollup.py");
    let output = std::process::Command::new(common::test_python())
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run tests/chdb/rollup.py (GLIMPSE_TEST_PYTHON: a Python with chdb)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    assert!(
        output.status.success(),
        "rollup on current ClickHouse: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
