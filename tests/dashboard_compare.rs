//! Comparisons on the dashboard, end to end: two Marches of visits (2025 and 2026) in a real
//! ClickHouse, the query service in-process, and real headless Chromium driven by
//! `tracker-js/e2e/dashboard_compare.mjs`, which picks the year-over-year comparison, then a
//! custom range compared with custom dates and another chart metric, and downloads a
//! breakdown's CSV. Every figure shown (headline values, comparison values and changes, each
//! chart bucket and the bucket it is compared with, each breakdown row's change) must be the
//! stats API's, the year-earlier visitors and page views also recounted from the fixture, and
//! the CSV must be the API's. Screenshots: `target/dashboard-yoy.png`,
//! `target/dashboard-custom.png`, `target/dashboard-compare-mobile.png`.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::browser::{require_browser, run_driver};
use common::{insert_events, utc_day_start, Lcg, TestClickHouse};
use glimpse_core::schema::EventRow;
use glimpse_core::site::Site;
use glimpse_core::Config;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const SITE: &str = "example.com";
/// March 2026, compared with March 2025 (year over year).
const VIEW: [(&str, &str); 2] = [("period", "month"), ("date", "2026-03-15")];
/// The custom range picked, and the custom dates it is compared with.
const CUSTOM: (&str, &str) = ("2026-03-10", "2026-03-16");
const COMPARED: (&str, &str) = ("2026-03-01", "2026-03-07");
const HEADLINE: &str = "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration";

/// Visits every day of March 2025 and March 2026 (more in 2026), from four sources.
fn fixture() -> Vec<EventRow> {
    let mut rng = Lcg(18);
    let sources = [
        ("", ""),
        ("Google", "google.com/"),
        ("Hacker News", "news.ycombinator.com/item"),
        ("DuckDuckGo", "duckduckgo.com/"),
    ];
    let pages = ["/", "/pricing", "/blog/a", "/docs"];
    let mut rows = Vec::new();
    let mut session_id = 0;
    for (year, base) in [(2025, 3u64), (2026, 5)] {
        for day in 1..=31 {
            let start = utc_day_start(&format!("{year}-03-{day:02}"));
            for v in 0..base + rng.next(6) {
                session_id += 1;
                let source = sources[rng.next(sources.len() as u64) as usize];
                let mut ts = start + rng.next(23 * 3600) as i64;
                for i in 0..1 + rng.next(4) {
                    rows.push(EventRow {
                        site: SITE.into(),
                        timestamp: ts as u32,
                        name: "pageview".into(),
                        hostname: SITE.into(),
                        pathname: pages[rng.next(pages.len() as u64) as usize].into(),
                        visitor_id: (year * 10_000 + day * 100) as u64 + v,
                        session_id,
                        referrer_source: if i == 0 {
                            source.0.into()
                        } else {
                            String::new()
                        },
                        referrer: if i == 0 {
                            source.1.into()
                        } else {
                            String::new()
                        },
                        browser: "Firefox".into(),
                        os: "GNU/Linux".into(),
                        device: "desktop".into(),
                        country: "DE".into(),
                        interactive: 1,
                        ..EventRow::default()
                    });
                    ts += 30 + rng.next(300) as i64;
                }
            }
        }
    }
    glimpse_collector::ingest::sessions::stamp_visits(&mut rows);
    rows
}

/// Visitors and page views of `[first, last]` (UTC dates), counted from the fixture.
fn recount(rows: &[EventRow], first: &str, last: &str) -> (usize, usize) {
    let (start, end) = (utc_day_start(first), utc_day_start(last) + 86_400);
    let inside: Vec<&EventRow> = rows
        .iter()
        .filter(|r| (start..end).contains(&(r.timestamp as i64)))
        .collect();
    let visitors: HashSet<u64> = inside.iter().map(|r| r.visitor_id).collect();
    (visitors.len(), inside.len())
}

struct Service {
    _ch: TestClickHouse,
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Service {
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> String {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).unwrap();
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{path} {params:?}: {body}");
        body
    }

    async fn json(&self, path: &str, params: &[(&str, &str)]) -> Value {
        serde_json::from_str(&self.get(path, params).await).unwrap()
    }
}

async fn start(rows: &[EventRow]) -> Service {
    let ch = TestClickHouse::start().await;
    glimpse_core::schema::migrate(&ch.client, "glimpse")
        .await
        .expect("migrate");
    insert_events(&ch.client, "glimpse", rows).await;
    let config = Config {
        sites: vec![Site::new(SITE)],
        ..ch.config()
    };
    let key = glimpse_query::auth::create_key(&ch.client, "glimpse", &config, SITE, "compare")
        .await
        .unwrap()
        .0;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(glimpse_query::serve(
        config,
        listener,
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    common::wait_for_200(&http, &format!("{base}/ready"), Duration::from_secs(30)).await;
    Service {
        _ch: ch,
        base,
        key,
        http,
    }
}

/// The page's headline tiles are the API's values, comparison values and changes.
fn check_headline(what: &str, shown: &Value, api: &Value) {
    for metric in HEADLINE.split(',') {
        let (tile, r) = (&shown[metric], &api["results"][metric]);
        assert_eq!(
            tile["value"],
            json!(r["value"].to_string()),
            "{what}: {metric}"
        );
        assert_eq!(
            tile["comparison"],
            json!(r["comparison_value"].to_string()),
            "{what}: {metric} compared"
        );
        assert_eq!(
            tile["change"],
            json!(r["change"].to_string()),
            "{what}: {metric} change"
        );
    }
}

/// The chart's buckets are the API timeseries' buckets and their compared buckets.
fn check_chart(what: &str, shown: &Value, api: &Value, metric: &str) {
    let shown = shown.as_array().unwrap();
    let api = api["results"].as_array().unwrap();
    assert_eq!(shown.len(), api.len(), "{what}: buckets");
    for (s, r) in shown.iter().zip(api) {
        let c = &r["comparison"];
        let want = json!({
            "date": r["date"],
            "value": r[metric].to_string(),
            "comparison_date": c["date"],
            "comparison": if c.is_null() { Value::Null } else { json!(c[metric].to_string()) },
        });
        assert_eq!(s, &want, "{what}");
    }
}

/// The Sources card's rows and changes are the API breakdown's.
fn check_sources(what: &str, shown: &Value, api: &Value) {
    let want: Vec<Value> = api["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!({
                "value": r["source"],
                "visitors": r["visitors"].to_string(),
                "change": r["change"]["visitors"].to_string(),
            })
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(shown, &json!(want), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_compares_year_over_year_and_custom_ranges_as_the_api_does() {
    require_browser(&[]);
    let rows = fixture();
    let s = start(&rows).await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&shots).unwrap();
    let view = VIEW.map(|(k, v)| format!("{k}={v}")).join("&");
    let shots_text = shots.to_string_lossy();
    let env = [
        ("BASE", s.base.as_str()),
        ("KEY", s.key.as_str()),
        ("SITE", SITE),
        ("VIEW", view.as_str()),
        ("FROM", CUSTOM.0),
        ("TO", CUSTOM.1),
        ("COMPARE_FROM", COMPARED.0),
        ("COMPARE_TO", COMPARED.1),
        ("SHOTS", shots_text.as_ref()),
    ];
    let facts = run_driver("dashboard_compare.mjs", &env, Duration::from_secs(150)).await;
    println!("dashboard comparison facts: {facts}");
    assert_eq!(facts["errors"], json!([]), "console or page errors");
    assert_eq!(
        facts["pickers"],
        json!(["off", "previous_period", "year_over_year", "custom"])
    );
    // Every metric the API offers (conversion rates need a goal filter, which this view has not).
    assert_eq!(
        facts["chart_metrics"],
        json!([
            "visitors",
            "visits",
            "pageviews",
            "views_per_visit",
            "bounce_rate",
            "visit_duration",
            "events",
            "time_on_page",
            "scroll_depth"
        ])
    );

    // Year over year: March 2026 against March 2025.
    let yoy = &facts["yoy"];
    assert_eq!(yoy["params"]["comparison"], "year_over_year");
    let q = |extra: &[(&'static str, &'static str)]| {
        let mut q = vec![("site_id", SITE)];
        q.extend_from_slice(extra);
        q
    };
    let yoy_q = [VIEW[0], VIEW[1], ("comparison", "year_over_year")];
    let api = s
        .json(
            "/api/v1/stats/aggregate",
            &q(&[&yoy_q[..], &[("metrics", HEADLINE)]].concat()),
        )
        .await;
    check_headline("year over year", &yoy["headline"], &api);
    let (visitors, pageviews) = recount(&rows, "2025-03-01", "2025-03-31");
    assert_eq!(
        yoy["headline"]["visitors"]["comparison"],
        json!(visitors.to_string())
    );
    assert_eq!(
        yoy["headline"]["pageviews"]["comparison"],
        json!(pageviews.to_string())
    );
    let (now, _) = recount(&rows, "2026-03-01", "2026-03-31");
    assert_eq!(yoy["headline"]["visitors"]["value"], json!(now.to_string()));
    let series = s
        .json(
            "/api/v1/stats/timeseries",
            &q(&[&yoy_q[..], &[("metrics", "visitors"), ("interval", "date")]].concat()),
        )
        .await;
    check_chart("year over year", &yoy["chart"], &series, "visitors");
    assert_eq!(yoy["chart"][30]["comparison_date"], "2025-03-31");
    assert_eq!(yoy["comparison_line"], true);
    assert_eq!(
        yoy["legend"],
        json!(["Unique visitors", "Compared: 2025-03-01 – 2025-03-31"])
    );
    let sources = s
        .json(
            "/api/v1/stats/breakdown",
            &q(&[
                &yoy_q[..],
                &[
                    ("property", "visit:source"),
                    ("metrics", "visitors"),
                    ("limit", "10"),
                ],
            ]
            .concat()),
        )
        .await;
    check_sources("year over year", &yoy["sources"], &sources);

    // A custom range picked from the date inputs, against custom dates.
    assert_eq!(facts["custom_inputs_shown"], true);
    assert_eq!(facts["compare_inputs_shown"], true);
    let custom = &facts["custom"];
    let date = format!("{},{}", CUSTOM.0, CUSTOM.1);
    let custom_q = [
        ("period", "custom"),
        ("date", date.as_str()),
        ("comparison", "custom"),
        ("compare_from", COMPARED.0),
        ("compare_to", COMPARED.1),
    ];
    for (name, value) in &custom_q {
        assert_eq!(custom["params"][name], json!(value), "the URL keeps {name}");
    }
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut q: Vec<(&str, &str)> = vec![("site_id", SITE)];
        q.extend_from_slice(&custom_q);
        q.extend_from_slice(extra);
        q
    };
    let api = s
        .json("/api/v1/stats/aggregate", &with(&[("metrics", HEADLINE)]))
        .await;
    check_headline("custom", &custom["headline"], &api);
    let (visitors, _) = recount(&rows, COMPARED.0, COMPARED.1);
    assert_eq!(
        custom["headline"]["visitors"]["comparison"],
        json!(visitors.to_string())
    );
    let series = s
        .json(
            "/api/v1/stats/timeseries",
            &with(&[("metrics", "visitors"), ("interval", "date")]),
        )
        .await;
    check_chart("custom", &custom["chart"], &series, "visitors");
    assert_eq!(custom["chart"].as_array().unwrap().len(), 7);
    assert_eq!(custom["chart"][0]["comparison_date"], "2026-03-01");
    let sources = s
        .json(
            "/api/v1/stats/breakdown",
            &with(&[
                ("property", "visit:source"),
                ("metrics", "visitors"),
                ("limit", "10"),
            ]),
        )
        .await;
    check_sources("custom", &custom["sources"], &sources);

    // The bounce rate in the chart, with its comparison.
    let bounce = &facts["bounce"];
    assert_eq!(bounce["chart_title"], "Bounce rate");
    assert_eq!(bounce["params"]["metric"], "bounce_rate");
    let series = s
        .json(
            "/api/v1/stats/timeseries",
            &with(&[("metrics", "bounce_rate"), ("interval", "date")]),
        )
        .await;
    check_chart("bounce rate", &bounce["chart"], &series, "bounce_rate");

    // The Sources CSV: the API's own (formula-safe) CSV of that report, with the view's
    // period and comparison.
    let csv = s
        .get(
            "/api/v1/stats/breakdown",
            &with(&[
                ("property", "visit:source"),
                ("metrics", "visitors"),
                ("limit", "1000"),
                ("format", "csv"),
            ]),
        )
        .await;
    assert!(
        csv.starts_with("source,visitors,comparison_visitors,change_visitors\r\n"),
        "{csv}"
    );
    assert_eq!(facts["csv"], json!(csv));
    assert_eq!(facts["csv_name"], "example.com-sources-sources-custom.csv");

    // A phone: the same figures, nothing wider than the screen.
    assert_eq!(facts["mobile_overflow"], 0);
    assert_eq!(facts["mobile"]["headline"], custom["headline"]);
    println!(
        "screenshots: {}",
        [
            "dashboard-yoy.png",
            "dashboard-custom.png",
            "dashboard-compare-mobile.png"
        ]
        .map(|f| shots.join(f).display().to_string())
        .join(", ")
    );
}
