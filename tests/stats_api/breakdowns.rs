//! Breakdowns by every property, filters, k-anonymity, pagination and sort, goals.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::expected::{day_range, expected, sorted, Filter, Key, Sums, ALL_METRICS, GOALS};
use crate::service::{check_row, Service};
use crate::{SITE, WEEK};

pub const PROPERTIES: [&str; 21] = [
    "event:page",
    "event:name",
    "event:hostname",
    "event:props:plan",
    "visit:entry_page",
    "visit:exit_page",
    "visit:source",
    "visit:referrer",
    "visit:utm_source",
    "visit:utm_medium",
    "visit:utm_campaign",
    "visit:utm_term",
    "visit:utm_content",
    "visit:country",
    "visit:region",
    "visit:city",
    "visit:device",
    "visit:browser",
    "visit:browser_version",
    "visit:os",
    "visit:os_version",
];

pub fn result_key(property: &str) -> &str {
    property.rsplit(':').next().unwrap()
}

pub async fn check_breakdown(
    s: &Service,
    property: &str,
    filters: &[Filter],
    metrics: &str,
) -> usize {
    let range = day_range("UTC", "2026-03-24", "2026-03-31");
    let filter_text = Filter::query(filters);
    let mut q = vec![
        ("site_id", SITE),
        ("property", property),
        ("metrics", metrics),
        ("limit", "1000"),
    ];
    q.extend_from_slice(&WEEK);
    if !filters.is_empty() {
        q.push(("filters", &filter_text));
    }
    let got = s.json("/api/v1/stats/breakdown", &q).await;
    let want = expected(&s.fixture, SITE, range, filters, Key::Property(property), 0);
    check_breakdown_rows(&filter_text, &got, &want, property, metrics)
}

/// A breakdown's rows are the expected keys, in order, each with the expected `metrics`;
/// returns how many.
pub fn check_breakdown_rows(
    what: &str,
    got: &Value,
    want: &BTreeMap<String, Sums>,
    property: &str,
    metrics: &str,
) -> usize {
    let want = sorted(want);
    let results = got["results"].as_array().unwrap();
    let keys: Vec<&str> = results
        .iter()
        .map(|r| r[result_key(property)].as_str().unwrap())
        .collect();
    let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, want_keys, "{property} {what}");
    for (row, (k, sums)) in results.iter().zip(&want) {
        check_row(&format!("{property}={k} {what}"), row, sums, metrics);
    }
    results.len()
}

pub async fn breakdowns(s: &Service) {
    for property in PROPERTIES {
        let metrics = if property == "event:name" {
            "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events"
        } else {
            ALL_METRICS
        };
        let n = check_breakdown(s, property, &[], metrics).await;
        // Without visit metrics the statement reads no visits: the same event figures.
        check_breakdown(s, property, &[], "visitors,pageviews,events").await;
        // Visit metrics without engagement ones: the reports are left out of the scan.
        check_breakdown(
            s,
            property,
            &[],
            "visitors,visits,bounce_rate,visit_duration,views_per_visit",
        )
        .await;
        println!("breakdown {property}: {n} rows, all metrics equal");
    }
}

pub async fn filters(s: &Service) {
    let cases = [
        vec![Filter::new("event:page", "==", &["/pricing", "/docs"])],
        vec![Filter::new("event:page", "!=", &["/"])],
        vec![Filter::new("event:page", "~", &["blog"])],
        vec![Filter::new("event:name", "==", &["Signup"])],
        vec![Filter::new("event:props:plan", "==", &["pro"])],
        vec![Filter::new("visit:country", "==", &["DE", "FR"])],
        vec![Filter::new("visit:source", "!=", &["Direct / None"])],
        vec![Filter::new("visit:source", "~", &["oo", "news"])],
        vec![
            Filter::new("visit:device", "==", &["mobile"]),
            Filter::new("event:page", "~", &["/blog/"]),
        ],
        vec![
            Filter::new("visit:entry_page", "==", &["/"]),
            Filter::new("visit:browser", "!=", &["Safari"]),
        ],
        vec![Filter::new("visit:exit_page", "==", &["/docs", "/pricing"])],
        vec![
            Filter::new("visit:exit_page", "!=", &["/"]),
            Filter::new("event:name", "==", &["Signup"]),
        ],
    ];
    for filters in cases {
        for property in [
            "event:page",
            "visit:source",
            "visit:country",
            "visit:exit_page",
        ] {
            check_breakdown(s, property, &filters, ALL_METRICS).await;
        }
        // And the aggregate under the same filters.
        let text = Filter::query(&filters);
        let mut q = vec![
            ("site_id", SITE),
            ("metrics", ALL_METRICS),
            ("filters", text.as_str()),
        ];
        q.extend_from_slice(&WEEK);
        let got = s.json("/api/v1/stats/aggregate", &q).await;
        let want = expected(
            &s.fixture,
            SITE,
            day_range("UTC", "2026-03-24", "2026-03-31"),
            &filters,
            Key::Total,
            0,
        );
        let empty = Sums::default();
        let want = want.get("").unwrap_or(&empty);
        for m in ALL_METRICS.split(',') {
            assert_eq!(got["results"][m]["value"], want.metric(m), "{text} {m}");
        }
        println!(
            "filters {text}: visitors {} pageviews {}",
            got["results"]["visitors"]["value"], got["results"]["pageviews"]["value"]
        );
    }
}

pub async fn k_suppression(s: &Service) {
    let (mut merged, mut kept) = (0, 0);
    // One day has few visitors per group (mostly merged), the week many (mostly kept).
    for (property, (first, last)) in [
        ("visit:city", ("2026-03-27", "2026-03-27")),
        ("event:page", ("2026-03-27", "2026-03-27")),
        ("visit:browser_version", ("2026-03-26", "2026-03-27")),
        ("event:props:plan", ("2026-03-24", "2026-03-31")),
        ("visit:utm_campaign", ("2026-03-24", "2026-03-31")),
        ("visit:city", ("2026-03-24", "2026-03-31")),
    ] {
        let date = format!("{first},{last}");
        let mut q = vec![
            ("site_id", SITE),
            ("property", property),
            ("metrics", "visitors,visits,pageviews"),
            ("limit", "1000"),
        ];
        q.extend_from_slice(&[("period", "custom"), ("date", &date)]);
        let got = s
            .json_at(&s.k_base, &s.key, "/api/v1/stats/breakdown", &q)
            .await;
        let want = expected(
            &s.fixture,
            SITE,
            day_range("UTC", first, last),
            &[],
            Key::Property(property),
            3,
        );
        let want = sorted(&want);
        let results = got["results"].as_array().unwrap();
        let keys: Vec<&str> = results
            .iter()
            .map(|r| r[result_key(property)].as_str().unwrap())
            .collect();
        let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, want_keys, "k=3 {property}");
        for (row, (k, sums)) in results.iter().zip(&want) {
            check_row(
                &format!("k=3 {property}={k}"),
                row,
                sums,
                "visitors,visits,pageviews",
            );
            if k.as_str() != "(other)" {
                assert!(sums.visitors.len() >= 3);
                kept += 1;
            } else {
                merged += 1;
            }
        }
        println!("k=3 {property} {date}: {keys:?}");
    }
    assert!(
        merged > 0 && kept > 0,
        "the fixture should exercise both: {merged} {kept}"
    );
}

/// Goals: the `event:goal` breakdown (a page view can reach two), goal filters, and
/// conversion rates against the visitors of the same filters without the goal.
pub async fn goals(s: &Service) {
    let range = day_range("UTC", "2026-03-24", "2026-03-31");
    let metrics = "visitors,events,visits,bounce_rate,conversion_rate";
    let rate = |visitors: usize, total: usize| {
        json!((visitors as f64 / total as f64 * 1000.0).round() / 10.0)
    };
    for filters in [
        vec![],
        vec![Filter::new("visit:country", "==", &["DE", "FR"])],
        vec![Filter::new("event:goal", "!=", &["Visit /*"])],
        vec![Filter::new("event:goal", "~", &["Sign", "blog"])],
    ] {
        let text = Filter::query(&filters);
        let mut q = vec![
            ("site_id", SITE),
            ("property", "event:goal"),
            ("metrics", metrics),
        ];
        q.extend_from_slice(&WEEK);
        if !filters.is_empty() {
            q.push(("filters", &text));
        }
        let got = s.json("/api/v1/stats/breakdown", &q).await;
        let want = expected(
            &s.fixture,
            SITE,
            range,
            &filters,
            Key::Property("event:goal"),
            0,
        );
        let others: Vec<Filter> = filters
            .iter()
            .filter(|f| f.property != "event:goal")
            .cloned()
            .collect();
        let total = expected(&s.fixture, SITE, range, &others, Key::Total, 0)[""]
            .visitors
            .len();
        let want = sorted(&want);
        let results = got["results"].as_array().unwrap();
        let keys: Vec<&str> = results
            .iter()
            .map(|r| r["goal"].as_str().unwrap())
            .collect();
        let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, want_keys, "goals {text}");
        if filters.is_empty() {
            assert_eq!(want_keys.len(), GOALS.len(), "every goal was reached");
        }
        for (row, (k, sums)) in results.iter().zip(&want) {
            check_row(
                &format!("goal {k} {text}"),
                row,
                sums,
                "visitors,events,visits,bounce_rate",
            );
            assert_eq!(
                row["conversion_rate"],
                rate(sums.visitors.len(), total),
                "goal {k} {text}"
            );
        }
        println!("goals {text}: {results:?}");
    }

    // A goal filter on the aggregate, with the comparison's own denominator.
    let mut q = vec![
        ("site_id", SITE),
        ("metrics", "visitors,events,conversion_rate"),
        ("filters", "event:goal==Signup|Visit /pricing"),
    ];
    q.extend_from_slice(&WEEK);
    let got = s.json("/api/v1/stats/aggregate", &q).await;
    let filters = [Filter::new(
        "event:goal",
        "==",
        &["Signup", "Visit /pricing"],
    )];
    let want = expected(&s.fixture, SITE, range, &filters, Key::Total, 0);
    let total = expected(&s.fixture, SITE, range, &[], Key::Total, 0)[""]
        .visitors
        .len();
    let converted = want[""].visitors.len();
    assert!(converted > 0 && converted < total, "{converted} of {total}");
    assert_eq!(got["results"]["visitors"]["value"], json!(converted));
    assert_eq!(got["results"]["events"]["value"], json!(want[""].events));
    assert_eq!(
        got["results"]["conversion_rate"]["value"],
        rate(converted, total)
    );

    // Mistakes are 400s that say what is wrong.
    for (params, says) in [
        (
            vec![("metrics", "visitors,conversion_rate")],
            "conversion_rate needs property=event:goal or an event:goal filter",
        ),
        (
            vec![("filters", "event:goal==Sign up")],
            "\"Sign up\" is not one of the site's goals (Signup, Visit /pricing, Visit /blog/*, Visit /*)",
        ),
    ] {
        let mut q = vec![("site_id", SITE)];
        q.extend(params);
        let (status, body) = s
            .get_with(&s.base, Some(&s.key), "/api/v1/stats/aggregate", &q)
            .await;
        assert_eq!(status, 400, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].as_str().unwrap().contains(says), "{body}");
    }
}

pub async fn pagination_and_sort(s: &Service) {
    let range = day_range("UTC", "2026-03-24", "2026-03-31");
    let want = expected(&s.fixture, SITE, range, &[], Key::Property("event:page"), 0);
    let mut by_pageviews: Vec<_> = want.iter().collect();
    by_pageviews.sort_by(|a, b| a.1.pageviews.cmp(&b.1.pageviews).then(a.0.cmp(b.0)));
    let mut pages = Vec::new();
    for page in ["1", "2", "3"] {
        let mut q = vec![
            ("site_id", SITE),
            ("property", "event:page"),
            ("metrics", "visitors,pageviews"),
            ("sort", "pageviews:asc"),
            ("limit", "2"),
            ("page", page),
        ];
        q.extend_from_slice(&WEEK);
        let got = s.json("/api/v1/stats/breakdown", &q).await;
        for row in got["results"].as_array().unwrap() {
            pages.push(row["page"].as_str().unwrap().to_string());
        }
    }
    let want_keys: Vec<String> = by_pageviews.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(pages, want_keys);
    let mut q = vec![
        ("site_id", SITE),
        ("property", "event:page"),
        ("sort", "page:desc"),
    ];
    q.extend_from_slice(&WEEK);
    let got = s.json("/api/v1/stats/breakdown", &q).await;
    let keys: Vec<&str> = got["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["page"].as_str().unwrap())
        .collect();
    let mut want_desc: Vec<&str> = want.keys().map(String::as_str).collect();
    want_desc.reverse();
    assert_eq!(keys, want_desc);
    println!("pagination (limit 2, pages 1-3, sort pageviews:asc) and sort page:desc: ok");
}
