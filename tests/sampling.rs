//! Sampling end to end against a real ClickHouse: a fixture of 24,000 visitors over ten days,
//! the rollup built for them, and two query services on it — one sampling above 6,000 events,
//! one exact (`sampling_threshold_rows = 0`). Sampled answers must say so and lie within the
//! error they state of the exact answers; the rollup's questions and `sampling=off` stay exact.

mod common;

use std::time::Duration;

use glimpse_core::schema::EventRow;
use glimpse_core::site::{Site, SiteConfig};
use glimpse_core::Config;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use common::{Lcg, TestClickHouse};

const SITE: &str = "example.com";
const DB: &str = "glimpse";
const VISITORS: u64 = 24_000;
const DAYS: i64 = 10;
const THRESHOLD: u64 = 6_000;
/// The most page views a fixture visitor has: their counts' error is at most √3 times a
/// visitor count's (see `within_stated_error`).
const MAX_PAGEVIEWS: u64 = 3;
const COUNTRIES: [&str; 4] = ["DE", "FR", "US", "JP"];
const SOURCES: [&str; 3] = ["Google", "Newsletter", "Direct / None"];

/// Uniform 64-bit visitor ids, as the collector's keyed hash gives (splitmix64).
fn visitor_id(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One visit per visitor, of one to three page views, each visit's properties on every row.
fn fixture() -> Vec<EventRow> {
    let first_day = common::utc_day_start("2026-03-01");
    let mut rng = Lcg(23);
    let mut rows = Vec::new();
    for i in 0..VISITORS {
        let start = first_day + rng.next(DAYS as u64) as i64 * 86_400 + rng.next(80_000) as i64;
        let country = COUNTRIES[rng.next(COUNTRIES.len() as u64) as usize];
        let source = SOURCES[rng.next(SOURCES.len() as u64) as usize];
        let pageviews = 1 + rng.next(MAX_PAGEVIEWS);
        let mut ts = start;
        for n in 0..pageviews {
            let gap = if n == 0 { 0 } else { 30 + rng.next(300) as i64 };
            ts += gap;
            rows.push(EventRow {
                site: SITE.into(),
                timestamp: ts as u32,
                name: "pageview".into(),
                hostname: SITE.into(),
                pathname: format!("/page/{}", rng.next(5)),
                entry_page: "/".into(),
                visit_referrer_source: source.into(),
                visitor_id: visitor_id(i),
                session_id: i + 1,
                visit_start: start as u32,
                visit_entry: u8::from(n == 0),
                // A bounce while the visit has one page view; no longer one at its second.
                visit_bounce: match n {
                    0 => 1,
                    1 => -1,
                    _ => 0,
                },
                visit_duration: gap as u32,
                country: country.into(),
                device: "desktop".into(),
                interactive: 1,
                ..EventRow::default()
            });
        }
    }
    rows
}

struct Services {
    sampled: String,
    exact: String,
    key: String,
    http: reqwest::Client,
}

impl Services {
    async fn get(&self, base: &str, path: &str, query: &[(&str, &str)]) -> Value {
        let params = [("site_id", SITE)].into_iter().chain(query.iter().copied());
        let url = reqwest::Url::parse_with_params(&format!("{base}{path}"), params).unwrap();
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{path} {query:?}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn post(&self, base: &str, body: &Value) -> Value {
        let response = self
            .http
            .post(format!("{base}/api/v2/query"))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }
}

async fn start(ch: &TestClickHouse) -> Services {
    glimpse_core::schema::migrate(&ch.client, DB).await.unwrap();
    let rows = fixture();
    common::insert_events(&ch.client, DB, &rows).await;
    // The rollup's listing of the days counts their events: what the plan weighs.
    let now = common::utc_day_start("2026-03-20");
    let report = glimpse_query::rollup::refresh(&ch.client, DB, now)
        .await
        .unwrap();
    assert_eq!(report.days_built.len(), DAYS as usize, "{report:?}");
    println!("fixture: {} events of {VISITORS} visitors", rows.len());

    let config = |threshold: u64| Config {
        sites: vec![Site::parse(SiteConfig::new(SITE)).unwrap()],
        query: glimpse_core::config::QueryConfig {
            sampling_threshold_rows: threshold,
            ..ch.config().query
        },
        ..ch.config()
    };
    let mut bases = Vec::new();
    for threshold in [THRESHOLD, 0] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(glimpse_query::serve(
            config(threshold),
            listener,
            std::future::pending(),
        ));
    }
    let (key, _) = glimpse_query::auth::create_key(&ch.client, DB, &config(0), SITE, "test")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for base in &bases {
        common::wait_for_200(&http, &format!("{base}/ready"), Duration::from_secs(30)).await;
    }
    Services {
        sampled: bases[0].clone(),
        exact: bases[1].clone(),
        key,
        http,
    }
}

/// The fixture's period: all ten days.
const PERIOD: [(&str, &str); 2] = [("period", "custom"), ("date", "2026-03-01,2026-03-10")];

/// The 1-in-N of a sampled answer, after checking what it says about itself.
fn sampling_of(answer: &Value, sampling: &Value) -> u64 {
    let rate = sampling["rate"]
        .as_f64()
        .unwrap_or_else(|| panic!("{answer}"));
    let every = (1.0 / rate).round() as u64;
    assert!(every > 1, "{sampling}");
    assert_eq!(sampling["error_z"], json!(3.29));
    assert!(sampling["note"].as_str().unwrap().contains("sampling=off"));
    every
}

/// `sampled` (an estimate of rate 1/`every`) within the stated error of `exact`:
/// Z·√(n·(1−r)/r) for visitor counts, and √(page views per visitor) times that for the other
/// counts (the variance of a sum over sampled visitors grows with the square of each one's
/// count). Returns how many margins off it is.
fn within_stated_error(what: &str, sampled: u64, exact: u64, every: u64, per_visitor: u64) -> f64 {
    let r = 1.0 / every as f64;
    let margin = 3.29 * (sampled.max(1) as f64 * per_visitor as f64 * (1.0 - r) / r).sqrt();
    let off = (sampled as f64 - exact as f64).abs();
    assert!(
        off <= margin,
        "{what}: sampled {sampled}, exact {exact}, stated margin ±{margin:.0}"
    );
    off / margin
}

/// Compares the counts of two rows of the same key, sampled and exact.
fn compare_counts(what: &str, sampled: &Value, exact: &Value, every: u64, worst: &mut f64) {
    for (metric, per_visitor) in [("visitors", 1), ("visits", 1), ("pageviews", MAX_PAGEVIEWS)] {
        let (Some(s), Some(e)) = (sampled[metric].as_u64(), exact[metric].as_u64()) else {
            continue;
        };
        let off = within_stated_error(&format!("{what} {metric}"), s, e, every, per_visitor);
        *worst = worst.max(off);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_answers_lie_within_their_stated_error_and_exact_ones_are_exact() {
    let ch = TestClickHouse::start().await;
    let s = start(&ch).await;
    let mut worst: f64 = 0.0;
    let metrics = (
        "metrics",
        "visitors,visits,pageviews,bounce_rate,visit_duration",
    );
    let filter = ("filters", "visit:country==DE|FR");

    // A filtered aggregate: the rollup cannot answer it, so above the threshold it is sampled.
    let query = [PERIOD[0], PERIOD[1], metrics, filter];
    let sampled = s.get(&s.sampled, "/api/v1/stats/aggregate", &query).await;
    let exact = s.get(&s.exact, "/api/v1/stats/aggregate", &query).await;
    assert!(exact.get("sampling").is_none(), "{exact}");
    let every = sampling_of(&sampled, &sampled["sampling"]);
    assert_eq!(
        sampled["sampling"]["rows"]
            .as_u64()
            .unwrap()
            .div_ceil(THRESHOLD),
        every,
        "1 in ⌈rows / threshold⌉"
    );
    let value = |a: &Value, m: &str| a["results"][m]["value"].clone();
    for m in ["visitors", "visits", "pageviews"] {
        let (a, b) = (value(&sampled, m), value(&exact, m));
        let per_visitor = if m == "pageviews" { MAX_PAGEVIEWS } else { 1 };
        let off = within_stated_error(
            &format!("aggregate {m}"),
            a.as_u64().unwrap(),
            b.as_u64().unwrap(),
            every,
            per_visitor,
        );
        worst = worst.max(off);
    }
    // Rates are not scaled: a sample's bounce rate is close to the exact one.
    let bounce = |a: &Value| value(a, "bounce_rate").as_f64().unwrap();
    assert!(
        (bounce(&sampled) - bounce(&exact)).abs() <= 5.0,
        "bounce rate {} vs {}",
        bounce(&sampled),
        bounce(&exact)
    );
    println!(
        "aggregate, 1 in {every}: visitors {} (exact {}), pageviews {} (exact {}), bounce rate {} (exact {})",
        value(&sampled, "visitors"),
        value(&exact, "visitors"),
        value(&sampled, "pageviews"),
        value(&exact, "pageviews"),
        bounce(&sampled),
        bounce(&exact)
    );

    // A filtered daily timeseries, bucket by bucket.
    let query = [
        PERIOD[0],
        PERIOD[1],
        ("metrics", "visitors,visits,pageviews"),
        filter,
    ];
    let sampled = s.get(&s.sampled, "/api/v1/stats/timeseries", &query).await;
    let exact = s.get(&s.exact, "/api/v1/stats/timeseries", &query).await;
    let every = sampling_of(&sampled, &sampled["sampling"]);
    let (a, b) = (
        sampled["results"].as_array().unwrap(),
        exact["results"].as_array().unwrap(),
    );
    assert_eq!(a.len(), DAYS as usize);
    for (a, b) in a.iter().zip(b) {
        assert_eq!(a["date"], b["date"]);
        compare_counts(
            &format!("timeseries {}", a["date"]),
            a,
            b,
            every,
            &mut worst,
        );
    }

    // A filtered breakdown by source: every key of the exact answer is there, within its error.
    let query = [
        PERIOD[0],
        PERIOD[1],
        ("metrics", "visitors,visits,pageviews"),
        ("property", "visit:source"),
        filter,
    ];
    let sampled = s.get(&s.sampled, "/api/v1/stats/breakdown", &query).await;
    let exact = s.get(&s.exact, "/api/v1/stats/breakdown", &query).await;
    let every = sampling_of(&sampled, &sampled["sampling"]);
    let exact_rows = exact["results"].as_array().unwrap();
    assert_eq!(exact_rows.len(), SOURCES.len(), "{exact}");
    for b in exact_rows {
        let a = sampled["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["source"] == b["source"])
            .unwrap_or_else(|| panic!("{} missing from {sampled}", b["source"]));
        compare_counts(
            &format!("breakdown {}", b["source"]),
            a,
            b,
            every,
            &mut worst,
        );
    }

    // v2: `meta.sampling`, the same figures.
    let body = |include: Value| {
        json!({
            "site_id": SITE,
            "metrics": ["visitors", "visits", "pageviews"],
            "date_range": ["2026-03-01", "2026-03-10"],
            "dimensions": ["visit:country"],
            "filters": [["is", "visit:source", ["Google", "Newsletter"]]],
            "include": include,
        })
    };
    let sampled = s.post(&s.sampled, &body(json!({}))).await;
    let exact = s.post(&s.exact, &body(json!({}))).await;
    assert!(exact["meta"].get("sampling").is_none(), "{exact}");
    let every = sampling_of(&sampled, &sampled["meta"]["sampling"]);
    let rows = |a: &Value| -> Vec<(String, Vec<u64>)> {
        let mut rows: Vec<(String, Vec<u64>)> = a["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let metrics = r["metrics"].as_array().unwrap();
                (
                    r["dimensions"][0].as_str().unwrap().to_string(),
                    metrics.iter().map(|m| m.as_u64().unwrap()).collect(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let (a, b) = (rows(&sampled), rows(&exact));
    assert_eq!(b.len(), COUNTRIES.len());
    assert_eq!(
        a.iter().map(|r| &r.0).collect::<Vec<_>>(),
        b.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for ((key, a), (_, b)) in a.iter().zip(&b) {
        for (i, per_visitor) in [1, 1, MAX_PAGEVIEWS].into_iter().enumerate() {
            let off =
                within_stated_error(&format!("v2 {key} #{i}"), a[i], b[i], every, per_visitor);
            worst = worst.max(off);
        }
    }
    println!("sampled figures: the worst is {worst:.2} of its stated margin off");

    // Asked for exact figures: exact, and not said to be sampled.
    let query = [PERIOD[0], PERIOD[1], metrics, filter];
    let mut off = query.to_vec();
    off.push(("sampling", "off"));
    let asked_exact = s.get(&s.sampled, "/api/v1/stats/aggregate", &off).await;
    let exact = s.get(&s.exact, "/api/v1/stats/aggregate", &query).await;
    assert_eq!(asked_exact, exact);
    let asked_exact = s
        .post(&s.sampled, &body(json!({ "sampling": false })))
        .await;
    assert!(asked_exact["meta"].get("sampling").is_none());
    assert_eq!(
        rows(&asked_exact),
        rows(&s.post(&s.exact, &body(json!({}))).await)
    );

    // Unfiltered days come from the rollup: exact, whatever the threshold.
    let query = [
        PERIOD[0],
        PERIOD[1],
        ("metrics", "visitors,visits,pageviews"),
    ];
    let rolled = s.get(&s.sampled, "/api/v1/stats/aggregate", &query).await;
    assert!(rolled.get("sampling").is_none(), "{rolled}");
    assert_eq!(
        rolled,
        s.get(&s.exact, "/api/v1/stats/aggregate", &query).await
    );
    assert_eq!(rolled["results"]["visitors"]["value"], json!(VISITORS));

    // A bad value is refused with its reason.
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/stats/aggregate", s.sampled),
        [("site_id", SITE), ("sampling", "sometimes")],
    )
    .unwrap();
    let response = s.http.get(url).bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("sampling"));
}

/// A sample reads about 1 in N of the period's rows, not all of them: `visitor_id` follows
/// `(site, day, name)` in the events' sort key, so ClickHouse skips the granules above the
/// cutoff (as `SAMPLE` would on a sampling key). Checked with the plan's own statement and
/// ClickHouse's `max_rows_to_read`, which refuses a statement whose index ranges hold more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_reads_a_share_of_the_rows() {
    use glimpse_query::params::Endpoint;
    use glimpse_query::plan::Request;

    let ch = TestClickHouse::start().await;
    glimpse_core::schema::migrate(&ch.client, DB).await.unwrap();
    // 2 million page views over ten days, from uniform visitor ids, merged into one part.
    ch.client
        .query(
            "INSERT INTO glimpse.events (site, timestamp, name, visitor_id, session_id, \
             visit_start, visit_entry, country) SELECT 'example.com', \
             toDateTime(1772323200 + (number % 10) * 86400 + 100), 'pageview', \
             cityHash64(number), number, toDateTime(1772323200 + (number % 10) * 86400 + 100), \
             1, 'DE' FROM numbers(2000000)",
        )
        .execute()
        .await
        .unwrap();
    ch.client
        .query("OPTIMIZE TABLE glimpse.events FINAL")
        .execute()
        .await
        .unwrap();
    let site = glimpse_query::auth::Site::parse(SiteConfig::new(SITE)).unwrap();
    let query = [
        ("site_id", SITE),
        PERIOD[0],
        PERIOD[1],
        ("metrics", "visitors,pageviews"),
        ("filters", "visit:country==DE"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let now = "2026-03-20T00:00:00Z".parse().unwrap();
    let exact = Request::new(Endpoint::Aggregate, &query, site, now).unwrap();
    let mut sampled = exact.clone();
    sampled.sample(2_000_000, 200_000, &[]);
    assert_eq!(sampled.sampling.map(|s| s.every), Some(10));
    let statement = |r: &Request| r.stats_plan(DB, 0, &[]).unwrap().current.stats;
    let limited = ch.client.clone().with_setting("max_rows_to_read", "300000");
    let row: glimpse_query::sql::StatsRow = statement(&sampled)
        .query(&limited)
        .fetch_one()
        .await
        .expect("a 1-in-10 sample reads under 300,000 of the 2,000,000 rows");
    let estimate = row.pageviews as f64;
    assert!(
        (estimate - 2_000_000.0).abs() < 3.29 * (2_000_000.0 * 9.0f64).sqrt(),
        "{row:?}"
    );
    let error = statement(&exact)
        .query(&limited)
        .fetch_one::<glimpse_query::sql::StatsRow>()
        .await
        .expect_err("the exact statement reads every row");
    assert!(error.to_string().contains("Limit for rows"), "{error}");
    println!("1 in 10 under 300,000 rows read: {row:?}");
}
