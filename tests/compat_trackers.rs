//! Drop-in compatibility end to end: the REAL, unmodified Umami (3.1) and Matomo (5.2)
//! JavaScript trackers vendored in `tests/fixtures/trackers/`, in real headless Chromium, pointed at an
//! in-process collector that writes to a real ClickHouse, and the no-JavaScript pixel in a
//! `<noscript>` page with JavaScript off. Chromium is driven by
//! `tracker-js/e2e/compat_driver.mjs` (puppeteer-core), which serves the pages on another port.
//! The rows must be exactly the right ones, and the stats API must report them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::browser::{props, require_browser, run_driver};
use common::{browser_client, wait_for_200, TestClickHouse};
use glimpse_core::schema::EventRow;
use glimpse_core::site::Site;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const UMAMI_JS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/trackers/umami/script.min.js"
);
const MATOMO_JS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/trackers/matomo/matomo.js"
);
const UMAMI_WEBSITE: &str = "3f1c1a4e-7d2b-4c55-9a0e-2b7f5c8d9e01";
const UMAMI_SITE: &str = "umami.example.com";
const MATOMO_SITE: &str = "matomo.example.com";
const PIXEL_SITE: &str = "pixel.example.com";

/// Fails (never skips) when the browser, node, puppeteer-core or the real trackers are missing.
fn require_trackers() {
    require_browser(&[]);
    for tracker in [UMAMI_JS, MATOMO_JS] {
        assert!(
            Path::new(tracker).exists(),
            "the real tracker {tracker} is missing (see tests/fixtures/trackers/README.md)"
        );
    }
}

fn config(ch: &TestClickHouse) -> glimpse_core::Config {
    let mut config = ch.config();
    config.sites = [UMAMI_SITE, MATOMO_SITE, PIXEL_SITE]
        .into_iter()
        .map(Site::new)
        .collect();
    config.collector.umami_websites = [(UMAMI_WEBSITE.to_string(), UMAMI_SITE.to_string())].into();
    config.collector.matomo_sites = [("1".to_string(), MATOMO_SITE.to_string())].into();
    config
}

/// Runs the browser driver against `collector` and returns the facts it reports.
async fn drive_chromium(collector: &str) -> Value {
    let env = [
        ("COLLECTOR", collector),
        ("UMAMI_JS", UMAMI_JS),
        ("MATOMO_JS", MATOMO_JS),
        ("UMAMI_WEBSITE", UMAMI_WEBSITE),
        ("MATOMO_SITE", "1"),
        ("PIXEL_SITE", PIXEL_SITE),
    ];
    run_driver("compat_driver.mjs", &env, Duration::from_secs(180)).await
}

type Counts = BTreeMap<(String, String, String), usize>;

fn expected(rows: &[(&str, &str, &str, usize)]) -> Counts {
    rows.iter()
        .map(|(s, n, p, c)| ((s.to_string(), n.to_string(), p.to_string()), *c))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_umami_and_matomo_trackers_and_the_pixel_record_the_right_rows() {
    require_trackers();
    let ch = TestClickHouse::start().await;
    let config = config(&ch);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(glimpse_collector::serve(config.clone(), listener, async {
        let _ = stopped.await;
    }));
    let client = browser_client();
    wait_for_200(&client, &format!("{base}/ready"), Duration::from_secs(30)).await;

    let facts = drive_chromium(&base).await;
    println!("browser facts: {facts}");
    // The process's metrics listener (`metrics_addr`), not the public port.
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_base = format!("http://{}", metrics_listener.local_addr().unwrap());
    tokio::spawn(glimpse_core::telemetry::serve_metrics(
        metrics_listener,
        std::future::pending(),
    ));
    let metrics = client
        .get(format!("{metrics_base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!((report.rows_lost, report.rows_left_in_spool), (0, 0));

    // What the browser saw: Umami's tracker got JSON without a session token and kept going;
    // Matomo's sendBeacon got 204; the pixel got the GIF, with JavaScript off.
    let all = |key: &str, status: u64| {
        let list = facts[key].as_array().unwrap();
        assert!(list.iter().all(|s| s == status), "{key}: {list:?}");
    };
    all("umami_statuses", 200);
    all("matomo_statuses", 204);
    all("pixel_statuses", 200);
    assert_eq!(facts["umami_session"]["cache"], Value::Null);
    assert_eq!(facts["pixel_title"], "Pixel");
    for t in facts["pixel_content_types"].as_array().unwrap() {
        assert_eq!(t, "image/gif");
    }
    let site = facts["site"].as_str().unwrap().to_string();
    let other = facts["other"].as_str().unwrap().to_string();
    assert_eq!(
        facts["matomo_landed_on"],
        format!("{other}/outbound-target")
    );

    let rows: Vec<EventRow> = ch
        .client
        .query("SELECT ?fields FROM glimpse.events ORDER BY timestamp, name, pathname")
        .fetch_all()
        .await
        .unwrap();
    let mut counts = Counts::new();
    for row in &rows {
        *counts
            .entry((row.site.clone(), row.name.clone(), row.pathname.clone()))
            .or_default() += 1;
        assert_eq!(row.hostname, "127.0.0.1", "{row:?}");
        assert_eq!(row.browser, "Chrome", "{row:?}");
        assert_eq!(row.device, "desktop", "{row:?}");
    }
    for ((site, name, path), n) in &counts {
        println!("row: {site} {name} {path} × {n}");
    }
    let want = expected(&[
        // Umami: the load, two pushState navigations, track() and a data-umami-event click.
        // identify() is answered and not stored.
        (UMAMI_SITE, "pageview", "/umami", 1),
        (UMAMI_SITE, "pageview", "/umami/a", 1),
        (UMAMI_SITE, "pageview", "/umami/b", 1),
        (UMAMI_SITE, "Signup", "/umami/b", 1),
        (UMAMI_SITE, "Click Goal", "/umami/b", 1),
        // Matomo: the load, two SPA trackPageView calls, trackEvent, a download and an
        // outbound link, named as Glimpse's tracker names them.
        (MATOMO_SITE, "pageview", "/matomo", 1),
        (MATOMO_SITE, "pageview", "/matomo/a", 1),
        (MATOMO_SITE, "pageview", "/matomo/b", 1),
        (MATOMO_SITE, "Video: Play", "/matomo/b", 1),
        (MATOMO_SITE, "File Download", "/matomo", 1),
        (MATOMO_SITE, "Outbound Link: Click", "/matomo", 1),
        // The pixel: the page from the Referer, and an explicit u= (query dropped).
        (PIXEL_SITE, "pageview", "/pixel", 1),
        (PIXEL_SITE, "pageview", "/newsletter/2026-11", 1),
    ]);
    assert_eq!(counts, want);
    println!(
        "compat e2e: {} rows in ClickHouse, exactly the expected ones",
        rows.len()
    );

    let find = |site: &str, name: &str, path: &str| {
        rows.iter()
            .find(|r| r.site == site && r.name == name && r.pathname == path)
            .unwrap_or_else(|| panic!("no {site} {name} {path}"))
    };
    assert_eq!(
        props(find(UMAMI_SITE, "Signup", "/umami/b")),
        [("plan", "pro"), ("seats", "3")].into()
    );
    assert_eq!(
        props(find(UMAMI_SITE, "Click Goal", "/umami/b")),
        [("position", "hero")].into()
    );
    let umami_screen = facts["umami_bodies"][0]["payload"]["screen"]
        .as_str()
        .unwrap();
    let width: u16 = umami_screen.split('x').next().unwrap().parse().unwrap();
    assert_eq!(find(UMAMI_SITE, "pageview", "/umami").screen_width, width);
    // SPA referrers are the previous page on the same host: not a referrer.
    assert_eq!(find(UMAMI_SITE, "pageview", "/umami/a").referrer, "");
    assert_eq!(
        props(find(MATOMO_SITE, "Video: Play", "/matomo/b")),
        [("name", "Intro"), ("value", "12")].into()
    );
    let download = format!("{site}/files/report.pdf");
    assert_eq!(
        props(find(MATOMO_SITE, "File Download", "/matomo")),
        [("url", download.as_str())].into()
    );
    let outbound = format!("{other}/outbound-target");
    assert_eq!(
        props(find(MATOMO_SITE, "Outbound Link: Click", "/matomo")),
        [("url", outbound.as_str())].into()
    );
    assert!(find(MATOMO_SITE, "pageview", "/matomo").screen_width > 0);
    assert_eq!(
        find(PIXEL_SITE, "pageview", "/newsletter/2026-11").utm_source,
        "mail"
    );
    // Same visitor, same day, same site: one pseudonym per site, whatever the tracker sent.
    for s in [UMAMI_SITE, MATOMO_SITE] {
        let ids: std::collections::HashSet<_> = rows
            .iter()
            .filter(|r| r.site == s)
            .map(|r| r.visitor_id)
            .collect();
        assert_eq!(ids.len(), 1, "{s}: {ids:?}");
    }

    // Per-protocol counters.
    for line in [
        "glimpse_events_accepted_total{protocol=\"umami\"} 5",
        "glimpse_events_accepted_total{protocol=\"matomo\"} 6",
        "glimpse_events_accepted_total{protocol=\"pixel\"} 2",
        "glimpse_events_ignored_total{protocol=\"umami\",reason=\"identify\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }

    // The stats API reports them like any other events.
    let query_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let query_base = format!("http://{}", query_listener.local_addr().unwrap());
    let stop_query = tokio_util::sync::CancellationToken::new();
    tokio::spawn(glimpse_query::serve(
        config.clone(),
        query_listener,
        stop_query.clone().cancelled_owned(),
    ));
    let (key, _) = glimpse_query::auth::create_key(&ch.client, "glimpse", &config, "*", "compat")
        .await
        .unwrap();
    wait_for_200(
        &client,
        &format!("{query_base}/ready"),
        Duration::from_secs(30),
    )
    .await;
    let stats = |path: &str, params: Vec<(&str, &str)>| {
        let url = reqwest::Url::parse_with_params(&format!("{query_base}{path}"), params).unwrap();
        let request = client.get(url).bearer_auth(&key).send();
        async move {
            let response = request.await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    for (site, pageviews) in [(UMAMI_SITE, 3), (MATOMO_SITE, 3), (PIXEL_SITE, 2)] {
        let aggregate = stats(
            "/api/v1/stats/aggregate",
            vec![
                ("site_id", site),
                ("period", "day"),
                ("metrics", "visitors,pageviews"),
            ],
        )
        .await;
        assert_eq!(
            aggregate["results"]["pageviews"]["value"], pageviews,
            "{site}: {aggregate}"
        );
        assert_eq!(
            aggregate["results"]["visitors"]["value"], 1,
            "{site}: {aggregate}"
        );
    }
    let names = stats(
        "/api/v1/stats/breakdown",
        vec![
            ("site_id", MATOMO_SITE),
            ("period", "day"),
            ("property", "event:name"),
            ("metrics", "events"),
        ],
    )
    .await;
    let mut got: Vec<(String, u64)> = names["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["events"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("File Download".to_string(), 1),
            ("Outbound Link: Click".to_string(), 1),
            ("Video: Play".to_string(), 1),
            ("pageview".to_string(), 3),
        ]
    );
    println!("compat e2e: the stats API reports the Umami, Matomo and pixel events");
    stop_query.cancel();
}
