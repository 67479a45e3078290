//! Stats API v2 (`POST /api/v2/query`) end to end: every metric and dimension, each filter
//! operator and nesting, each date range form, `include`, pagination and order checked against
//! numbers computed from the fixture; the same questions asked of v1 and v2; who may ask.

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde_json::{json, Value};

use crate::breakdowns::PROPERTIES;
use crate::expected::{
    day_range, expected, expected_where, local_label, sorted, Cond, Filter, Key, Sums, GOALS,
    PART_SEPARATOR,
};
use crate::service::Service;
use crate::{BERLIN, SHARE_TOKEN, SITE, WEEK};

const METRICS: [&str; 9] = [
    "visitors",
    "visits",
    "pageviews",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
    "events",
    "time_on_page",
    "scroll_depth",
];

fn week() -> (i64, i64) {
    day_range("UTC", "2026-03-24", "2026-03-31")
}

/// `part` of `whole` in percent with one decimal, as Plausible rounds rates.
fn pct(part: usize, whole: usize) -> Value {
    let ratio = if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    };
    json!((ratio * 1000.0).round() / 10.0)
}

impl Service {
    /// A v2 query: status and body.
    pub async fn post_v2(
        &self,
        base: &str,
        key: Option<&str>,
        share: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut url = format!("{base}/api/v2/query");
        if let Some(token) = share {
            url.push_str(&format!("?auth={token}"));
        }
        let mut request = self.http.post(url).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A v2 query that must succeed, with the site's key.
    pub async fn v2(&self, body: Value) -> Value {
        self.v2_at(&self.base, &self.key, body).await
    }

    pub async fn v2_at(&self, base: &str, key: &str, body: Value) -> Value {
        let (status, got) = self.post_v2(base, Some(key), None, &body).await;
        assert_eq!(status, 200, "{body}: {got}");
        got
    }
}

/// The answer's rows as (dimension value, metric values).
fn rows(got: &Value) -> Vec<(String, Vec<Value>)> {
    got["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {got}"))
        .iter()
        .map(|r| {
            let dimension = r["dimensions"]
                .get(0)
                .map_or(String::new(), |d| d.as_str().unwrap().to_string());
            (dimension, r["metrics"].as_array().unwrap().clone())
        })
        .collect()
}

/// Each metric of a row equals the expected sums' (`percentage` of `total` visitors).
fn check_metrics(what: &str, metrics: &[&str], values: &[Value], sums: &Sums, total: usize) {
    assert_eq!(values.len(), metrics.len(), "{what}");
    for (m, value) in metrics.iter().zip(values) {
        let want = match *m {
            "percentage" => pct(sums.visitors.len(), total),
            m => sums.metric(m),
        };
        assert_eq!(
            value, &want,
            "{what}: metric {m}: got {values:?}, sums {sums:?}"
        );
    }
}

/// The UTC Monday of a timestamp, as time:week labels it.
fn monday(ts: u32) -> String {
    let date = jiff::Timestamp::from_second(ts as i64)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let back = date.weekday().to_monday_zero_offset() as i64;
    date.checked_sub(jiff::ToSpan::days(back))
        .unwrap()
        .to_string()
}

pub async fn dimensions(s: &Service) {
    let hour = local_label("UTC", "%Y-%m-%d %H:00:00");
    let day = local_label("UTC", "%Y-%m-%d");
    let month = local_label("UTC", "%Y-%m-01");
    let week_label = |ts: u32| monday(ts);
    let mut dims: Vec<(Option<&str>, Key)> = vec![(None, Key::Total)];
    for p in PROPERTIES.iter().chain(&["event:goal"]) {
        dims.push((Some(p), Key::Property(p)));
    }
    dims.extend([
        (Some("time:hour"), Key::Bucket(&hour)),
        (Some("time:day"), Key::Bucket(&day)),
        (Some("time"), Key::Bucket(&day)),
        (Some("time:week"), Key::Bucket(&week_label)),
        (Some("time:month"), Key::Bucket(&month)),
    ]);
    let total = expected(&s.fixture, SITE, week(), &[], Key::Total, 0)[""]
        .visitors
        .len();
    for (dimension, key) in dims {
        let time = dimension.is_some_and(|d| d.starts_with("time"));
        let per_event = matches!(dimension, Some("event:name" | "event:goal"));
        let mut metrics: Vec<&str> = METRICS
            .iter()
            .copied()
            .filter(|m| !per_event || !matches!(*m, "time_on_page" | "scroll_depth"))
            .collect();
        if dimension.is_some() {
            metrics.push("percentage");
        }
        let got = s
            .v2(json!({
                "site_id": SITE, "metrics": metrics, "date_range": ["2026-03-24", "2026-03-31"],
                "dimensions": dimension.into_iter().collect::<Vec<_>>(),
            }))
            .await;
        let want = expected(&s.fixture, SITE, week(), &[], key, 0);
        // Breakdowns by the first metric, descending; time in order.
        let want: Vec<(&String, &Sums)> = if time {
            want.iter().collect()
        } else {
            sorted(&want)
        };
        let got_rows = rows(&got);
        let keys: Vec<&str> = got_rows.iter().map(|(k, _)| k.as_str()).collect();
        let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, want_keys, "{dimension:?}");
        for ((k, values), (_, sums)) in got_rows.iter().zip(&want) {
            check_metrics(&format!("{dimension:?}={k}"), &metrics, values, sums, total);
        }
        if dimension == Some("time") {
            assert_eq!(got["query"]["dimensions"], json!(["time:day"]), "{got}");
        }
        println!(
            "v2 by {dimension:?}: {} rows, all metrics equal",
            keys.len()
        );
    }
}

pub async fn goals(s: &Service) {
    let total = expected(&s.fixture, SITE, week(), &[], Key::Total, 0)[""]
        .visitors
        .len();
    // By goal: the goal's visitors of all the period's; per group the same denominator.
    let got = s
        .v2(json!({
            "site_id": SITE, "date_range": ["2026-03-24", "2026-03-31"],
            "metrics": ["visitors", "events", "conversion_rate", "group_conversion_rate"],
            "dimensions": ["event:goal"],
        }))
        .await;
    let want = expected(
        &s.fixture,
        SITE,
        week(),
        &[],
        Key::Property("event:goal"),
        0,
    );
    let got_rows = rows(&got);
    assert_eq!(got_rows.len(), GOALS.len(), "{got}");
    for ((goal, values), (k, sums)) in got_rows.iter().zip(sorted(&want)) {
        assert_eq!(goal, k);
        let rate = pct(sums.visitors.len(), total);
        assert_eq!(
            values,
            &vec![
                json!(sums.visitors.len()),
                json!(sums.events),
                rate.clone(),
                rate
            ],
            "{goal}"
        );
    }
    // A goal filter by source: conversion of all visitors, and of the source's.
    let got = s
        .v2(json!({
            "site_id": SITE, "date_range": ["2026-03-24", "2026-03-31"],
            "metrics": ["visitors", "conversion_rate", "group_conversion_rate"],
            "filters": [["is", "event:goal", ["Signup"]]],
            "dimensions": ["visit:source"],
        }))
        .await;
    let signup = [Filter::new("event:goal", "is", &["Signup"])];
    let converted = expected(
        &s.fixture,
        SITE,
        week(),
        &signup,
        Key::Property("visit:source"),
        0,
    );
    let by_source = expected(
        &s.fixture,
        SITE,
        week(),
        &[],
        Key::Property("visit:source"),
        0,
    );
    let got_rows = rows(&got);
    assert!(!got_rows.is_empty());
    for ((source, values), (k, sums)) in got_rows.iter().zip(sorted(&converted)) {
        assert_eq!(source, k);
        let of_source = by_source[k].visitors.len();
        assert!(
            of_source > sums.visitors.len(),
            "{source}: some did not sign up"
        );
        assert_eq!(
            values,
            &vec![
                json!(sums.visitors.len()),
                pct(sums.visitors.len(), total),
                pct(sums.visitors.len(), of_source)
            ],
            "{source}"
        );
    }
    // By day: each day's converted visitors of that day's, both rates (as v1's timeseries).
    let got = s
        .v2(json!({
            "site_id": SITE, "date_range": ["2026-03-24", "2026-03-31"],
            "metrics": ["visitors", "conversion_rate", "group_conversion_rate"],
            "filters": [["is", "event:goal", ["Signup"]]],
            "dimensions": ["time:day"],
        }))
        .await;
    let day = local_label("UTC", "%Y-%m-%d");
    let converted = expected(&s.fixture, SITE, week(), &signup, Key::Bucket(&day), 0);
    let by_day = expected(&s.fixture, SITE, week(), &[], Key::Bucket(&day), 0);
    let days = rows(&got);
    assert_eq!(days.len(), converted.len(), "{got}");
    for ((label, values), (k, sums)) in days.iter().zip(&converted) {
        assert_eq!(label, k);
        let rate = pct(sums.visitors.len(), by_day[k].visitors.len());
        assert_eq!(
            values,
            &vec![json!(sums.visitors.len()), rate.clone(), rate],
            "{label}"
        );
    }
    println!(
        "v2 goals: {} goals, {} sources and {} days with conversions",
        GOALS.len(),
        got_rows.len(),
        days.len()
    );
}

fn leaf(property: &'static str, op: &'static str, values: &[&'static str]) -> Cond {
    Cond::Leaf(Filter::new(property, op, values))
}

pub async fn filters(s: &Service) {
    let not = |c: Cond| Cond::Not(Box::new(c));
    let cases: Vec<(Value, Cond)> = vec![
        (
            json!([["is", "event:page", ["/pricing", "/docs"]]]),
            leaf("event:page", "is", &["/pricing", "/docs"]),
        ),
        (
            json!([["is_not", "visit:country", ["DE"]]]),
            leaf("visit:country", "is_not", &["DE"]),
        ),
        (
            json!([["contains", "visit:source", ["oo", "news"]]]),
            leaf("visit:source", "contains", &["oo", "news"]),
        ),
        (
            json!([["contains_not", "event:page", ["blog"]]]),
            leaf("event:page", "contains_not", &["blog"]),
        ),
        (
            json!([["matches", "event:page", ["^/blog/[ab]$"]]]),
            leaf("event:page", "matches", &["^/blog/[ab]$"]),
        ),
        (
            json!([["matches_not", "visit:browser", ["^(Fire|Chr)"]]]),
            leaf("visit:browser", "matches_not", &["^(Fire|Chr)"]),
        ),
        (
            json!([["is_not", "visit:exit_page", ["/docs"]]]),
            leaf("visit:exit_page", "is_not", &["/docs"]),
        ),
        (
            json!([["matches", "event:props:plan", ["^p"]]]),
            leaf("event:props:plan", "matches", &["^p"]),
        ),
        (
            json!([["not", ["is", "event:name", ["pageview"]]]]),
            not(leaf("event:name", "is", &["pageview"])),
        ),
        (
            json!([[
                "or",
                [
                    ["is", "visit:device", ["mobile"]],
                    ["is", "event:page", ["/pricing"]]
                ]
            ]]),
            Cond::Or(vec![
                leaf("visit:device", "is", &["mobile"]),
                leaf("event:page", "is", &["/pricing"]),
            ]),
        ),
        (
            json!([[
                "not",
                [
                    "or",
                    [
                        ["is", "visit:country", ["DE"]],
                        ["contains", "event:page", ["blog"]]
                    ]
                ]
            ]]),
            not(Cond::Or(vec![
                leaf("visit:country", "is", &["DE"]),
                leaf("event:page", "contains", &["blog"]),
            ])),
        ),
        (
            json!([[
                "or",
                [
                    [
                        "and",
                        [
                            ["is", "visit:device", ["desktop"]],
                            ["is", "event:props:plan", ["pro"]]
                        ]
                    ],
                    ["matches", "visit:city", ["^San"]]
                ]
            ]]),
            Cond::Or(vec![
                Cond::And(vec![
                    leaf("visit:device", "is", &["desktop"]),
                    leaf("event:props:plan", "is", &["pro"]),
                ]),
                leaf("visit:city", "matches", &["^San"]),
            ]),
        ),
        (
            json!([["not", ["is", "event:goal", ["Visit /blog/*"]]]]),
            not(leaf("event:goal", "is", &["Visit /blog/*"])),
        ),
        (
            json!([["contains_not", "event:goal", ["Visit"]]]),
            leaf("event:goal", "contains_not", &["Visit"]),
        ),
        (
            json!([
                ["is", "visit:country", ["DE", "FR"]],
                ["not", ["is", "event:page", ["/"]]],
                ["not", ["not", ["contains", "visit:os", ["n"]]]]
            ]),
            Cond::And(vec![
                leaf("visit:country", "is", &["DE", "FR"]),
                not(leaf("event:page", "is", &["/"])),
                not(not(leaf("visit:os", "contains", &["n"]))),
            ]),
        ),
    ];
    let all = expected(&s.fixture, SITE, week(), &[], Key::Total, 0)[""].clone();
    for (filters, condition) in cases {
        let question = |metrics: &[&str], dimension: Option<&str>| {
            json!({
                "site_id": SITE, "date_range": ["2026-03-24", "2026-03-31"], "metrics": metrics,
                "filters": filters, "dimensions": dimension.into_iter().collect::<Vec<_>>(),
            })
        };
        let got = s.v2(question(&METRICS, None)).await;
        let want = expected_where(&s.fixture, SITE, week(), &condition, Key::Total, 0);
        let sums = want.get("").cloned().unwrap_or_default();
        // Each filter keeps some of the traffic and leaves some out.
        assert!(
            !sums.visitors.is_empty() && sums.visitors.len() < all.visitors.len()
                || sums.events < all.events,
            "{filters}: {sums:?}"
        );
        check_metrics(&filters.to_string(), &METRICS, &rows(&got)[0].1, &sums, 0);
        for dimension in ["visit:source", "event:page", "visit:exit_page"] {
            let metrics = ["visitors", "visits", "pageviews", "bounce_rate"];
            let got = s.v2(question(&metrics, Some(dimension))).await;
            let want = expected_where(
                &s.fixture,
                SITE,
                week(),
                &condition,
                Key::Property(dimension),
                0,
            );
            let want = sorted(&want);
            let got_rows = rows(&got);
            let keys: Vec<&str> = got_rows.iter().map(|(k, _)| k.as_str()).collect();
            let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, want_keys, "{filters} by {dimension}");
            for ((k, values), (_, sums)) in got_rows.iter().zip(&want) {
                check_metrics(
                    &format!("{filters} {dimension}={k}"),
                    &metrics,
                    values,
                    sums,
                    0,
                );
            }
        }
        println!("v2 filter {filters}: {} visitors", sums.visitors.len());
    }
}

fn date(s: &str) -> Date {
    s.parse().unwrap()
}

pub async fn date_ranges(s: &Service) {
    let retention = glimpse_core::site::SiteConfig::new(SITE).retention_days as i64;
    let all_first = date("2026-03-31")
        .checked_sub(jiff::ToSpan::days(retention - 1))
        .unwrap()
        .to_string();
    let dates = |first: &str, last: &str| (first.to_string(), last.to_string());
    let cases: Vec<(Value, (String, String))> = vec![
        (json!("day"), dates("2026-03-31", "2026-03-31")),
        (json!("7d"), dates("2026-03-25", "2026-03-31")),
        (json!("28d"), dates("2026-03-04", "2026-03-31")),
        (json!("30d"), dates("2026-03-02", "2026-03-31")),
        (json!("91d"), dates("2025-12-31", "2026-03-31")),
        (json!("month"), dates("2026-03-01", "2026-03-31")),
        (json!("6mo"), dates("2025-10-01", "2026-03-31")),
        (json!("12mo"), dates("2025-04-01", "2026-03-31")),
        (json!("year"), dates("2026-01-01", "2026-12-31")),
        (json!("all"), (all_first, "2026-03-31".to_string())),
        (
            json!(["2026-03-26", "2026-03-28"]),
            dates("2026-03-26", "2026-03-28"),
        ),
    ];
    let metrics = ["visitors", "visits", "pageviews", "bounce_rate"];
    for (range, (first, last)) in cases {
        let got = s
            .v2(json!({"site_id": SITE, "metrics": metrics, "date_range": range, "date": "2026-03-31"}))
            .await;
        let want = expected(
            &s.fixture,
            SITE,
            day_range("UTC", &first, &last),
            &[],
            Key::Total,
            0,
        );
        let sums = want.get("").cloned().unwrap_or_default();
        check_metrics(&range.to_string(), &metrics, &rows(&got)[0].1, &sums, 0);
        assert_eq!(
            got["query"]["date_range"],
            json!([
                format!("{first}T00:00:00+00:00"),
                format!("{last}T23:59:59+00:00")
            ]),
            "{range}"
        );
        println!(
            "v2 date_range {range}: {first}..{last}, {} visitors",
            sums.visitors.len()
        );
    }
    // Date-times: exact seconds, the second inclusive; without an offset, the site's zone.
    let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_second();
    for (site, key, range, (start, end)) in [
        (
            SITE,
            &s.key,
            json!(["2026-03-27T12:00:00+01:00", "2026-03-28T11:59:59+01:00"]),
            (at("2026-03-27T11:00:00Z"), at("2026-03-28T11:00:00Z")),
        ),
        (
            BERLIN,
            &s.berlin_key,
            json!(["2026-03-29 00:00:00", "2026-03-29 23:59:59"]),
            day_range("Europe/Berlin", "2026-03-29", "2026-03-29"),
        ),
    ] {
        let got = s
            .v2_at(
                &s.base,
                key,
                json!({"site_id": site, "metrics": metrics, "date_range": range}),
            )
            .await;
        let want = expected(&s.fixture, site, (start, end), &[], Key::Total, 0);
        let sums = want.get("").cloned().unwrap_or_default();
        assert!(!sums.visitors.is_empty(), "{range}");
        check_metrics(&range.to_string(), &metrics, &rows(&got)[0].1, &sums, 0);
        println!("v2 date_range {range}: {} visitors", sums.visitors.len());
    }
}

pub async fn include_pagination_order(s: &Service) {
    // A breakdown ordered by two keys, one page of it, and how many rows there are in all.
    let metrics = ["visitors", "pageviews"];
    let got = s
        .v2(json!({
            "site_id": SITE, "date_range": ["2026-03-24", "2026-03-31"], "metrics": metrics,
            "dimensions": ["visit:browser_version"],
            "order_by": [["pageviews", "asc"], ["visit:browser_version", "desc"]],
            "pagination": {"limit": 2, "offset": 1}, "include": {"total_rows": true},
        }))
        .await;
    let want = expected(
        &s.fixture,
        SITE,
        week(),
        &[],
        Key::Property("visit:browser_version"),
        0,
    );
    let mut ordered: Vec<(&String, &Sums)> = want.iter().collect();
    ordered.sort_by(|a, b| a.1.pageviews.cmp(&b.1.pageviews).then(b.0.cmp(a.0)));
    let page: Vec<(String, Vec<Value>)> = ordered
        .iter()
        .skip(1)
        .take(2)
        .map(|(k, sums)| {
            (
                (*k).clone(),
                vec![json!(sums.visitors.len()), json!(sums.pageviews)],
            )
        })
        .collect();
    assert_eq!(rows(&got), page, "{got}");
    assert_eq!(got["meta"]["total_rows"], json!(want.len()));
    assert_eq!(got["query"]["pagination"], json!({"limit": 2, "offset": 1}));

    // Time: every label listed, only buckets with figures answered, ordered and paged here.
    let got = s
        .v2(json!({
            "site_id": SITE, "date_range": ["2026-03-22", "2026-03-31"], "metrics": ["pageviews"],
            "dimensions": ["time:day"], "order_by": [["pageviews", "desc"]],
            "pagination": {"limit": 3}, "include": {"time_labels": true, "total_rows": true},
        }))
        .await;
    let labels: Vec<String> = (22..=31).map(|d| format!("2026-03-{d:02}")).collect();
    assert_eq!(got["meta"]["time_labels"], json!(labels));
    let by_day = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-22", "2026-03-31"),
        &[],
        Key::Bucket(&local_label("UTC", "%Y-%m-%d")),
        0,
    );
    assert_eq!(
        got["meta"]["total_rows"],
        json!(by_day.len()),
        "days with figures"
    );
    let mut ordered: Vec<(&String, &Sums)> = by_day.iter().collect();
    ordered.sort_by(|a, b| b.1.pageviews.cmp(&a.1.pageviews).then(a.0.cmp(b.0)));
    let top: Vec<(String, Vec<Value>)> = ordered
        .iter()
        .take(3)
        .map(|(k, sums)| ((*k).clone(), vec![json!(sums.pageviews)]))
        .collect();
    assert_eq!(rows(&got), top, "{got}");

    // Imports: included where they can answer, a warning where they cannot.
    let got = s
        .v2(json!({"site_id": SITE, "date_range": "7d", "metrics": ["visitors"], "include": {"imports": true}}))
        .await;
    assert_eq!(got["meta"]["imports_included"], json!(true), "{got}");
    assert!(got["meta"].get("imports_warning").is_none());
    let got = s
        .v2(json!({"site_id": SITE, "date_range": "7d", "metrics": ["visitors"], "include": {"imports": true},
            "filters": [["is", "visit:country", ["DE"]]]}))
        .await;
    assert_eq!(got["meta"]["imports_included"], json!(false), "{got}");
    assert!(got["meta"]["imports_warning"]
        .as_str()
        .unwrap()
        .contains("filtered"));
    println!(
        "v2 include/pagination/order: pages, total_rows, time_labels, imports meta as expected"
    );
}

/// The v1 answer's metric values of one row, in `metrics` order (`value` on aggregates).
fn v1_values(row: &Value, metrics: &[&str]) -> Vec<Value> {
    metrics
        .iter()
        .map(|m| match &row[*m] {
            Value::Object(o) => o["value"].clone(),
            v => v.clone(),
        })
        .collect()
}

pub async fn same_as_v1(s: &Service) {
    let all = METRICS.join(",");
    let v2_base = |metrics: &[&str], filters: Value| json!({"site_id": SITE, "date_range": ["2026-03-24", "2026-03-31"], "metrics": metrics, "filters": filters});
    let mut questions = 0;
    // Aggregates.
    for (v1_filters, v2_filters, metrics) in [
        (
            "visit:country==DE;event:page~blog",
            json!([
                ["is", "visit:country", ["DE"]],
                ["contains", "event:page", ["blog"]]
            ]),
            all.as_str(),
        ),
        (
            "event:goal==Signup|Visit /pricing",
            json!([["is", "event:goal", ["Signup", "Visit /pricing"]]]),
            "visitors,events,conversion_rate",
        ),
        (
            "visit:exit_page!=/docs",
            json!([["is_not", "visit:exit_page", ["/docs"]]]),
            all.as_str(),
        ),
    ] {
        let mut q = vec![
            ("site_id", SITE),
            ("metrics", metrics),
            ("filters", v1_filters),
        ];
        q.extend_from_slice(&WEEK);
        let v1 = s.json("/api/v1/stats/aggregate", &q).await;
        let list: Vec<&str> = metrics.split(',').collect();
        let v2 = s.v2(v2_base(&list, v2_filters)).await;
        assert_eq!(
            rows(&v2)[0].1,
            v1_values(&v1["results"], &list),
            "{v1_filters}"
        );
        questions += 1;
    }
    // Timeseries: v2 answers the buckets with figures, v1 every bucket.
    for (interval, dimension, filters) in [
        ("date", "time:day", ""),
        ("hour", "time:hour", "visit:device==mobile"),
        ("week", "time:week", "event:goal==Signup"),
    ] {
        let metrics: &str = if filters.starts_with("event:goal") {
            "visitors,conversion_rate"
        } else {
            &all
        };
        let mut q = vec![
            ("site_id", SITE),
            ("metrics", metrics),
            ("interval", interval),
        ];
        q.extend_from_slice(&WEEK);
        let mut v2_filters = json!([]);
        if let Some((property, value)) = filters.split_once("==") {
            q.push(("filters", filters));
            v2_filters = json!([["is", property, [value]]]);
        }
        let v1 = s.json("/api/v1/stats/timeseries", &q).await;
        let list: Vec<&str> = metrics.split(',').collect();
        let mut body = v2_base(&list, v2_filters);
        body["dimensions"] = json!([dimension]);
        let v2 = s.v2(body).await;
        let v1_rows: BTreeMap<String, Vec<Value>> = v1["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["date"].as_str().unwrap().to_string(), v1_values(r, &list)))
            .collect();
        let v2_rows = rows(&v2);
        assert!(!v2_rows.is_empty());
        for (label, values) in &v2_rows {
            assert_eq!(
                Some(values),
                v1_rows.get(label),
                "{interval} {filters} {label}"
            );
        }
        // The buckets v2 leaves out have nothing in v1.
        for (label, values) in &v1_rows {
            if !v2_rows.iter().any(|(l, _)| l == label) {
                assert_eq!(values[0], json!(0), "{interval} {label}: {values:?}");
            }
        }
        questions += 1;
    }
    // Breakdowns, sorted and paged alike, and goals with their conversion rates.
    for (property, metrics, sort, page, filters) in [
        ("visit:source", all.as_str(), "bounce_rate:asc", 2, ""),
        (
            "event:page",
            "visitors,visits,time_on_page",
            "visits:desc",
            1,
            "visit:country!=US",
        ),
        (
            "event:goal",
            "visitors,events,conversion_rate",
            "visitors:desc",
            1,
            "",
        ),
        (
            "visit:device",
            "visitors,conversion_rate",
            "visitors:desc",
            1,
            "event:goal==Signup",
        ),
    ] {
        let mut q = vec![
            ("site_id", SITE),
            ("property", property),
            ("metrics", metrics),
            ("sort", sort),
            ("limit", "2"),
        ];
        let page_text = page.to_string();
        q.push(("page", &page_text));
        q.extend_from_slice(&WEEK);
        let mut v2_filters = json!([]);
        if let Some((p, value)) = filters.split_once("!=") {
            q.push(("filters", filters));
            v2_filters = json!([["is_not", p, [value]]]);
        } else if let Some((p, value)) = filters.split_once("==") {
            q.push(("filters", filters));
            v2_filters = json!([["is", p, [value]]]);
        }
        let v1 = s.json("/api/v1/stats/breakdown", &q).await;
        let list: Vec<&str> = metrics.split(',').collect();
        let (name, direction) = sort.split_once(':').unwrap();
        let mut body = v2_base(&list, v2_filters);
        body["dimensions"] = json!([property]);
        body["order_by"] = json!([[name, direction]]);
        body["pagination"] = json!({"limit": 2, "offset": (page - 1) * 2});
        let v2 = s.v2(body).await;
        let key = property.rsplit(':').next().unwrap();
        let v1_rows: Vec<(String, Vec<Value>)> = v1["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[key].as_str().unwrap().to_string(), v1_values(r, &list)))
            .collect();
        assert_eq!(v1_rows.len(), 2, "{property}: {v1}");
        assert_eq!(rows(&v2), v1_rows, "{property} {sort} page {page}");
        questions += 1;
    }
    // Imported data asked for: the same answer (and the same warning when it cannot answer).
    for with_filter in [false, true] {
        let mut q = vec![
            ("site_id", SITE),
            ("metrics", "visitors,pageviews"),
            ("with_imported", "true"),
        ];
        q.extend_from_slice(&WEEK);
        let mut v2_filters = json!([]);
        if with_filter {
            q.push(("filters", "visit:country==DE"));
            v2_filters = json!([["is", "visit:country", ["DE"]]]);
        }
        let v1 = s.json("/api/v1/stats/aggregate", &q).await;
        let mut body = v2_base(&["visitors", "pageviews"], v2_filters);
        body["include"] = json!({"imports": true});
        let v2 = s.v2(body).await;
        assert_eq!(
            rows(&v2)[0].1,
            v1_values(&v1["results"], &["visitors", "pageviews"])
        );
        assert_eq!(
            v2["meta"]["imports_warning"],
            v1.get("warning").cloned().unwrap_or(Value::Null)
        );
        questions += 1;
    }
    // k-suppression: the same `(other)` rows.
    for property in ["visit:city", "event:page"] {
        let q = [
            ("site_id", SITE),
            ("property", property),
            ("metrics", "visitors,visits,pageviews"),
            ("period", "custom"),
            ("date", "2026-03-27,2026-03-27"),
        ];
        let v1 = s
            .json_at(&s.k_base, &s.key, "/api/v1/stats/breakdown", &q)
            .await;
        let v2 = s
            .v2_at(
                &s.k_base,
                &s.key,
                json!({
                    "site_id": SITE, "metrics": ["visitors", "visits", "pageviews"],
                    "date_range": ["2026-03-27", "2026-03-27"], "dimensions": [property],
                }),
            )
            .await;
        let key = property.rsplit(':').next().unwrap();
        let v1_rows: Vec<(String, Vec<Value>)> = v1["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[key].as_str().unwrap().to_string(),
                    v1_values(r, &["visitors", "visits", "pageviews"]),
                )
            })
            .collect();
        assert!(v1_rows.iter().any(|(k, _)| k == "(other)"), "{v1}");
        assert_eq!(rows(&v2), v1_rows, "k=3 {property}");
        questions += 1;
    }
    println!("v2 = v1 on {questions} questions");
}

pub async fn refusals_and_access(s: &Service) {
    let good = json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "7d"});
    let status = |r: (u16, Value)| r.0;
    // Who may ask, as for v1.
    assert_eq!(
        status(s.post_v2(&s.base, None, None, &good).await),
        401,
        "no key"
    );
    assert_eq!(
        status(s.post_v2(&s.base, Some("glimpse_00"), None, &good).await),
        401,
        "wrong key"
    );
    assert_eq!(
        status(s.post_v2(&s.base, Some(&s.berlin_key), None, &good).await),
        403,
        "other site's key"
    );
    let unknown = json!({"site_id": "nope.example", "metrics": ["visitors"], "date_range": "7d"});
    assert_eq!(
        status(s.post_v2(&s.base, Some(&s.key), None, &unknown).await),
        404,
        "unknown site"
    );
    assert_eq!(
        status(s.post_v2(&s.base, None, Some(SHARE_TOKEN), &good).await),
        200,
        "share link"
    );
    let berlin = json!({"site_id": BERLIN, "metrics": ["visitors"], "date_range": "7d"});
    assert_eq!(
        status(s.post_v2(&s.base, None, Some(SHARE_TOKEN), &berlin).await),
        401,
        "share link, other site"
    );
    assert_eq!(
        status(
            s.post_v2(&s.base, Some(&s.operator_key), None, &berlin)
                .await
        ),
        200,
        "operator key"
    );
    // Bad requests: 400 naming the field.
    let with = |extra: Value| {
        let mut body = good.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (body, field, says) in [
        (
            with(json!({"metrics": ["visitors", "bogus"]})),
            "metrics",
            "#/metrics/1: Invalid metric \"bogus\"",
        ),
        (
            with(json!({"date_range": "1y"})),
            "date_range",
            "Invalid date range",
        ),
        (
            with(json!({"dimensions": ["visit:colour"]})),
            "dimensions",
            "visit:colour",
        ),
        (
            with(json!({"filters": [["equals", "event:page", ["/"]]]})),
            "filters",
            "#/filters/0/0",
        ),
        (
            with(json!({"filters": [["matches", "event:page", ["(unclosed"]]]})),
            "filters",
            "invalid regular expression",
        ),
        (
            with(json!({"include": {"comparisons": {"mode": "last_week"}}})),
            "include",
            "#/include/comparisons/mode",
        ),
        (
            with(json!({"pagination": {"limit": 10001}})),
            "pagination",
            "#/pagination/limit",
        ),
        (
            with(json!({"order_by": [["pageviews", "desc"]]})),
            "order_by",
            "neither a queried metric",
        ),
        (
            with(json!({"metrics": ["conversion_rate"]})),
            "metrics",
            "event:goal",
        ),
        (
            with(json!({"filters": [["is", "event:goal", ["Sign up"]]]})),
            "filters",
            "not one of the site's goals",
        ),
        (
            with(json!({"dimensions": ["event:page", "visit:source", "visit:device", "time"]})),
            "dimensions",
            "#/dimensions: at most 3 dimensions",
        ),
        (
            with(json!({"dimensions": ["event:page", "event:page"]})),
            "dimensions",
            "#/dimensions/1: \"event:page\" is asked for twice",
        ),
        (
            with(json!({"dimensions": ["time:day", "visit:source", "time:hour"]})),
            "dimensions",
            "#/dimensions/2: \"time:hour\" is a second time dimension",
        ),
        (
            with(json!({"dimensions": ["visit:exit_page", "visit:source"]})),
            "dimensions",
            "#/dimensions/0: visit:exit_page cannot be combined",
        ),
        (
            with(json!({"dimensions": ["time:day", "visit:source"],
                "include": {"comparisons": {"mode": "previous_period"}}})),
            "include",
            "#/include/comparisons: comparisons are not supported with a time dimension",
        ),
        (
            with(json!({"dimensions": ["event:goal", "visit:source"],
                "metrics": ["visitors", "group_conversion_rate"]})),
            "metrics",
            "#/metrics/1: Metric `group_conversion_rate` cannot be queried with event:goal",
        ),
        (
            with(json!({"dimensions": ["visit:source", "event:name"],
                "metrics": ["visitors", "scroll_depth"]})),
            "metrics",
            "#/metrics/1: Metric `scroll_depth` is measured per page",
        ),
        (with(json!({"interval": "day"})), "body", "unknown field"),
    ] {
        let (code, answer) = s.post_v2(&s.base, Some(&s.key), None, &body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["parameter"], json!(field), "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    // Not JSON, or too large: refused before anything runs.
    let response = s
        .http
        .post(format!("{}/api/v2/query", s.base))
        .bearer_auth(&s.key)
        .body("site_id=example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let huge = json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "7d",
        "filters": [["is", "event:page", ["x".repeat(70_000)]]]});
    assert_eq!(
        status(s.post_v2(&s.base, Some(&s.key), None, &huge).await),
        400,
        "body cap"
    );
    println!("v2 access: 401/403/404 as v1, share link own site only; 400s name the field");
}

/// Hostile text in every place a v2 query carries text: 200 with nothing found, or 400; the
/// events and tables are as they were.
pub async fn injection_attempts(s: &Service) {
    let tables = "SELECT toUInt64(count()) FROM system.tables WHERE database = 'glimpse'";
    let before = (
        s.ch.count("SELECT count() FROM glimpse.events").await,
        s.ch.count(tables).await,
    );
    let attacks = [
        "' OR '1'='1",
        "x'); DROP TABLE glimpse.events; --",
        "\\' UNION SELECT * FROM system.tables --",
        "`events`",
        "?",
        "\0",
        "') OR match(pathname, '.*') OR ('",
    ];
    let mut tried = 0;
    for attack in attacks {
        let regex = regex_literal(attack);
        let bodies = [
            json!({"filters": [["is", "event:page", [attack]]]}),
            json!({"filters": [["not", ["contains", "visit:source", [attack]]]], "dimensions": ["event:page"]}),
            json!({"filters": [["matches", "event:page", [regex]]]}),
            json!({"filters": [["is_not", format!("event:props:{attack}"), [attack]]]}),
            json!({"dimensions": [format!("event:props:{attack}")]}),
            json!({"order_by": [[attack, "desc"]]}),
            json!({"date_range": [attack, attack]}),
            json!({"site_id": attack}),
        ];
        for extra in bodies {
            let mut body = json!({"site_id": SITE, "metrics": ["visitors", "pageviews"],
                "date_range": ["2026-03-24", "2026-03-31"]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let (status, answer) = s.post_v2(&s.base, Some(&s.key), None, &body).await;
            tried += 1;
            match status {
                400 => assert!(answer["error"].is_string(), "{body}: {answer}"),
                200 => {
                    // Nothing matches a hostile value; a negative filter or a property
                    // breakdown keeps what there is, never more than the site's events.
                    let negative = body["filters"].to_string().contains("not");
                    let by_prop = body["dimensions"].to_string().contains("props");
                    for (_, values) in rows(&answer) {
                        if !negative && !by_prop {
                            assert_eq!(values, [json!(0), json!(0)], "{body}: {answer}");
                        }
                    }
                }
                other => panic!("{body}: status {other}: {answer}"),
            }
        }
    }
    let after = (
        s.ch.count("SELECT count() FROM glimpse.events").await,
        s.ch.count(tables).await,
    );
    assert_eq!(before, after, "rows and tables unchanged");
    println!("v2 injection: {tried} hostile queries, 200 with nothing or 400, data unchanged");
}

/// `text` as a regular expression matching it literally.
fn regex_literal(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ' ' {
                c.to_string()
            } else {
                format!("\\x{:02x}", c as u32)
            }
        })
        .collect()
}

/// Imported aggregates (two days before the fixture's): v2 with `include.imports` adds them as
/// v1 with `with_imported=true` does, for totals, days, sources and pages.
pub async fn imports_as_v1(s: &Service) {
    s.ch.client
        .query(
            "INSERT INTO glimpse.imported_daily (site, date, kind, source, page, visitors, visits, \
             pageviews, bounces, visit_duration, events) VALUES \
             ('example.com', '2026-03-10', 'visitors', '', '', 30, 35, 80, 12, 4200, 0), \
             ('example.com', '2026-03-11', 'visitors', '', '', 20, 22, 50, 9, 1800, 0), \
             ('example.com', '2026-03-10', 'sources', 'Google', '', 18, 20, 44, 7, 2000, 0), \
             ('example.com', '2026-03-11', 'sources', 'Hacker News', '', 11, 12, 30, 5, 900, 0), \
             ('example.com', '2026-03-10', 'pages', '', '/pricing', 9, 0, 25, 0, 0, 0), \
             ('example.com', '2026-03-11', 'pages', '', '/legacy', 4, 0, 6, 0, 0, 0)",
        )
        .execute()
        .await
        .unwrap();
    let month = [("period", "custom"), ("date", "2026-03-01,2026-03-31")];
    let metrics = [
        "visitors",
        "visits",
        "pageviews",
        "bounce_rate",
        "visit_duration",
    ];
    let list = metrics.join(",");
    let v2_body = |dimension: Option<&str>, metrics: &[&str]| {
        json!({"site_id": SITE, "metrics": metrics, "date_range": ["2026-03-01", "2026-03-31"],
            "dimensions": dimension.into_iter().collect::<Vec<_>>(), "include": {"imports": true}})
    };
    // Totals: the imported visitors are added, as v1 adds them.
    let mut q = vec![
        ("site_id", SITE),
        ("metrics", list.as_str()),
        ("with_imported", "true"),
    ];
    q.extend_from_slice(&month);
    let v1 = s.json("/api/v1/stats/aggregate", &q).await;
    let v2 = s.v2(v2_body(None, &metrics)).await;
    assert_eq!(rows(&v2)[0].1, v1_values(&v1["results"], &metrics));
    assert_eq!(v2["meta"]["imports_included"], json!(true));
    let live = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-01", "2026-03-31"),
        &[],
        Key::Total,
        0,
    )[""]
        .visitors
        .len();
    assert_eq!(rows(&v2)[0].1[0], json!(live + 50), "{v2}");
    // Days, sources and pages, each from its own table.
    for (dimension, v1_path, v1_extra, key) in [
        (
            "time:day",
            "/api/v1/stats/timeseries",
            ("interval", "date"),
            "date",
        ),
        (
            "visit:source",
            "/api/v1/stats/breakdown",
            ("property", "visit:source"),
            "source",
        ),
        (
            "event:page",
            "/api/v1/stats/breakdown",
            ("property", "event:page"),
            "page",
        ),
    ] {
        let metrics: &[&str] = if dimension == "event:page" {
            &["visitors", "pageviews", "percentage"]
        } else {
            &metrics
        };
        let v1_metrics: Vec<&str> = metrics
            .iter()
            .copied()
            .filter(|m| *m != "percentage")
            .collect();
        let v1_list = v1_metrics.join(",");
        let mut q = vec![
            ("site_id", SITE),
            ("metrics", v1_list.as_str()),
            ("with_imported", "true"),
            v1_extra,
        ];
        q.extend_from_slice(&month);
        let v1 = s.json(v1_path, &q).await;
        let v2 = s.v2(v2_body(Some(dimension), metrics)).await;
        let v2_rows = rows(&v2);
        let v1_rows: BTreeMap<String, Vec<Value>> = v1["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[key].as_str().unwrap().to_string(),
                    v1_values(r, &v1_metrics),
                )
            })
            .collect();
        for (label, values) in &v2_rows {
            assert_eq!(
                Some(&values[..v1_metrics.len()].to_vec()),
                v1_rows.get(label),
                "{dimension} {label}"
            );
        }
        let imported_key = match dimension {
            "time:day" => "2026-03-10",
            "visit:source" => "Hacker News",
            _ => "/legacy",
        };
        assert!(
            v2_rows.iter().any(|(k, _)| k == imported_key),
            "{dimension}: {v2}"
        );
        if dimension == "event:page" {
            // Percentages of the period's visitors, the imported ones included.
            let total = live + 50;
            for (label, values) in &v2_rows {
                let visitors = values[0].as_u64().unwrap() as usize;
                assert_eq!(values[2], pct(visitors, total), "{label}");
            }
        }
    }
    println!("v2 imports: totals, days, sources and pages as v1's with_imported");
}

/// The answer's rows as (dimension values, metric values).
fn tuple_rows(got: &Value) -> Vec<(Vec<String>, Vec<Value>)> {
    got["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {got}"))
        .iter()
        .map(|r| {
            let dimensions = r["dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_string())
                .collect();
            (dimensions, r["metrics"].as_array().unwrap().clone())
        })
        .collect()
}

/// An expected row's key as dimension values (`(other)` in each).
fn parts_of(key: &str, n: usize) -> Vec<String> {
    if key == "(other)" {
        return vec![key.to_string(); n];
    }
    key.split(PART_SEPARATOR).map(String::from).collect()
}

/// Several dimensions at once: two and three, with time, event and visit properties and
/// goals; each row's values in the order asked, its figures those of the fixture's events
/// and visits grouped by all of them; the default order (time first where asked, then
/// visitors descending); `total_rows`.
pub async fn several_dimensions(s: &Service) {
    let day = local_label("UTC", "%Y-%m-%d");
    let hour = local_label("UTC", "%Y-%m-%d %H:00:00");
    let month = local_label("UTC", "%Y-%m-01");
    let total = expected(&s.fixture, SITE, week(), &[], Key::Total, 0)[""]
        .visitors
        .len();
    let key = |name: &'static str| -> Key {
        match name {
            "time" | "time:day" => Key::Bucket(&day),
            "time:hour" => Key::Bucket(&hour),
            "time:month" => Key::Bucket(&month),
            p => Key::Property(p),
        }
    };
    for dimensions in [
        vec!["visit:source", "visit:country"],
        vec!["time:day", "visit:device"],
        vec!["event:page", "event:goal"],
        vec!["time", "event:props:plan"],
        vec!["visit:device", "event:page", "visit:source"],
        vec!["event:name", "visit:browser", "time:month"],
        vec!["visit:os", "time:hour", "event:page"],
    ] {
        let per_event = dimensions
            .iter()
            .any(|d| matches!(*d, "event:name" | "event:goal"));
        let mut metrics: Vec<&str> = METRICS
            .iter()
            .copied()
            .filter(|m| !per_event || !matches!(*m, "time_on_page" | "scroll_depth"))
            .collect();
        metrics.push("percentage");
        let got = s
            .v2(json!({
                "site_id": SITE, "metrics": metrics, "date_range": ["2026-03-24", "2026-03-31"],
                "dimensions": dimensions, "include": {"total_rows": true},
            }))
            .await;
        let want = expected(
            &s.fixture,
            SITE,
            week(),
            &[],
            Key::Tuple(dimensions.iter().map(|d| key(d)).collect()),
            0,
        );
        let n = dimensions.len();
        // Time first where asked (ascending), then visitors descending, then the values.
        let time = dimensions.iter().position(|d| d.starts_with("time"));
        let mut ordered: Vec<(Vec<String>, &Sums)> =
            want.iter().map(|(k, s)| (parts_of(k, n), s)).collect();
        ordered.sort_by(|a, b| {
            let by_time = time.map_or(std::cmp::Ordering::Equal, |i| a.0[i].cmp(&b.0[i]));
            by_time
                .then(b.1.visitors.len().cmp(&a.1.visitors.len()))
                .then(a.0.cmp(&b.0))
        });
        let got_rows = tuple_rows(&got);
        let keys: Vec<&Vec<String>> = got_rows.iter().map(|(k, _)| k).collect();
        let want_keys: Vec<&Vec<String>> = ordered.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, want_keys, "{dimensions:?}");
        assert!(want.len() > 5, "{dimensions:?}: a real breakdown");
        for ((k, values), (_, sums)) in got_rows.iter().zip(&ordered) {
            check_metrics(
                &format!("{dimensions:?}={k:?}"),
                &metrics,
                values,
                sums,
                total,
            );
        }
        assert_eq!(
            got["meta"]["total_rows"],
            json!(want.len()),
            "{dimensions:?}"
        );
        let answered: Vec<&str> = dimensions
            .iter()
            .map(|d| if *d == "time" { "time:day" } else { *d })
            .collect();
        assert_eq!(got["query"]["dimensions"], json!(answered));
        println!(
            "v2 by {dimensions:?}: {} rows in order, all metrics equal",
            keys.len()
        );
    }

    // Ordered by the second dimension then a metric, one page of it, with a filter.
    let got = s
        .v2(json!({
            "site_id": SITE, "metrics": ["visitors", "visits"],
            "date_range": ["2026-03-24", "2026-03-31"],
            "dimensions": ["visit:device", "event:page"],
            "filters": [["is_not", "visit:country", ["FR"]]],
            "order_by": [["event:page", "desc"], ["visits", "asc"]],
            "pagination": {"limit": 4, "offset": 3}, "include": {"total_rows": true},
        }))
        .await;
    let want = expected(
        &s.fixture,
        SITE,
        week(),
        &[Filter::new("visit:country", "is_not", &["FR"])],
        Key::Tuple(vec![
            Key::Property("visit:device"),
            Key::Property("event:page"),
        ]),
        0,
    );
    let mut ordered: Vec<(Vec<String>, &Sums)> =
        want.iter().map(|(k, s)| (parts_of(k, 2), s)).collect();
    ordered.sort_by(|a, b| {
        b.0[1]
            .cmp(&a.0[1])
            .then(a.1.visits.cmp(&b.1.visits))
            .then(a.0.cmp(&b.0))
    });
    let page: Vec<(Vec<String>, Vec<Value>)> = ordered
        .iter()
        .skip(3)
        .take(4)
        .map(|(k, sums)| {
            (
                k.clone(),
                vec![json!(sums.visitors.len()), json!(sums.visits)],
            )
        })
        .collect();
    assert_eq!(tuple_rows(&got), page, "{got}");
    assert_eq!(got["meta"]["total_rows"], json!(want.len()));

    // k-suppression (k = 3): rows under it merge into one `(other)` row, in every dimension.
    let day27 = day_range("UTC", "2026-03-27", "2026-03-27");
    let got = s
        .v2_at(
            &s.k_base,
            &s.key,
            json!({
                "site_id": SITE, "metrics": ["visitors", "visits", "pageviews"],
                "date_range": ["2026-03-27", "2026-03-27"],
                "dimensions": ["visit:device", "visit:country"],
            }),
        )
        .await;
    let want = expected(
        &s.fixture,
        SITE,
        day27,
        &[],
        Key::Tuple(vec![
            Key::Property("visit:device"),
            Key::Property("visit:country"),
        ]),
        3,
    );
    let want_rows: Vec<(Vec<String>, Vec<Value>)> = sorted(&want)
        .into_iter()
        .map(|(k, sums)| {
            (
                parts_of(k, 2),
                vec![
                    json!(sums.visitors.len()),
                    json!(sums.visits),
                    json!(sums.pageviews),
                ],
            )
        })
        .collect();
    assert!(
        want_rows
            .iter()
            .any(|(k, _)| k[0] == "(other)" && k[1] == "(other)"),
        "{want_rows:?}"
    );
    assert_eq!(tuple_rows(&got), want_rows, "k=3");

    // Comparisons match rows on all their dimensions: the previous four days' row of the same
    // source and device, zero where that pair had nothing.
    let got = s
        .v2(json!({
            "site_id": SITE, "metrics": ["visitors", "visits"],
            "date_range": ["2026-03-28", "2026-03-31"],
            "dimensions": ["visit:source", "visit:device"],
            "include": {"comparisons": {"mode": "previous_period"}},
        }))
        .await;
    let pair = || {
        Key::Tuple(vec![
            Key::Property("visit:source"),
            Key::Property("visit:device"),
        ])
    };
    let now = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-28", "2026-03-31"),
        &[],
        pair(),
        0,
    );
    let then = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-27"),
        &[],
        pair(),
        0,
    );
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), now.len(), "{got}");
    let mut missing_then = 0;
    for (row, (k, sums)) in results.iter().zip(sorted(&now)) {
        let parts = parts_of(k, 2);
        assert_eq!(row["dimensions"], json!(parts));
        assert_eq!(
            row["metrics"],
            json!([sums.visitors.len(), sums.visits]),
            "{k}"
        );
        let before = then.get(k).cloned().unwrap_or_default();
        missing_then += usize::from(!then.contains_key(k));
        assert_eq!(row["comparison"]["dimensions"], json!(parts), "{row}");
        assert_eq!(
            row["comparison"]["metrics"],
            json!([before.visitors.len(), before.visits]),
            "{row}"
        );
    }
    println!(
        "v2 several dimensions: order_by a dimension, page, filter, k = 3 (other), \
         comparisons on both values ({missing_then} pairs new in the period)"
    );
}

/// `{"case_sensitive": false}`: each operator and its negation, on events, visits and goals,
/// nested in `not`; the figures those of the fixture's events matched whatever the case, and
/// different from the case-sensitive answer where the case differs.
pub async fn case_insensitive_filters(s: &Service) {
    let ci = json!({"case_sensitive": false});
    let leaf = |op: &'static str, property: &'static str, values: &[&'static str]| {
        (
            json!([op, property, values, ci]),
            Filter::new(property, op, values).ignoring_case(),
        )
    };
    let cases = [
        vec![leaf("contains", "event:page", &["/BLOG"])],
        vec![leaf("contains_not", "event:page", &["/Blog/A", "DOCS"])],
        vec![leaf("is", "visit:country", &["de", "Fr"])],
        vec![
            leaf("is_not", "visit:source", &["google"]),
            leaf("matches", "event:page", &["^/(PRICING|Docs)$"]),
        ],
        vec![leaf("matches_not", "visit:browser", &["^fire"])],
        vec![leaf("is", "event:goal", &["signup"])],
        vec![leaf("contains", "event:props:plan", &["PR"])],
    ];
    let metrics = ["visitors", "visits", "pageviews", "events", "bounce_rate"];
    for case in cases {
        let filters: Vec<Value> = case.iter().map(|(json, _)| json.clone()).collect();
        let expected_filters: Vec<Filter> = case.iter().map(|(_, f)| f.clone()).collect();
        let got = s
            .v2(json!({
                "site_id": SITE, "metrics": metrics, "date_range": ["2026-03-24", "2026-03-31"],
                "filters": filters, "dimensions": ["visit:device"],
            }))
            .await;
        let want = expected(
            &s.fixture,
            SITE,
            week(),
            &expected_filters,
            Key::Property("visit:device"),
            0,
        );
        assert!(!want.is_empty(), "{filters:?}: the fixture has matches");
        let want_rows: Vec<(String, Vec<Value>)> = sorted(&want)
            .into_iter()
            .map(|(k, sums)| (k.clone(), metrics.iter().map(|m| sums.metric(m)).collect()))
            .collect();
        assert_eq!(rows(&got), want_rows, "{filters:?}");
        println!(
            "v2 case-insensitive {filters:?}: {} rows as expected",
            want_rows.len()
        );
    }
    // The case matters without the modifier: `/BLOG` is no page of the fixture's.
    let sensitive = s
        .v2(json!({
            "site_id": SITE, "metrics": ["visitors"], "date_range": ["2026-03-24", "2026-03-31"],
            "filters": [["contains", "event:page", ["/BLOG"]]],
        }))
        .await;
    assert_eq!(rows(&sensitive)[0].1, vec![json!(0)], "{sensitive}");
    let insensitive = s
        .v2(json!({
            "site_id": SITE, "metrics": ["visitors"], "date_range": ["2026-03-24", "2026-03-31"],
            "filters": [["contains", "event:page", ["/BLOG"], {"case_sensitive": true}]],
        }))
        .await;
    assert_eq!(rows(&insensitive)[0].1, vec![json!(0)], "explicit true");
    // Nested: not (country is "de" whatever the case, or page contains "/blog").
    let tree = Cond::Not(Box::new(Cond::Or(vec![
        Cond::Leaf(Filter::new("visit:country", "is", &["de"]).ignoring_case()),
        Cond::Leaf(Filter::new("event:page", "contains", &["/BLOG"]).ignoring_case()),
    ])));
    let got = s
        .v2(json!({
            "site_id": SITE, "metrics": ["visitors", "pageviews"],
            "date_range": ["2026-03-24", "2026-03-31"],
            "filters": [["not", ["or", [
                ["is", "visit:country", ["de"], ci],
                ["contains", "event:page", ["/BLOG"], ci],
            ]]]],
        }))
        .await;
    let want = &expected_where(&s.fixture, SITE, week(), &tree, Key::Total, 0)[""];
    assert_eq!(
        rows(&got)[0].1,
        vec![json!(want.visitors.len()), json!(want.pageviews)],
        "{got}"
    );
    println!("v2 case-insensitive: nested in not/or as expected; case-sensitive /BLOG finds none");
}

/// `match_day_of_week`: Saturday 28 to Tuesday 31 March faces the four days from the nearest
/// earlier Saturday (21 to 24 March; the later one is the period's own start), not the
/// calendar's previous four (Tuesday 24 to Friday 27).
pub async fn match_day_of_week(s: &Service) {
    let ask = |matched: bool| {
        json!({
            "site_id": SITE, "metrics": ["visitors", "pageviews"],
            "date_range": ["2026-03-28", "2026-03-31"], "dimensions": ["visit:device"],
            "include": {"comparisons": {"mode": "previous_period", "match_day_of_week": matched}},
        })
    };
    for (matched, first, last) in [
        (true, "2026-03-21", "2026-03-24"),
        (false, "2026-03-24", "2026-03-27"),
    ] {
        let got = s.v2(ask(matched)).await;
        assert_eq!(
            got["meta"]["comparison_date_range"],
            json!([
                format!("{first}T00:00:00+00:00"),
                format!("{last}T23:59:59+00:00")
            ]),
            "{got}"
        );
        let then = expected(
            &s.fixture,
            SITE,
            day_range("UTC", first, last),
            &[],
            Key::Property("visit:device"),
            0,
        );
        for row in got["results"].as_array().unwrap() {
            let device = row["dimensions"][0].as_str().unwrap();
            let before = then.get(device).cloned().unwrap_or_default();
            assert_eq!(
                row["comparison"]["metrics"],
                json!([before.visitors.len(), before.pageviews]),
                "{matched} {device}"
            );
        }
    }
    println!("v2 match_day_of_week: compared with 21-24 March (Saturday on), else 24-27");
}
