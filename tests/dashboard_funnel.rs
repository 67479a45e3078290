//! A saved funnel and a year-over-year comparison on the dashboard, end to end: two Marches of
//! visits (2025 and 2026) of a site stored in the live registry with two saved funnels, the
//! query service in-process, and real headless Chromium driven by
//! `tracker-js/e2e/dashboard_funnel.mjs`, which signs in with a key, picks year over year and a
//! saved funnel in the Funnels card, with a filter in the view. Every figure the card shows
//! (visitors, conversion, drop-off per step) must be `POST /api/v2/funnel`'s for the view, the
//! visitors also recounted from the fixture by walking each visit; the headline's
//! year-over-year figures must be the API's; the site's settings list the funnels and save a
//! new one. Screenshots: `target/dashboard-funnel.png`,
//! `target/dashboard-funnel-mobile.png`, `target/settings-funnels.png`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use common::browser::{require_browser, run_driver};
use common::{insert_events, utc_day_start, Lcg, TestClickHouse};
use glimpse_core::funnels::{Funnel, Step};
use glimpse_core::registry::Registry;
use glimpse_core::schema::EventRow;
use glimpse_core::site::Sites;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const SITE: &str = "shop.example";
/// March 2026 against March 2025, Google visits only.
const VIEW: &str = "period=month&date=2026-03-15&filters=visit:source==Google";
const FUNNEL: &str = "Checkout";

/// Visits every day of March 2025 and 2026 wandering between the shop's pages and signing up,
/// from two sources; some visitors come back.
fn fixture() -> Vec<EventRow> {
    let mut rng = Lcg(7);
    let steps = ["/", "/pricing", "!Signup", "/docs", "/pricing", "/thanks"];
    let mut rows = Vec::new();
    let mut session_id = 0;
    for (year, base) in [(2025, 4u64), (2026, 6)] {
        for day in 1..=31u64 {
            let start = utc_day_start(&format!("{year}-03-{day:02}"));
            for v in 0..base + rng.next(5) {
                session_id += 1;
                let source = if rng.next(3) == 0 { "" } else { "Google" };
                let mut ts = start + rng.next(22 * 3600) as i64;
                // Returning visitors: the same id on a few days.
                let visitor = year * 1_000_000 + (day % 4) * 1000 + v;
                for i in 0..1 + rng.next(5) {
                    let event = steps[rng.next(steps.len() as u64) as usize];
                    let (name, path) = match event.strip_prefix('!') {
                        Some(name) => (name, "/"),
                        None => ("pageview", event),
                    };
                    rows.push(EventRow {
                        site: SITE.into(),
                        timestamp: ts as u32,
                        name: name.into(),
                        hostname: SITE.into(),
                        pathname: path.into(),
                        visitor_id: visitor,
                        session_id,
                        referrer_source: if i == 0 { source.into() } else { String::new() },
                        browser: "Firefox".into(),
                        os: "GNU/Linux".into(),
                        device: "desktop".into(),
                        country: "DE".into(),
                        interactive: 1,
                        ..EventRow::default()
                    });
                    ts += 20 + rng.next(300) as i64;
                }
            }
        }
    }
    glimpse_collector::ingest::sessions::stamp_visits(&mut rows);
    rows
}

/// The saved funnel shown, in the fixture's terms.
fn checkout() -> Funnel {
    Funnel {
        name: FUNNEL.into(),
        steps: vec![
            Step::Page("/pricing".into()),
            Step::Event("Signup".into()),
            Step::Page("/thank*".into()),
        ],
    }
}

/// Visitors per step of `checkout()` over the Google visits that started in March 2026,
/// walking each visit's events in time order.
fn recount(rows: &[EventRow]) -> Vec<u64> {
    let (start, end) = (utc_day_start("2026-03-01"), utc_day_start("2026-04-01"));
    let mut visits: HashMap<u64, Vec<&EventRow>> = HashMap::new();
    for r in rows {
        if (start..end).contains(&i64::from(r.visit_start)) && r.visit_referrer_source == "Google" {
            visits.entry(r.session_id).or_default().push(r);
        }
    }
    let is_step = |i: usize, r: &EventRow| match i {
        0 => r.name == "pageview" && r.pathname == "/pricing",
        1 => r.name == "Signup",
        _ => r.name == "pageview" && r.pathname.starts_with("/thank"),
    };
    let mut furthest: BTreeMap<u64, usize> = BTreeMap::new();
    for events in visits.values_mut() {
        events.sort_by_key(|r| r.timestamp);
        let mut level = 0;
        for r in events.iter() {
            if level < 3 && is_step(level, r) {
                level += 1;
            }
        }
        let best = furthest.entry(events[0].visitor_id).or_default();
        *best = (*best).max(level);
    }
    (1..=3)
        .map(|i| furthest.values().filter(|&&l| l >= i).count() as u64)
        .collect()
}

struct Service {
    _ch: TestClickHouse,
    base: String,
    key: String,
    http: reqwest::Client,
}

async fn start(rows: &[EventRow]) -> Service {
    let ch = TestClickHouse::start().await;
    glimpse_core::schema::migrate(&ch.client, "glimpse")
        .await
        .expect("migrate");
    insert_events(&ch.client, "glimpse", rows).await;
    // A stored site, as the Sites API makes them, with its saved funnels.
    let registry = Registry::new(ch.client.clone(), "glimpse");
    registry
        .put_site(&Sites::new(&[]), SITE, "UTC")
        .await
        .unwrap();
    let signup = glimpse_core::goals::Goal::parse("Signup").unwrap();
    registry.put_goal(SITE, &signup).await.unwrap();
    registry.put_funnel(SITE, &checkout()).await.unwrap();
    let browse = Funnel {
        name: "Browse".into(),
        steps: vec![Step::Page("/".into()), Step::Page("/docs".into())],
    };
    registry.put_funnel(SITE, &browse).await.unwrap();
    let config = ch.config();
    // A key that may also change the site: the driver saves a funnel in its settings.
    let key = glimpse_query::auth::create_scoped_key(
        &ch.client,
        "glimpse",
        &config,
        SITE,
        "funnel",
        glimpse_query::accounts::KeyScope::Sites,
    )
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

impl Service {
    async fn json(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request.bearer_auth(&self.key).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_saved_funnel_and_a_year_over_year_comparison_as_the_api_does() {
    require_browser(&[]);
    let rows = fixture();
    let s = start(&rows).await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&shots).unwrap();
    let shots_text = shots.to_string_lossy();
    let env = [
        ("BASE", s.base.as_str()),
        ("KEY", s.key.as_str()),
        ("SITE", SITE),
        ("VIEW", VIEW),
        ("FUNNEL", FUNNEL),
        ("SHOTS", shots_text.as_ref()),
    ];
    let facts = run_driver("dashboard_funnel.mjs", &env, Duration::from_secs(150)).await;
    println!("dashboard funnel facts: {facts}");
    assert_eq!(facts["errors"], json!([]), "console or page errors");
    assert_eq!(facts["funnels"], json!(["Browse", "Checkout"]));
    assert_eq!(
        facts["params"]["funnel"], FUNNEL,
        "the URL keeps the funnel"
    );
    assert_eq!(facts["params"]["comparison"], "year_over_year");

    // The card's figures are the API's for the view (March 2026, Google visits)...
    let api = s
        .json(
            s.http
                .post(format!("{}/api/v2/funnel", s.base))
                .json(&json!({
                    "site_id": SITE, "date_range": "month", "date": "2026-03-15",
                    "filters": [["is", "visit:source", ["Google"]]], "funnel": FUNNEL
                })),
        )
        .await;
    // (Rates compared as numbers: the page's 100 is the API's 100.0.)
    let step = |s: &Value| {
        (
            s["label"].as_str().unwrap().to_string(),
            s["visitors"].as_u64().unwrap(),
            s["conversion_rate"].as_f64().unwrap(),
            s["dropoff"].as_u64().unwrap(),
        )
    };
    let want: Vec<_> = api["steps"].as_array().unwrap().iter().map(step).collect();
    let shown: Vec<_> = facts["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(step)
        .collect();
    assert_eq!(shown, want);
    // ... and the visitors those of a walk through the fixture's visits.
    let recounted = recount(&rows);
    let shown: Vec<u64> = shown.iter().map(|s| s.1).collect();
    assert_eq!(shown, recounted);
    assert!(
        recounted[2] > 0,
        "every step reached by someone: {recounted:?}"
    );
    assert!(recounted[0] > recounted[2], "some drop off: {recounted:?}");

    // The headline's year-over-year figures are the API's.
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/stats/aggregate", s.base),
        [
            ("site_id", SITE),
            ("period", "month"),
            ("date", "2026-03-15"),
            ("filters", "visit:source==Google"),
            ("comparison", "year_over_year"),
            ("metrics", "visitors,pageviews"),
        ],
    )
    .unwrap();
    let aggregate = s.json(s.http.get(url)).await;
    for metric in ["visitors", "pageviews"] {
        let (tile, r) = (&facts["headline"][metric], &aggregate["results"][metric]);
        assert_eq!(tile["value"], json!(r["value"].to_string()), "{metric}");
        assert_eq!(
            tile["comparison"],
            json!(r["comparison_value"].to_string()),
            "{metric} a year earlier"
        );
    }

    // The site's settings list the saved funnels; the one saved there is the API's.
    assert_eq!(facts["settings_funnels"], json!(["Browse", "Checkout"]));
    let url = format!("{}/api/v1/sites/funnels?site_id={SITE}", s.base);
    let saved = s.json(s.http.get(url)).await;
    let docs = saved["funnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Docs")
        .unwrap_or_else(|| panic!("{saved}"));
    assert_eq!(
        docs["steps"],
        json!([{"page": "/"}, {"goal": "Signup"}, {"event": "Download"}])
    );
    assert_eq!(
        facts["settings_after_save"],
        json!(["Browse", "Checkout", "Docs"])
    );

    // A phone: the same figures, nothing wider than the screen.
    assert_eq!(facts["mobile_overflow"], 0);
    assert_eq!(facts["mobile_steps"], facts["steps"]);
    println!(
        "screenshots: {}",
        ["dashboard-funnel.png", "dashboard-funnel-mobile.png"]
            .map(|f| shots.join(f).display().to_string())
            .join(", ")
    );
}
