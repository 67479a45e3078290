//! The tracker (`tracker-js/`) end to end: real headless Chromium loads test pages that embed
//! the script served by an in-process collector, which writes to a real ClickHouse; the rows
//! must be exactly the right ones. Chromium is driven by `tracker-js/e2e/driver.mjs`
//! (puppeteer-core), which serves the pages on another port (cross-origin beacons, as in
//! production) and reports what the browser saw. Also: the script's serving (paths,
//! compression, caching), and the size of each variant as served.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use common::browser::{props, require_browser, run_driver};
use common::{browser_client, wait_for_200, TestClickHouse};
use glimpse_collector::http::script;
use glimpse_core::schema::EventRow;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Collector {
    base: String,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<
        Result<glimpse_collector::ServeReport, glimpse_collector::ServeError>,
    >,
}

async fn start_collector(config: glimpse_core::Config) -> Collector {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(glimpse_collector::serve(config, listener, async {
        let _ = stopped.await;
    }));
    wait_for_200(
        &browser_client(),
        &format!("{base}/ready"),
        Duration::from_secs(30),
    )
    .await;
    Collector { base, stop, server }
}

impl Collector {
    /// Stops it; everything accepted is in ClickHouse afterwards.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        let report = self.server.await.unwrap().unwrap();
        assert_eq!(report.rows_lost, 0);
        assert_eq!(report.rows_left_in_spool, 0);
    }
}

/// Runs the browser driver against `collector` and returns the facts it reports.
async fn drive_chromium(collector: &str) -> serde_json::Value {
    run_driver(
        "driver.mjs",
        &[("COLLECTOR", collector)],
        Duration::from_secs(180),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_in_real_chromium_records_exactly_the_right_rows() {
    require_browser(&["@plausible-analytics/tracker"]);
    let ch = TestClickHouse::start().await;
    let collector = start_collector(ch.config()).await;

    // The size of each variant as the collector serves it.
    let client = browser_client();
    for i in 0..script::variant_count() {
        let url = format!("{}/js/{}", collector.base, script::file_name(i));
        let mut sizes = Vec::new();
        for encoding in ["identity", "gzip", "br"] {
            let response = client
                .get(&url)
                .header("accept-encoding", encoding)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{url}");
            sizes.push(response.bytes().await.unwrap().len());
        }
        // Straight to stderr, past the test harness's capture: scripts/test.sh shows it.
        let _ = writeln!(
            std::io::stderr(),
            "served /js/{}: {} B, gzip {} B, brotli {} B",
            script::file_name(i),
            sizes[0],
            sizes[1],
            sizes[2]
        );
        if i == 0 {
            assert!(sizes[1] <= 1024, "script.js is {} B gzipped", sizes[1]);
        }
    }

    let facts = drive_chromium(&collector.base).await;
    println!("browser facts: {facts}");
    collector.stop().await;

    let site = facts["site"].as_str().unwrap().to_string();
    let other = facts["other"].as_str().unwrap().to_string();
    let rows: Vec<EventRow> = ch
        .client
        .query("SELECT ?fields FROM glimpse.events ORDER BY timestamp, name, pathname")
        .fetch_all()
        .await
        .unwrap();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in &rows {
        *counts
            .entry((row.name.clone(), row.pathname.clone()))
            .or_default() += 1;
        assert_eq!(row.site, "example.com");
        assert_eq!(row.hostname, "127.0.0.1");
        assert_eq!(row.browser, "Chrome", "{row:?}");
        assert_eq!(row.device, "desktop", "{row:?}");
    }
    for ((name, path), n) in &counts {
        println!("row: {name} {path} × {n}");
    }
    let expected: BTreeMap<(String, String), usize> = [
        // One page load: one pageview.
        ("pageview", "/landing", 1),
        // SPA: the load, three pushState navigations and one popstate (back to /spa/b).
        ("pageview", "/spa", 1),
        ("pageview", "/spa/a", 1),
        ("pageview", "/spa/b", 2),
        ("pageview", "/spa/c", 1),
        ("pageview", "/events", 1),
        ("Queued Event", "/events", 1),
        ("Signup", "/events", 1),
        ("Click Goal", "/events", 1),
        ("pageview", "/links", 1),
        ("File Download", "/links", 1),
        ("Outbound Link: Click", "/links", 2),
        ("pageview", "/read", 1),
        ("engagement", "/read", 1),
        // Plausible's own tracker: its pageview and its custom event.
        ("pageview", "/plausible", 1),
        ("Plausible Signup", "/plausible", 1),
        // Nothing from /no-flag, /private, /private-server, /after-optout, /outbound-target.
    ]
    .into_iter()
    .map(|(n, p, c)| ((n.to_string(), p.to_string()), c))
    .collect();
    // Plausible's tracker also sends an engagement event when its tab closes, if it can.
    let plausible_engagement = counts.remove(&("engagement".into(), "/plausible".into()));
    assert!(plausible_engagement.unwrap_or(0) <= 1);
    assert_eq!(counts, expected);
    println!(
        "tracker e2e: {} rows in ClickHouse, exactly the expected ones",
        rows.len()
    );

    let find = |name: &str, path: &str| {
        rows.iter()
            .filter(|r| r.name == name && r.pathname == path)
            .collect::<Vec<_>>()
    };
    let landing = find("pageview", "/landing")[0];
    let width = facts["inner_width"].as_u64().unwrap();
    assert_eq!(u64::from(landing.screen_width), width);
    assert_eq!(landing.referrer, "localhost/from");
    assert_eq!(
        props(find("Signup", "/events")[0]),
        [("plan", "pro")].into()
    );
    assert_eq!(
        props(find("Queued Event", "/events")[0]),
        [("early", "yes")].into()
    );
    assert_eq!(
        props(find("Click Goal", "/events")[0]),
        [("position", "hero")].into()
    );
    let download = format!("{site}/files/report.pdf");
    assert_eq!(
        props(find("File Download", "/links")[0]),
        [("url", download.as_str())].into()
    );
    let mut outbound: Vec<String> = find("Outbound Link: Click", "/links")
        .iter()
        .map(|r| props(r)["url"].to_string())
        .collect();
    outbound.sort();
    assert_eq!(
        outbound,
        [
            format!("{other}/outbound-target"),
            format!("{other}/outbound-target?tab=new")
        ]
    );
    assert_eq!(
        facts["outbound_landed_on"],
        format!("{other}/outbound-target")
    );
    let engagement = find("engagement", "/read")[0];
    assert!(
        (1000..60_000).contains(&engagement.engagement_ms),
        "{engagement:?}"
    );
    assert!(
        (20..=100).contains(&engagement.scroll_depth),
        "{engagement:?}"
    );
    println!(
        "engagement on /read: {} ms visible, {} % scrolled",
        engagement.engagement_ms, engagement.scroll_depth
    );
    assert_eq!(
        props(find("Plausible Signup", "/plausible")[0]),
        [("plan", "pro")].into()
    );

    // The beacons sent with data-dnt="server" / data-gpc="server" reached the collector, which
    // dropped them for the DNT and Sec-GPC headers and only counted them.
    for reason in ["dnt", "gpc"] {
        let dropped = ch
            .count(&format!(
                "SELECT toUInt64(sum(count)) FROM glimpse.dropped_events WHERE reason = '{reason}'"
            ))
            .await;
        assert_eq!(dropped, 1, "dropped for {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_and_beacon_paths_are_configurable() {
    let ch = TestClickHouse::start().await;
    let mut config = ch.config();
    config.collector.script_path = "/assets/app.js".into();
    config.collector.event_path = "/assets/collect".into();
    let collector = start_collector(config).await;
    let base = &collector.base;
    let client = browser_client();

    let script = client
        .get(format!("{base}/assets/app.engagement.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    let etag = script.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        script.headers()["content-type"],
        "application/javascript; charset=utf-8"
    );
    let text = script.text().await.unwrap();
    assert!(
        text.contains("\"/assets/collect\"") && !text.contains("/api/event"),
        "{text}"
    );
    let again = client
        .get(format!("{base}/assets/app.engagement.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    for gone in ["/js/script.js", "/assets/app.nope.js"] {
        let r = client.get(format!("{base}{gone}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{gone}");
    }

    let beacon = r#"{"n":"pageview","u":"https://example.com/configured","d":"example.com"}"#;
    let post = |path: &str| {
        client
            .post(format!("{base}{path}"))
            .header("content-type", "text/plain")
            .body(beacon)
            .send()
    };
    assert_eq!(post("/assets/collect").await.unwrap().status(), 202);
    assert_eq!(post("/api/event").await.unwrap().status(), 404);
    collector.stop().await;
    assert_eq!(
        ch.count("SELECT count() FROM glimpse.events WHERE pathname = '/configured'")
            .await,
        1
    );
}
