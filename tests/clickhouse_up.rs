//! `glimpse_clickhouse_up`: the collector asks ClickHouse every few seconds, so an idle
//! collector's alert still fires when ClickHouse goes away (the alert rules use it).

mod common;

use std::time::Duration;

use common::{serve_metrics_until, TestClickHouse};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn clickhouse_up(http: &reqwest::Client, metrics_url: &str) -> Option<f64> {
    let body = http.get(metrics_url).send().await.ok()?.text().await.ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix("glimpse_clickhouse_up "))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_for(http: &reqwest::Client, metrics_url: &str, want: f64) {
    let mut seen = None;
    for _ in 0..150 {
        seen = clickhouse_up(http, metrics_url).await;
        if seen == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("glimpse_clickhouse_up stayed at {seen:?}, wanted {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_up_follows_clickhouse_going_away_under_an_idle_collector() {
    let ch = TestClickHouse::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = glimpse_core::Config {
        data_dir: data.path().to_path_buf(),
        ..ch.config()
    };
    let stop = CancellationToken::new();
    let metrics_url = serve_metrics_until(&stop).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tokio::spawn(glimpse_collector::serve(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::new();
    wait_for(&http, &metrics_url, 1.0).await;
    ch.server.stop().await;
    wait_for(&http, &metrics_url, 0.0).await;
    stop.cancel();
    let _ = server.await;
}
