//! The visitor's own pages against an attacker, end to end (in-process collector, real
//! ClickHouse): a neighbour with the same address and browser learns no pages, referrers or
//! times from `/privacy/my-data`; another website cannot make a visitor's browser erase their
//! data, opt them out or back in, nor frame those pages; erasure is rate-limited per client
//! and a burst of erasures becomes one or two ClickHouse mutations.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{wait_for_200, TestClickHouse, FIREFOX};
use glimpse_core::site::Site;
use glimpse_core::Config;

struct Collector {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<
        Result<glimpse_collector::ServeReport, glimpse_collector::ServeError>,
    >,
}

impl Collector {
    async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(glimpse_collector::serve(config, listener, async {
            let _ = stopped.await;
        }));
        wait_for_200(
            &reqwest::Client::new(),
            &format!("{base}/ready"),
            Duration::from_secs(30),
        )
        .await;
        Self {
            base,
            stop: Some(stop),
            server,
        }
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.server.await.unwrap().unwrap();
    }
}

fn config(ch: &TestClickHouse) -> Config {
    Config {
        sites: vec![Site::new("example.com")],
        collector: glimpse_core::config::CollectorConfig {
            batch_max_delay_ms: 50,
            ..ch.config().collector
        },
        ..ch.config()
    }
}

/// A browser at loopback address `from`: a client of its own (no shared connection or cookie
/// with any other), that does not follow redirects.
fn browser(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .user_agent(FIREFOX)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn pageview(client: &reqwest::Client, base: &str, path: &str, referrer: &str) {
    let status = client
        .post(format!("{base}/api/event"))
        .body(format!(
            r#"{{"n":"pageview","u":"https://example.com{path}","d":"example.com","r":"{referrer}"}}"#
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
}

async fn wait_for_rows(ch: &TestClickHouse, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ch.events_rows().await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events did not land"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_with_the_same_address_and_browser_learns_no_pages_referrers_or_times() {
    let ch = TestClickHouse::start().await;
    let collector = Collector::start(config(&ch)).await;
    let base = &collector.base;
    // The visitor, then a neighbour behind the same address with the same browser.
    let visitor = browser("127.30.0.1");
    let before = glimpse_core::clock::unix_now();
    pageview(
        &visitor,
        base,
        "/secret-diagnosis-page",
        "https://secret-clinic.example/results",
    )
    .await;
    pageview(&visitor, base, "/second-page", "").await;
    let after = glimpse_core::clock::unix_now();
    wait_for_rows(&ch, 2).await;
    let stored: Vec<u32> = ch
        .client
        .query("SELECT toUInt32(timestamp) FROM glimpse.events")
        .fetch_all()
        .await
        .unwrap();

    let neighbour = browser("127.30.0.1");
    let mut answers = Vec::new();
    for query in ["", "?format=json"] {
        let response = neighbour
            .get(format!("{base}/privacy/my-data{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{query}");
        answers.push(response.text().await.unwrap());
    }
    let today = jiff::Timestamp::from_second(i64::from(after))
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    for answer in &answers {
        for secret in [
            "secret-diagnosis",
            "second-page",
            "secret-clinic",
            "/results",
        ] {
            assert!(!answer.contains(secret), "{secret:?} shown:\n{answer}");
        }
        // No time finer than the day: no hh:mm of any minute the events could carry, no
        // Unix second.
        for second in (before.saturating_sub(60)..=after + 60).chain(stored.iter().copied()) {
            let t = jiff::Timestamp::from_second(i64::from(second)).unwrap();
            let hhmm = t.strftime("%H:%M").to_string();
            assert!(!answer.contains(&hhmm), "time {hhmm} shown:\n{answer}");
            assert!(
                !answer.contains(&second.to_string()),
                "time {second} shown:\n{answer}"
            );
        }
        // What it does say: which site, how much, which day.
        assert!(answer.contains("example.com"), "{answer}");
        assert!(answer.contains(&today), "{answer}");
    }
    let json: serde_json::Value = serde_json::from_str(&answers[1]).unwrap();
    let site = &json["sites"][0];
    assert_eq!(site["site"], "example.com", "{json}");
    assert_eq!(site["pageviews"], 2, "{json}");
    assert_eq!(site["days"], 1, "{json}");
    assert!(json.get("events").is_none(), "{json}");
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_site_cannot_erase_opt_out_opt_in_or_frame() {
    let ch = TestClickHouse::start().await;
    let collector = Collector::start(config(&ch)).await;
    let base = collector.base.clone();
    let visitor = browser("127.40.0.1");
    pageview(&visitor, &base, "/a", "").await;
    wait_for_rows(&ch, 1).await;

    // Cross-site: each refused with 403, nothing changed.
    let cross_site: [(&str, &str); 3] = [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("origin", "null"),
    ];
    for (header, value) in cross_site {
        for path in ["/privacy/erase", "/opt-out", "/opt-in"] {
            let response = visitor
                .post(format!("{base}{path}"))
                .header(header, value)
                .header("cookie", "glimpse_opt_out=1")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 403, "{path} with {header}: {value}");
            assert!(
                response.headers().get("set-cookie").is_none(),
                "{path}: opt-out state changed"
            );
            let body = response.text().await.unwrap();
            assert!(body.contains("cross-site"), "{body}");
        }
    }
    // Erase was refused: the row is still there, and no mutation was ever issued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ch.events_rows().await, 1);
    assert_eq!(
        ch.count("SELECT count() FROM system.mutations WHERE database = 'glimpse'")
            .await,
        0
    );

    // Same origin, a configured site's origin, and no header at all still work.
    let allowed: [(&str, &str); 4] = [
        ("origin", base.as_str()),
        ("origin", "https://example.com"),
        ("origin", "http://example.com"),
        ("sec-fetch-site", "same-origin"),
    ];
    for (header, value) in allowed {
        for (path, cookie) in [
            ("/opt-out", "glimpse_opt_out=1;"),
            ("/opt-in", "glimpse_opt_out=;"),
        ] {
            let response = visitor
                .post(format!("{base}{path}"))
                .header(header, value)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 303, "{path} with {header}: {value}");
            let set = response.headers()["set-cookie"].to_str().unwrap();
            assert!(set.starts_with(cookie), "{set}");
        }
    }
    let response = visitor
        .post(format!("{base}/opt-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "no Origin, no Sec-Fetch-Site");
    let response = visitor
        .post(format!("{base}/privacy/erase"))
        .header("origin", "https://example.com")
        .header("sec-fetch-site", "same-site")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "erase from the site's own page");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ch.events_rows().await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "not erased");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Framing: only the collector itself and the configured sites.
    for path in ["/opt-out", "/privacy/my-data", "/privacy"] {
        let response = visitor.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = response
            .headers()
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no Content-Security-Policy"))
            .to_str()
            .unwrap();
        assert_eq!(
            csp,
            "frame-ancestors 'self' https://example.com http://example.com \
             https://www.example.com http://www.example.com",
            "{path}"
        );
    }
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_is_rate_limited_and_a_burst_becomes_few_mutations() {
    let ch = TestClickHouse::start().await;
    let collector = Collector::start(config(&ch)).await;
    let base = collector.base.clone();
    // Twelve visitors, each with a page view.
    let visitors: Vec<reqwest::Client> = (1..=12)
        .map(|i| browser(&format!("127.50.0.{i}")))
        .collect();
    for (i, v) in visitors.iter().enumerate() {
        pageview(v, &base, &format!("/v{i}"), "").await;
    }
    wait_for_rows(&ch, 12).await;

    // All erase at once.
    let mut burst = tokio::task::JoinSet::new();
    for v in &visitors {
        let (v, url) = (v.clone(), format!("{base}/privacy/erase"));
        burst.spawn(async move {
            let response = v.post(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        });
    }
    while let Some(answer) = burst.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("1 recorded event"), "{body}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ch.events_rows().await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "not erased");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mutations = ch
        .count(
            "SELECT count() FROM system.mutations WHERE database = 'glimpse' AND table = 'events'",
        )
        .await;
    assert!(
        (1..=2).contains(&mutations),
        "12 erasures became {mutations} mutations"
    );

    // One client: a few erasures, then 429 with Retry-After (per client: another still may).
    let one = &visitors[0];
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let response = one
            .post(format!("{base}/privacy/erase"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // The hourly erase limit, not the per-minute page limit.
    assert!(retry_after.is_some_and(|s| s > 60), "{retry_after:?}");
    let other = visitors[1]
        .post(format!("{base}/privacy/erase"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200, "another client is not limited");
    collector.stop().await;
}
