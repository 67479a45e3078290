//! End to end against a real ClickHouse (Debian's 18.16 here, whatever `clickhouse-server` is
//! installed): beacons over HTTP become exactly the right rows; bad beacons leave none; a
//! SIGTERM in the middle of a load loses no accepted event.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{browser_client, free_addr, wait_for_200, TestClickHouse};
use glimpse_core::schema::EventRow;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn beacon(i: usize) -> String {
    format!(
        r#"{{"n":"pageview","u":"https://www.example.com/p/{i}?utm_source=newsletter&email=x@y.z","d":"example.com","r":"https://news.ycombinator.com/item?id={i}","w":{w},"p":{{"i":"{i}"}}}}"#,
        w = 320 + i % 1000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_beacons_from_32_clients_become_exactly_ten_thousand_rows() {
    const TOTAL: usize = 10_000;
    const CLIENTS: usize = 32;
    let ch = TestClickHouse::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(glimpse_collector::serve(ch.config(), listener, async {
        let _ = stopped.await;
    }));
    let client = browser_client();
    wait_for_200(&client, &format!("{base}/ready"), Duration::from_secs(30)).await;

    let client = Arc::new(client);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        let url = format!("{base}/api/event");
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in (c..TOTAL).step_by(CLIENTS) {
                let response = client
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body(beacon(i))
                    .send()
                    .await
                    .expect("request");
                statuses.push(response.status().as_u16());
            }
            statuses
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        let statuses = task.await.unwrap();
        assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
        accepted += statuses.len();
    }
    assert_eq!(accepted, TOTAL);

    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.rows_written, TOTAL as u64);
    assert_eq!(report.rows_lost, 0);

    assert_eq!(
        ch.count("SELECT count() FROM glimpse.events").await,
        TOTAL as u64
    );
    assert_eq!(
        ch.count("SELECT uniqExact(pathname) FROM glimpse.events")
            .await,
        TOTAL as u64
    );
    let rows: Vec<EventRow> = ch
        .client
        .query("SELECT ?fields FROM glimpse.events WHERE pathname IN ('/p/0', '/p/4321')")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let i: usize = row.pathname.trim_start_matches("/p/").parse().unwrap();
        assert_eq!(row.site, "example.com");
        assert_eq!(row.name, "pageview");
        assert_eq!(row.hostname, "example.com");
        assert_eq!(row.referrer, "news.ycombinator.com/item");
        assert_eq!(row.referrer_source, "newsletter");
        assert_eq!(row.utm_source, "newsletter");
        assert_eq!(row.screen_width as usize, 320 + i % 1000);
        assert_eq!(row.prop_keys, ["i"]);
        assert_eq!(row.prop_values, [i.to_string()]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        assert!(
            now.abs_diff(row.timestamp) < 600,
            "timestamp {}",
            row.timestamp
        );
    }
    // Query strings (which carry e-mail addresses) were not stored anywhere in a row.
    assert_eq!(
        ch.count("SELECT count() FROM glimpse.events WHERE position(pathname, '@') > 0 OR position(referrer, 'id=') > 0")
            .await,
        0
    );
    // Batching: far fewer inserts than events.
    let parts = ch
        .count("SELECT count() FROM system.parts WHERE database = 'glimpse' AND table = 'events'")
        .await;
    assert!(parts < 200, "{parts} parts for {TOTAL} rows: not batched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_unknown_site_beacons_store_nothing() {
    let ch = TestClickHouse::start().await;
    let mut config = ch.config();
    config.collector.max_body_bytes = 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(glimpse_collector::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let client = browser_client();
    wait_for_200(&client, &format!("{base}/ready"), Duration::from_secs(30)).await;

    let oversized = format!(
        r#"{{"n":"pageview","u":"https://example.com/{}","d":"example.com"}}"#,
        "x".repeat(2000)
    );
    let cases: Vec<(String, u16)> = vec![
        ("{\"n\":".into(), 400),
        (r#"{"n":"pageview","u":"https://example.com/"}"#.into(), 400),
        (
            r#"{"n":"pageview","u":"https://example.com/","d":"example.com","w":-3}"#.into(),
            400,
        ),
        (oversized, 413),
        (
            r#"{"n":"pageview","u":"https://intruder.test/","d":"intruder.test"}"#.into(),
            403,
        ),
    ];
    for (body, status) in &cases {
        let response = client
            .post(format!("{base}/api/event"))
            .header("content-type", "text/plain")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), *status, "{body}");
    }
    // More distinct site domains than MAX_DOMAINS (50): 400 naming `d`, though a configured
    // site is among them.
    let names: Vec<String> = std::iter::once("example.com".to_string())
        .chain((1..=50).map(|i| format!("s{i}.io")))
        .collect();
    let response = client
        .post(format!("{base}/api/event"))
        .header("content-type", "text/plain")
        .body(format!(
            r#"{{"n":"pageview","u":"https://example.com/","d":"{}"}}"#,
            names.join(",")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "51 domains");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["field"], "d", "{body}");

    let form = client
        .post(format!("{base}/api/event"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(beacon(1))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 415);

    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.rows_written, 0);
    assert_eq!(ch.events_rows().await, 0);
    // The schema was created even though nothing was stored.
    assert_eq!(
        ch.count(
            "SELECT count() FROM system.tables WHERE database = 'glimpse' AND name = 'events'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_keeps_every_accepted_event() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let ch = TestClickHouse::start().await;
    let addr = free_addr();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .arg("collector")
        .env("GLIMPSE_CLICKHOUSE_URL", ch.url())
        .env("GLIMPSE_COLLECTOR_ADDR", addr.to_string())
        .env("GLIMPSE_METRICS_ADDR", "127.0.0.1:0")
        .env("GLIMPSE_SITES", "example.com")
        .env("GLIMPSE_DATA_DIR", ch.data_dir())
        // Large batches and a long delay: most accepted events are still queued at SIGTERM.
        .env("GLIMPSE_BATCH_MAX_ROWS", "100000")
        .env("GLIMPSE_BATCH_MAX_DELAY_MS", "60000")
        .env("GLIMPSE_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn glimpse");
    let base = format!("http://{addr}");
    let client = Arc::new(browser_client());
    wait_for_200(&client, &format!("{base}/ready"), Duration::from_secs(30)).await;

    let mut tasks = Vec::new();
    for c in 0..16usize {
        let client = client.clone();
        let url = format!("{base}/api/event");
        tasks.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            // Bounded: at most 2,000 beacons per client, and it stops at the first refusal.
            for n in 0..2000usize {
                let i = c * 100_000 + n;
                let result = client
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body(beacon(i))
                    .send()
                    .await;
                match result {
                    Ok(r) if r.status() == 202 => accepted.push(format!("/p/{i}")),
                    _ => break,
                }
            }
            accepted
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();

    let mut accepted = HashSet::new();
    for task in tasks {
        accepted.extend(task.await.unwrap());
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("glimpse exits within 60 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(accepted.len() > 100, "only {} accepted", accepted.len());

    let stored: Vec<String> = ch
        .client
        .query("SELECT pathname FROM glimpse.events")
        .fetch_all()
        .await
        .unwrap();
    let stored_set: HashSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), stored_set.len(), "duplicate rows");
    let missing: Vec<_> = accepted.difference(&stored_set).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted events missing, e.g. {missing:?}",
        accepted.difference(&stored_set).count(),
        accepted.len()
    );
    // Nothing was stored that was not acknowledged... except requests whose 202 was lost in
    // flight when the connection closed; there should be none with a graceful shutdown.
    assert_eq!(stored_set.len(), accepted.len());
    println!(
        "SIGTERM mid-load: {} events answered 202, {} rows in ClickHouse",
        accepted.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_recorded() {
    let ch = TestClickHouse::start().await;
    for _ in 0..2 {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"))
            .arg("migrate")
            .env("GLIMPSE_CLICKHOUSE_URL", ch.url())
            .env("GLIMPSE_LOG", "warn")
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("Legacy") || stdout.contains("Modern"),
            "{stdout}"
        );
    }
    let applied: Vec<u32> = ch
        .client
        .query("SELECT version FROM glimpse.schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .unwrap();
    let expected: Vec<u32> = glimpse_core::schema::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(applied, expected, "each migration recorded once");
    assert_eq!(ch.events_rows().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_its_own_clickhouse_and_stops_it() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let data = tempfile::tempdir().unwrap();
    let (collector, query) = (free_addr(), free_addr());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .arg("serve")
        .env_remove("GLIMPSE_CLICKHOUSE_URL")
        .env("GLIMPSE_DATA_DIR", data.path())
        .env("GLIMPSE_COLLECTOR_ADDR", collector.to_string())
        .env("GLIMPSE_METRICS_ADDR", "127.0.0.1:0")
        .env("GLIMPSE_QUERY_ADDR", query.to_string())
        .env("GLIMPSE_SITES", "example.com")
        .env("GLIMPSE_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = browser_client();
    wait_for_200(
        &client,
        &format!("http://{collector}/ready"),
        Duration::from_secs(60),
    )
    .await;
    wait_for_200(
        &client,
        &format!("http://{query}/ready"),
        Duration::from_secs(30),
    )
    .await;
    let response = client
        .post(format!("http://{collector}/api/event"))
        .body(beacon(7))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);

    let pid_file = data.path().join("clickhouse/server.pid");
    let clickhouse_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        kill(Pid::from_raw(clickhouse_pid), None).is_ok(),
        "ClickHouse runs"
    );

    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        kill(Pid::from_raw(clickhouse_pid), None).is_err(),
        "the ClickHouse child was stopped"
    );
    assert!(data.path().join("clickhouse/data/data/glimpse").is_dir());
}
