//! The operator's promises, end to end against a real ClickHouse: retention deletes expired
//! events and keeps fresh ones; a visitor sees, downloads and erases exactly their own rows;
//! the operator erases a visitor on request; the privacy statement follows the configuration.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{wait_for_200, TestClickHouse, FIREFOX};
use glimpse_core::schema::EventRow;
use glimpse_core::site::Site;

fn now() -> u32 {
    glimpse_core::clock::unix_now()
}

async fn insert(ch: &TestClickHouse, rows: &[EventRow]) {
    let client = ch.client.clone().with_database("glimpse");
    let mut insert = client.insert::<EventRow>("events").await.unwrap();
    for row in rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
}

fn event(site: &str, days_ago: u32, path: &str) -> EventRow {
    EventRow {
        site: site.into(),
        timestamp: now() - days_ago * 86_400,
        name: "pageview".into(),
        pathname: path.into(),
        visitor_id: 1,
        session_id: 1,
        ..EventRow::default()
    }
}

/// Runs the `glimpse` binary with `config` as its configuration file.
async fn glimpse(ch: &TestClickHouse, config: &str, args: &[&str]) -> String {
    let config_path = ch.data_dir().join("glimpse.toml");
    std::fs::create_dir_all(ch.data_dir()).unwrap();
    std::fs::write(&config_path, config).unwrap();
    let path = config_path.to_string_lossy().into_owned();
    glimpse_env(ch, &[("GLIMPSE_CONFIG", path.as_str())], args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_expired_events_and_keeps_fresh_ones() {
    let ch = TestClickHouse::start().await;
    let config = "[[sites]]\ndomain = \"long.example\"\nretention_days = 180\n\n\
                  [[sites]]\ndomain = \"short.example\"\nretention_days = 30\n";
    glimpse(&ch, config, &["migrate"]).await;
    insert(
        &ch,
        &[
            // 400 days old for both sites: that month's partition holds only expired data.
            event("long.example", 400, "/ancient"),
            event("short.example", 400, "/ancient"),
            event("long.example", 200, "/expired"),
            event("long.example", 100, "/kept-long"),
            event("short.example", 100, "/expired-short"),
            event("short.example", 31, "/expired-short-2"),
            event("short.example", 29, "/kept-short"),
            event("long.example", 0, "/today"),
            event("short.example", 0, "/today"),
        ],
    )
    .await;
    ch.client
        .query("INSERT INTO glimpse.dropped_events VALUES ('short.example', toDate(now()) - 60, 'bot', 5), ('short.example', toDate(now()), 'bot', 2)")
        .execute()
        .await
        .unwrap();

    let out = glimpse(&ch, config, &["retention", "apply"]).await;
    println!("{out}");
    assert!(out.contains("dropped partition"), "{out}");

    let mut left: Vec<(String, String)> = ch
        .client
        .query("SELECT site, pathname FROM glimpse.events")
        .fetch_all()
        .await
        .unwrap();
    left.sort();
    assert_eq!(
        left,
        [
            ("long.example".to_string(), "/kept-long".to_string()),
            ("long.example".into(), "/today".into()),
            ("short.example".into(), "/kept-short".into()),
            ("short.example".into(), "/today".into()),
        ]
    );
    let counts: u64 = ch
        .count("SELECT sum(count) FROM glimpse.dropped_events")
        .await;
    assert_eq!(
        counts, 2,
        "old filtered-traffic counts follow the same rule"
    );
    // Running again finds nothing.
    let again = glimpse(&ch, config, &["retention", "apply"]).await;
    assert!(again.contains("nothing past its retention"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_see_download_and_erase_only_their_own_data() {
    let ch = TestClickHouse::start().await;
    let mut config = ch.config();
    config.sites = vec![Site::new("example.com")];
    config.collector.batch_max_delay_ms = 50;
    // The event list is shown only with this opt-in (the default is a summary; see
    // tests/visitor_privacy.rs).
    config.collector.visitor_data_detail = glimpse_core::config::VisitorDataDetail::Full;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(glimpse_collector::serve(config, listener, async {
        let _ = stopped.await;
    }));
    wait_for_200(
        &reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}/ready"),
        Duration::from_secs(30),
    )
    .await;
    // Two visitors: same browser, different addresses.
    let browser = |from: &str| {
        reqwest::Client::builder()
            .local_address(from.parse::<IpAddr>().unwrap())
            .user_agent(FIREFOX)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let (alice, bob) = (browser("127.10.0.1"), browser("127.20.0.2"));
    for (client, paths) in [(&alice, ["/a1", "/a2"]), (&bob, ["/b1", "/b2"])] {
        for path in paths {
            let status = client
                .post(format!("http://127.0.0.1:{port}/api/event"))
                .body(format!(
                    r#"{{"n":"pageview","u":"https://example.com{path}","d":"example.com"}}"#
                ))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status.as_u16(), 202);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ch.events_rows().await < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events did not land"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Alice's data: exactly her rows, as JSON and as a page.
    let json: serde_json::Value = alice
        .get(format!(
            "http://127.0.0.1:{port}/privacy/my-data?format=json"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&str> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pathname"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/a1", "/a2"], "{json}");
    let alice_id = json["pseudonyms"][0]["visitor_ids"][0].as_u64().unwrap();
    let html = alice
        .get(format!("http://127.0.0.1:{port}/privacy/my-data"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("/a1") && html.contains("/a2") && !html.contains("/b1"));
    assert!(html.contains(&alice_id.to_string()));
    assert!(html.contains("action=\"/privacy/erase\""));

    // Alice erases: her rows go, Bob's stay.
    let erased = alice
        .post(format!("http://127.0.0.1:{port}/privacy/erase"))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status().as_u16(), 200);
    assert!(erased.text().await.unwrap().contains("2 recorded events"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = ch
            .client
            .query("SELECT pathname FROM glimpse.events ORDER BY pathname")
            .fetch_all()
            .await
            .unwrap();
        if left == ["/b1", "/b2"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "left: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Bob's id, then the operator erases Bob on request.
    let bob_json: serde_json::Value = bob
        .get(format!(
            "http://127.0.0.1:{port}/privacy/my-data?format=json"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bob_id = bob_json["pseudonyms"][0]["visitor_ids"][0]
        .as_u64()
        .unwrap();
    assert_ne!(bob_id, alice_id);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let out = glimpse(
        &ch,
        "[[sites]]\ndomain = \"example.com\"\n",
        &[
            "erase",
            "--site",
            "example.com",
            "--visitor-id",
            &bob_id.to_string(),
        ],
    )
    .await;
    assert!(out.contains("2 events") && out.contains("erased"), "{out}");
    assert_eq!(ch.events_rows().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_statement_follows_the_configuration() {
    let ch = TestClickHouse::start().await;
    let base = "[[sites]]\ndomain = \"example.com\"\nretention_days = 90\n";
    let default = glimpse(&ch, base, &["privacy-statement", "--site", "example.com"]).await;
    assert!(default.contains("We do not store your IP address"));
    assert!(default.contains("90 days"));
    assert!(default.contains("Do Not Track"));
    let changed = glimpse(
        &ch,
        &format!(
            "store_ip_prefix = true\nipv4_prefix_length = 16\nhonor_gpc = false\n\
             public_url = \"https://stats.example.com\"\ndata_location = \"in Helsinki, Finland\"\n{}",
            base.replace("90", "30")
        ),
        &["privacy-statement", "--site", "example.com"],
    )
    .await;
    assert!(changed.contains("first 16 of the 32 bits"), "{changed}");
    assert!(changed.contains("30 days"));
    assert!(changed.contains("does not act on Global Privacy Control"));
    assert!(changed.contains("https://stats.example.com/privacy/my-data"));
    assert!(changed.contains("in Helsinki, Finland"));
    assert_ne!(default, changed);
}

async fn glimpse_env(ch: &TestClickHouse, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"));
    command
        .args(args)
        .env("GLIMPSE_CLICKHOUSE_URL", ch.url())
        .env("GLIMPSE_DATA_DIR", ch.data_dir())
        .env("GLIMPSE_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().await.unwrap();
    assert!(
        output.status.success(),
        "glimpse {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_round_trips() {
    let ch = TestClickHouse::start().await;
    std::fs::create_dir_all(ch.data_dir()).unwrap();
    let sites = ("GLIMPSE_SITES", "example.com,other.org");
    glimpse_env(&ch, &[sites], &["migrate"]).await;
    let day = 86_400;
    let base = 1_767_225_600; // 2026-01-01 00:00 UTC
    let rows: Vec<EventRow> = (0..900u32)
        .map(|i| EventRow {
            site: if i % 10 == 0 {
                "other.org"
            } else {
                "example.com"
            }
            .into(),
            timestamp: base + (i % 5) * day + i,
            name: if i % 7 == 0 { "Signup" } else { "pageview" }.into(),
            pathname: format!("/p/{}, \"quoted\"\n{}", i % 37, "é"),
            visitor_id: u64::from(i) * 2_654_435_761,
            session_id: u64::from(i / 3),
            screen_width: (i % 2000) as u16,
            country: ["DE", "FR", ""][(i % 3) as usize].into(),
            prop_keys: (0..i % 3).map(|k| format!("k{k}")).collect(),
            prop_values: (0..i % 3).map(|k| format!("v,{k}\"")).collect(),
            ..EventRow::default()
        })
        .collect();
    insert(&ch, &rows).await;

    // Days 2026-01-02 .. 2026-01-04 of example.com.
    let summary = |db: &str| {
        format!(
            "SELECT count(), sum(screen_width), sum(visitor_id % 1000003), uniqExact(pathname), \
             sum(length(prop_keys)), uniqExact(arrayStringConcat(prop_values, '|')), \
             sum(session_id), countIf(name = 'Signup') FROM {db}.events WHERE site = 'example.com' \
             AND timestamp >= toDateTime({}) AND timestamp < toDateTime({})",
            base + day,
            base + 4 * day
        )
    };
    type Summary = (u64, u64, u64, u64, u64, u64, u64, u64);
    let original: Summary = ch
        .client
        .query(&summary("glimpse"))
        .fetch_one()
        .await
        .unwrap();
    assert!(original.0 > 400, "{original:?}");

    for format in ["jsonl", "csv"] {
        let file = ch.data_dir().join(format!("export.{format}"));
        let args = [
            "export",
            "--site",
            "example.com",
            "--from",
            "2026-01-02",
            "--to",
            "2026-01-04",
            "--format",
            format,
            "--output",
            file.to_str().unwrap(),
        ];
        glimpse_env(&ch, &[sites], &args).await;
        let copy = format!("copy_{format}");
        let out = glimpse_env(
            &ch,
            &[sites, ("GLIMPSE_CLICKHOUSE_DATABASE", copy.as_str())],
            &["import", "--format", format, file.to_str().unwrap()],
        )
        .await;
        assert!(
            out.contains(&format!("imported {} events", original.0)),
            "{out}"
        );
        let copied: Summary = ch.client.query(&summary(&copy)).fetch_one().await.unwrap();
        assert_eq!(copied, original, "{format} round trip");
        let everything = ch
            .count(&format!("SELECT count() FROM {copy}.events"))
            .await;
        assert_eq!(everything, original.0, "only the site and days asked for");
    }
    println!(
        "export → import: {} events, equal counts and sums in jsonl and csv",
        original.0
    );
}
