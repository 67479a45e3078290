//! The query service's metrics on the process's metrics listener, against a real ClickHouse:
//! after stats requests, `glimpse_query_*` series by route pattern and status, ClickHouse
//! time, rollup refreshes, and the process metrics (CPU, memory, file descriptors, start).

mod common;

use std::time::Duration;

use common::{serve_metrics_until, TestClickHouse};
use glimpse_core::site::Site;
use glimpse_core::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The value of the series `series` (name and labels exactly as rendered), if present.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_requests_show_up_as_glimpse_query_metrics_beside_process_metrics() {
    let ch = TestClickHouse::start().await;
    glimpse_core::schema::migrate(&ch.client, "glimpse")
        .await
        .expect("migrate");
    let config = Config {
        sites: vec![Site::new("example.com")],
        query: glimpse_core::config::QueryConfig {
            rollup_interval_secs: 3600,
            ..ch.config().query
        },
        ..ch.config()
    };
    let stop = CancellationToken::new();
    let metrics_url = serve_metrics_until(&stop).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(glimpse_query::serve(
        config.clone(),
        listener,
        stop.clone().cancelled_owned(),
    ));
    let (key, _) =
        glimpse_query::auth::create_key(&ch.client, "glimpse", &config, "example.com", "test")
            .await
            .unwrap();
    let http = reqwest::Client::new();
    common::wait_for_200(&http, &format!("{base}/ready"), Duration::from_secs(30)).await;

    let aggregate = format!("{base}/api/v1/stats/aggregate?site_id=example.com&period=30d");
    for _ in 0..2 {
        let ok = http.get(&aggregate).bearer_auth(&key).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap());
    }
    let unauthorised = http.get(&aggregate).send().await.unwrap();
    assert_eq!(unauthorised.status(), 401);
    let asset = http
        .get(format!("{base}/assets/no-such-asset-1234.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 404);
    let unknown = http
        .get(format!("{base}/no/such/path/5678"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // The rollup's first refresh runs 5 s after start.
    let mut body = String::new();
    for _ in 0..100 {
        body = http
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if value(&body, "glimpse_query_rollup_refreshes_total{result=\"ok\"}").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let endpoint = "endpoint=\"/api/v1/stats/aggregate\"";
    assert_eq!(
        value(
            &body,
            &format!("glimpse_query_requests_total{{{endpoint},status=\"200\"}}")
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            &format!("glimpse_query_requests_total{{{endpoint},status=\"401\"}}")
        ),
        Some(1.0),
        "{body}"
    );
    // Route patterns, never the raw path.
    assert!(
        value(
            &body,
            "glimpse_query_requests_total{endpoint=\"/assets/{name}\",status=\"404\"}"
        )
        .is_some(),
        "{body}"
    );
    assert!(
        value(
            &body,
            "glimpse_query_requests_total{endpoint=\"unmatched\",status=\"404\"}"
        )
        .is_some(),
        "{body}"
    );
    assert!(
        !body.contains("no-such-asset-1234") && !body.contains("5678"),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            &format!("glimpse_query_request_duration_seconds_count{{{endpoint}}}")
        ),
        Some(3.0),
        "{body}"
    );
    // Only the two answered requests asked ClickHouse (the refused one did not get that far).
    let clickhouse_count = value(
        &body,
        &format!("glimpse_query_clickhouse_duration_seconds_count{{{endpoint}}}"),
    );
    assert_eq!(clickhouse_count, Some(2.0), "{body}");
    let clickhouse_sum = value(
        &body,
        &format!("glimpse_query_clickhouse_duration_seconds_sum{{{endpoint}}}"),
    )
    .unwrap();
    assert!(clickhouse_sum > 0.0, "{body}");
    assert_eq!(
        value(&body, "glimpse_query_rollup_refreshes_total{result=\"ok\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "glimpse_query_rollup_refresh_duration_seconds_count"),
        Some(1.0),
        "{body}"
    );

    // Process metrics, with plausible values.
    // Whole seconds (`metrics` counters are integers): present, maybe 0 this early.
    assert!(
        value(&body, "process_cpu_seconds_total").is_some(),
        "{body}"
    );
    assert!(
        value(&body, "process_resident_memory_bytes").unwrap() > 1e6,
        "{body}"
    );
    assert!(value(&body, "process_open_fds").unwrap() >= 3.0, "{body}");
    let started = value(&body, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started > now - 3600.0 && started <= now + 1.0,
        "{started} {now}"
    );
    // Every series has its HELP text.
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    stop.cancel();
}
