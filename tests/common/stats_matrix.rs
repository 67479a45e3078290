//! A broad matrix of stats requests and the exact SQL the query service runs for each (from
//! their `glimpse_query::plan`, the one the handlers execute), for checking the generated
//! statements on ClickHouse 18.16 (`tests/stats_api/generated_sql.rs`) and on current
//! ClickHouse via chdb (`tests/stats_sql_compat.rs`).

use std::collections::{BTreeSet, HashMap};

use glimpse_core::site::SiteConfig;
use glimpse_query::auth::Site;
use glimpse_query::params::Endpoint;
use glimpse_query::plan::{self, Request};
use glimpse_query::sql::Sql;

const METRICS: &str = "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events,time_on_page,scroll_depth";

/// Every metric but the engagement ones.
const VISIT_METRICS: &str =
    "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events";

const PROPERTIES: [&str; 22] = [
    "event:page",
    "event:name",
    "event:hostname",
    "event:props:plan",
    "event:props:it's \\ `odd`",
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

/// The matrix site's goals.
pub const GOALS: [&str; 3] = ["Signup", "Visit /a", "Visit /blog/*"];

const FILTERS: [&str; 8] = [
    "",
    "event:page==/a|/b",
    "event:page!=/a;visit:country==DE|FR",
    "event:name==Signup;event:props:plan~pro",
    "visit:source~oo|x'y;visit:entry_page!=/",
    "visit:utm_campaign==spring;visit:device==mobile;visit:os~And",
    "event:hostname==example.com;visit:city!=Paris|Berlin",
    "visit:exit_page==/docs;visit:browser_version==131;visit:referrer~google",
];

/// The comparisons beyond the previous period.
const COMPARISONS: [&[(&str, &str)]; 2] = [
    &[("comparison", "year_over_year")],
    &[
        ("comparison", "custom"),
        ("compare_from", "2025-02-01"),
        ("compare_to", "2025-03-01"),
    ],
];

/// Every distinct statement for the matrix, for a site in `timezone`.
pub fn statements(database: &str, timezone: &str) -> Vec<String> {
    let site = Site::parse(SiteConfig {
        timezone: timezone.into(),
        goals: GOALS.map(String::from).to_vec(),
        ..SiteConfig::new("example.com")
    })
    .unwrap();
    let now = "2026-03-29T12:00:00Z".parse().unwrap();
    let mut out = BTreeSet::new();
    let mut add = |endpoint: Endpoint, pairs: &[(&str, &str)], k: u64| {
        let query: HashMap<String, String> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        // The request's plan, as the handlers build it.
        let request = Request::new(endpoint, &query, site.clone(), now)
            .unwrap_or_else(|e| panic!("{pairs:?}: {e}"));
        let stats = |rolled: &[i64]| {
            let mut texts = request
                .stats_plan(database, k, rolled)
                .unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
                .texts();
            // A breakdown's comparison: the second step, over a page's keys.
            let keys = ["/a".to_string(), "x'y".to_string(), "(none)".to_string()];
            if let Some(compared) = request.breakdown_comparison(database, k, rolled, &keys) {
                texts.extend(
                    std::iter::once(&compared.stats)
                        .chain(&compared.goal_totals)
                        .map(Sql::final_text),
                );
            }
            texts
        };
        out.extend(stats(&[]));
        // Where a large period may be sampled: the lookup of its events, and the plan again
        // reading 1 in 10 visitors (in one time zone: the sample's condition does not
        // depend on it).
        let lookup = request.sampling_lookup(database, 1);
        if let Some(lookup) = lookup.filter(|_| timezone == "UTC") {
            out.insert(lookup.final_text());
            let mut sampled = request.clone();
            sampled.sample(10, 1, &[]);
            assert!(sampled.sampling.is_some());
            out.extend(
                sampled
                    .stats_plan(database, k, &[])
                    .unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
                    .texts(),
            );
        }
        // Where the rollup may answer: the lookup of the rolled days, and the plan again with
        // every day it looks at rolled up.
        if let Some(lookup) = request.rolled_days_lookup(database) {
            let every_day: Vec<i64> = (lookup.first..=lookup.last).collect();
            out.extend(stats(&every_day));
            out.insert(lookup.statement.final_text());
        }
        // The endpoints that take an aggregate's parameters: filtered, props; and the sites
        // and realtime ones.
        if endpoint == Endpoint::Aggregate {
            out.extend(
                [
                    request.dropped_statement(database),
                    request.prop_names_statement(database),
                    plan::imported_ranges_statement(database),
                    plan::realtime_statement(database, &site, now),
                ]
                .iter()
                .map(Sql::final_text),
            );
        }
    };
    let periods: [&[(&str, &str)]; 8] = [
        &[("period", "realtime")],
        &[("period", "day"), ("date", "2026-03-29")],
        &[("period", "7d")],
        &[("period", "30d")],
        &[("period", "month")],
        &[("period", "6mo")],
        &[("period", "12mo")],
        &[("period", "custom"), ("date", "2026-03-01,2026-03-31")],
    ];
    for period in periods {
        // Without engagement metrics, aggregates may be answered from the rollup.
        let mut q = vec![("site_id", "example.com"), ("metrics", VISIT_METRICS)];
        q.extend_from_slice(period);
        q.push(("compare", "previous_period"));
        add(Endpoint::Aggregate, &q, 0);
        let mut q = vec![("site_id", "example.com"), ("metrics", METRICS)];
        q.extend_from_slice(period);
        add(Endpoint::Aggregate, &q, 0);
        let mut compare = q.clone();
        compare.push(("compare", "previous_period"));
        add(Endpoint::Aggregate, &compare, 0);
        add(Endpoint::Timeseries, &q, 0);
        // A year earlier and custom dates (realtime compares with the previous 30 minutes).
        if period[0].1 != "realtime" {
            for comparison in COMPARISONS {
                let mut compared = q.clone();
                compared.extend_from_slice(comparison);
                add(Endpoint::Aggregate, &compared, 0);
                add(Endpoint::Timeseries, &compared, 0);
            }
        } else {
            let mut compared = q.clone();
            compared.push(("comparison", "previous_period"));
            add(Endpoint::Timeseries, &compared, 0);
        }
    }
    for interval in ["hour", "date", "week", "month"] {
        for filters in FILTERS {
            add(
                Endpoint::Timeseries,
                &[
                    ("site_id", "example.com"),
                    ("period", "custom"),
                    ("date", "2026-03-20,2026-03-31"),
                    ("interval", interval),
                    ("metrics", METRICS),
                    ("filters", filters),
                ],
                0,
            );
        }
    }
    for property in PROPERTIES {
        let metrics = if property == "event:name" {
            "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events"
        } else {
            METRICS
        };
        for filters in FILTERS {
            for k in [0, 5] {
                add(
                    Endpoint::Breakdown,
                    &[
                        ("site_id", "example.com"),
                        ("period", "7d"),
                        ("property", property),
                        ("metrics", metrics),
                        ("filters", filters),
                        ("limit", "10"),
                        ("page", "2"),
                    ],
                    k,
                );
            }
        }
        for sort in metrics
            .split(',')
            .chain([property.rsplit(':').next().unwrap()])
        {
            add(
                Endpoint::Breakdown,
                &[
                    ("site_id", "example.com"),
                    ("property", property),
                    ("metrics", metrics),
                    ("sort", &format!("{sort}:asc")),
                ],
                0,
            );
        }
        // Compared, each row with its key's figures then (with and without `(other)`).
        for comparison in COMPARISONS {
            for k in [0, 5] {
                let mut q = vec![
                    ("site_id", "example.com"),
                    ("period", "30d"),
                    ("property", property),
                    ("metrics", VISIT_METRICS),
                    ("limit", "10"),
                ];
                q.extend_from_slice(comparison);
                add(Endpoint::Breakdown, &q, k);
            }
        }
        // Without engagement metrics (the rollup's questions), over a month.
        add(
            Endpoint::Breakdown,
            &[
                ("site_id", "example.com"),
                ("period", "30d"),
                ("property", property),
                ("metrics", VISIT_METRICS),
                ("limit", "10"),
            ],
            0,
        );
        // Without visit metrics the statement reads no visits.
        add(
            Endpoint::Breakdown,
            &[
                ("site_id", "example.com"),
                ("property", property),
                ("metrics", "visitors,pageviews,events"),
            ],
            0,
        );
        for op in ["==", "!=", "~"] {
            let filter = format!("{property}{op}x|y'z");
            add(
                Endpoint::Aggregate,
                &[
                    ("site_id", "example.com"),
                    ("metrics", METRICS),
                    ("filters", &filter),
                ],
                0,
            );
        }
    }
    // Goals: the breakdown, goal filters, conversion rates (with their denominators).
    let goal_metrics = "visitors,events,conversion_rate,visits,bounce_rate";
    for filters in [
        "",
        "visit:country==DE",
        "event:goal!=Visit /a",
        "event:goal~Sign|blog",
        "event:page==/a;visit:source~oo",
    ] {
        for k in [0, 5] {
            add(
                Endpoint::Breakdown,
                &[
                    ("site_id", "example.com"),
                    ("period", "7d"),
                    ("property", "event:goal"),
                    ("metrics", goal_metrics),
                    ("filters", filters),
                ],
                k,
            );
        }
    }
    for filters in [
        "event:goal==Signup",
        "event:goal==Visit /a|Visit /blog/*;visit:device==mobile",
    ] {
        let q = [
            ("site_id", "example.com"),
            ("period", "7d"),
            ("metrics", goal_metrics),
            ("filters", filters),
        ];
        let mut compare = q.to_vec();
        compare.push(("compare", "previous_period"));
        add(Endpoint::Aggregate, &compare, 0);
        add(Endpoint::Timeseries, &q, 0);
        for property in ["event:page", "visit:source", "visit:exit_page"] {
            let mut breakdown = q.to_vec();
            breakdown.push(("property", property));
            add(Endpoint::Breakdown, &breakdown, 0);
            breakdown.push(("comparison", "year_over_year"));
            add(Endpoint::Breakdown, &breakdown, 5);
        }
        let mut compared = q.to_vec();
        compared.push(("comparison", "year_over_year"));
        add(Endpoint::Timeseries, &compared, 0);
    }
    // Imported aggregates (`with_imported=true`): every question they answer, and a filtered
    // one they do not.
    let imported = [
        ("site_id", "example.com"),
        ("period", "custom"),
        ("date", "2026-03-01,2026-03-31"),
        ("with_imported", "true"),
    ];
    let mut q = imported.to_vec();
    q.extend([("metrics", METRICS), ("compare", "previous_period")]);
    add(Endpoint::Aggregate, &q, 0);
    for interval in ["hour", "date", "week", "month"] {
        let mut q = imported.to_vec();
        q.extend([("metrics", METRICS), ("interval", interval)]);
        add(Endpoint::Timeseries, &q, 0);
    }
    for property in PROPERTIES {
        for filters in ["", "visit:country==DE"] {
            for k in [0, 5] {
                let mut q = imported.to_vec();
                q.extend([
                    ("metrics", "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events"),
                    ("property", property),
                    ("filters", filters),
                    ("sort", "visitors:desc"),
                ]);
                add(Endpoint::Breakdown, &q, k);
            }
        }
    }
    let mut statements: Vec<String> = out.into_iter().collect();
    // The rollup's upkeep last: it deletes rollup rows.
    statements.extend(glimpse_query::rollup::maintenance_statements(
        database,
        "example.com",
    ));
    statements
}

/// Stats API v2 filter trees: every operator, `and`/`or`/`not` nesting, visit and event
/// filters mixed, the exit page and goals inside `not`.
const V2_FILTERS: [&str; 9] = [
    "[]",
    r#"[["is", "event:page", ["/a", "/b"]], ["is_not", "visit:country", ["DE"]]]"#,
    r#"[["contains", "visit:source", ["oo", "x'y"]], ["contains_not", "event:page", ["blog"]]]"#,
    r#"[["matches", "event:page", ["^/blog/[a-z]+$"]], ["matches_not", "visit:browser", ["^(Fire|Chr)"]]]"#,
    r#"[["or", [["is", "visit:device", ["mobile"]], ["is", "event:name", ["Signup"]]]]]"#,
    r#"[["not", ["or", [["is", "visit:exit_page", ["/docs"]], ["contains", "event:props:plan", ["pro"]]]]]]"#,
    r#"[["or", [["and", [["is", "visit:city", ["Paris"]], ["not", ["is", "event:goal", ["Signup"]]]]], ["matches", "visit:referrer", ["google"]]]]]"#,
    r#"[["not", ["not", ["is", "event:hostname", ["example.com"]]]], ["contains_not", "event:goal", ["Visit"]]]"#,
    // Case-insensitive, each operator, negated, on events, visits, the exit page and goals.
    r#"[["contains", "event:page", ["/Blog", "x'Y"], {"case_sensitive": false}], ["is_not", "visit:country", ["de"], {"case_sensitive": false}], ["not", ["or", [["matches", "visit:exit_page", ["^/DOCS"], {"case_sensitive": false}], ["is", "event:goal", ["signup"], {"case_sensitive": false}], ["contains_not", "visit:source", ["GOO"], {"case_sensitive": false}], ["matches_not", "event:props:plan", ["^PRO$"], {"case_sensitive": false}]]]]]"#,
];

/// Every distinct statement of a matrix of v2 queries (`glimpse_query::v2`), through the plan
/// the handler runs, for a site in `timezone`.
pub fn v2_statements(database: &str, timezone: &str) -> Vec<String> {
    use glimpse_query::plan::Request;
    use serde_json::{json, Value};

    let site = Site::parse(SiteConfig {
        timezone: timezone.into(),
        goals: GOALS.map(String::from).to_vec(),
        ..SiteConfig::new("example.com")
    })
    .unwrap();
    let now = "2026-03-29T12:00:00Z".parse().unwrap();
    let mut out = BTreeSet::new();
    let mut add = |body: Value, k: u64| {
        let query = glimpse_query::v2::parse(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
        let request: Request = glimpse_query::v2::translate(&query, site.clone(), now)
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        let texts = |rolled: &[i64]| {
            request
                .stats_plan(database, k, rolled)
                .unwrap_or_else(|e| panic!("{body}: {e}"))
                .texts()
        };
        out.extend(texts(&[]));
        // Sampled, 1 in 10 visitors (in one time zone, as for v1).
        let mut sampled = request.clone();
        sampled.sample(10, 1, &[]);
        if timezone == "UTC" {
            out.extend(
                sampled
                    .stats_plan(database, k, &[])
                    .unwrap_or_else(|e| panic!("{body}: {e}"))
                    .texts(),
            );
        }
        // A breakdown's comparison: the second step, on a page of keys (quotes included; by
        // several dimensions, joined keys, one with an escaped separator byte).
        let keys = if query.dimensions.len() > 1 {
            [
                "/a\x01\x02x'y".to_string(),
                "a\x01\x03b\x01\x02c".to_string(),
            ]
        } else {
            ["/a".to_string(), "x'y".to_string()]
        };
        let compared = |rolled: &[i64]| {
            request
                .breakdown_comparison(database, k, rolled, &keys)
                .map(|p| p.stats.final_text())
        };
        out.extend(compared(&[]));
        if let Some(lookup) = request.rolled_days_lookup(database) {
            let every_day: Vec<i64> = (lookup.first..=lookup.last).collect();
            out.extend(texts(&every_day));
            out.extend(compared(&every_day));
            out.insert(lookup.statement.final_text());
        }
    };
    let all: Vec<&str> = METRICS.split(',').collect();
    let mut dimensions: Vec<Option<&str>> = vec![
        None,
        Some("time"),
        Some("time:hour"),
        Some("time:day"),
        Some("time:week"),
        Some("time:month"),
        Some("event:goal"),
    ];
    dimensions.extend(PROPERTIES.iter().map(|p| Some(*p)));
    for dimension in dimensions {
        let per_event = matches!(dimension, Some("event:name" | "event:goal"));
        let mut metrics: Vec<&str> = all
            .iter()
            .copied()
            .filter(|m| !per_event || !matches!(*m, "time_on_page" | "scroll_depth"))
            .collect();
        if dimension.is_some() {
            metrics.push("percentage");
        }
        let dims: Vec<&str> = dimension.into_iter().collect();
        for filters in V2_FILTERS {
            let filters: Value = serde_json::from_str(filters).unwrap();
            for k in [0, 5] {
                add(
                    json!({
                        "site_id": "example.com", "metrics": metrics, "date_range": "7d",
                        "dimensions": dims, "filters": filters,
                        "include": {"total_rows": true},
                        "order_by": [[metrics[1], "asc"]],
                        "pagination": {"limit": 10, "offset": 20},
                    }),
                    k,
                );
            }
        }
        // Without filters, engagement or visit metrics: the rollup's questions, with imports.
        add(
            json!({
                "site_id": "example.com", "metrics": ["visitors", "pageviews"],
                "date_range": "30d", "dimensions": dims, "include": {"imports": true},
            }),
            0,
        );
        // Conversion rates, of all visitors and of each group's.
        let mut goal_metrics = vec!["visitors", "conversion_rate"];
        if dimension.is_some() {
            goal_metrics.push("group_conversion_rate");
        }
        add(
            json!({
                "site_id": "example.com", "metrics": goal_metrics, "date_range": "28d",
                "dimensions": dims,
                "filters": [["is", "event:goal", ["Signup", "Visit /a"]], ["is", "visit:device", ["mobile"]]],
            }),
            0,
        );
    }
    // Comparisons: every mode, with each kind of dimension, its extras and k-suppression.
    for comparison in [
        json!({"mode": "previous_period"}),
        json!({"mode": "year_over_year"}),
        json!({"mode": "custom", "date_range": ["2025-02-01", "2025-02-28"]}),
    ] {
        for dimensions in [
            json!([]),
            json!(["time:hour"]),
            json!(["time"]),
            json!(["visit:source"]),
            json!(["event:page"]),
            json!(["event:goal"]),
        ] {
            let by_dimension = dimensions != json!([]);
            let mut metrics = all.clone();
            if dimensions == json!(["event:goal"]) {
                metrics.retain(|m| !matches!(*m, "time_on_page" | "scroll_depth"));
            }
            if by_dimension {
                metrics.push("percentage");
            }
            for (filters, k) in [
                (json!([]), 0),
                (serde_json::from_str(V2_FILTERS[6]).unwrap(), 5),
            ] {
                add(
                    json!({
                        "site_id": "example.com", "metrics": metrics, "date_range": "month",
                        "dimensions": dimensions, "filters": filters,
                        "include": {"comparisons": comparison, "total_rows": by_dimension},
                    }),
                    k,
                );
            }
            add(
                json!({
                    "site_id": "example.com", "metrics": ["visitors", "conversion_rate"],
                    "date_range": "7d", "dimensions": dimensions,
                    "filters": [["is", "event:goal", ["Signup"]]],
                    "include": {"comparisons": comparison, "imports": true},
                }),
                0,
            );
        }
    }
    // Several dimensions: time with properties, events with visits, goals; each sorted by
    // a dimension, paged, counted, k-suppressed, filtered; compared where not by time.
    for dimensions in [
        json!(["visit:source", "visit:country"]),
        json!(["time:day", "visit:device"]),
        json!(["time", "event:page"]),
        json!(["event:page", "event:goal"]),
        json!(["visit:device", "time:hour", "event:props:plan"]),
        json!(["event:name", "visit:browser", "time:month"]),
    ] {
        let names: Vec<&str> = dimensions
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        let per_event = names
            .iter()
            .any(|d| matches!(*d, "event:name" | "event:goal"));
        let mut metrics: Vec<&str> = all
            .iter()
            .copied()
            .filter(|m| !per_event || !matches!(*m, "time_on_page" | "scroll_depth"))
            .collect();
        metrics.push("percentage");
        let timed = names.iter().any(|d| d.starts_with("time"));
        for (filters, k) in [
            ("[]", 0),
            (V2_FILTERS[1], 5),
            (V2_FILTERS[5], 0),
            (V2_FILTERS[6], 5),
        ] {
            let filters: Value = serde_json::from_str(filters).unwrap();
            let mut body = json!({
                "site_id": "example.com", "metrics": metrics, "date_range": "7d",
                "dimensions": dimensions, "filters": filters,
                "include": {"total_rows": true},
                "order_by": [[names[1], "desc"], [metrics[2], "asc"]],
                "pagination": {"limit": 10, "offset": 20},
            });
            if !timed {
                body["include"]["comparisons"] = json!({"mode": "previous_period"});
            }
            add(body, k);
        }
        // Default order (time first where there is one), the rollup's metrics, imports asked.
        add(
            json!({
                "site_id": "example.com", "metrics": ["visitors", "pageviews"],
                "date_range": "30d", "dimensions": dimensions, "include": {"imports": true},
            }),
            0,
        );
        add(
            json!({
                "site_id": "example.com", "metrics": ["visitors", "conversion_rate"],
                "date_range": "28d", "dimensions": dimensions,
                "filters": [["is", "event:goal", ["Signup", "Visit /a"]]],
            }),
            5,
        );
    }
    for date_range in [
        json!("day"),
        json!("91d"),
        json!("month"),
        json!("6mo"),
        json!("12mo"),
        json!("year"),
        json!("all"),
        json!(["2026-03-01", "2026-03-31"]),
        json!(["2026-03-29T01:00:00+01:00", "2026-03-29T05:59:59+02:00"]),
        json!(["2026-03-28 10:00:00", "2026-03-28 16:29:59"]),
    ] {
        add(
            json!({
                "site_id": "example.com", "metrics": all, "date_range": date_range,
                "dimensions": ["time"], "include": {"time_labels": true},
            }),
            0,
        );
    }
    out.into_iter().collect()
}

/// Every distinct statement of a matrix of funnels (`glimpse_query::funnel`): page patterns,
/// events, goals, repeated steps, 2 to 8 steps, under each v2 filter tree and date range form,
/// for a site in `timezone`.
pub fn funnel_statements(database: &str, timezone: &str) -> Vec<String> {
    use serde_json::{json, Value};

    let site = Site::parse(SiteConfig {
        timezone: timezone.into(),
        goals: GOALS.map(String::from).to_vec(),
        ..SiteConfig::new("example.com")
    })
    .unwrap();
    let now = "2026-03-29T12:00:00Z".parse().unwrap();
    let mut out = BTreeSet::new();
    let mut add = |body: Value| {
        let request = glimpse_query::funnel::parse(&body, &site, None, now)
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        out.insert(glimpse_query::funnel::statement(database, &site, &request).final_text());
    };
    let step_lists = [
        json!([{"page": "/pricing"}, {"event": "Signup"}]),
        json!([{"page": "/blog/*"}, {"goal": "Visit /a"}, {"goal": "Signup"}, {"page": "/blog/*"}]),
        json!([
            {"page": "/"}, {"page": "/a*"}, {"event": "A"}, {"event": "B"},
            {"page": "/*/x"}, {"goal": "Visit /blog/*"}, {"event": "it's \"quoted\""}, {"page": "/"}
        ]),
    ];
    for steps in &step_lists {
        for filters in V2_FILTERS {
            let filters: Value = serde_json::from_str(filters).unwrap();
            add(
                json!({"site_id": "example.com", "date_range": "30d", "filters": filters,
                "steps": steps}),
            );
        }
        for date_range in [
            json!("day"),
            json!("all"),
            json!(["2026-03-01", "2026-03-31"]),
            json!(["2026-03-29T01:00:00+01:00", "2026-03-29T05:59:59+02:00"]),
        ] {
            add(json!({"site_id": "example.com", "date_range": date_range, "steps": steps}));
        }
    }
    out.into_iter().collect()
}
