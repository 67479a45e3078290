//! A batch ClickHouse refuses for good (here: the events table lost a column the insert
//! needs) is not retried forever: it goes to a dead-letter file under the data directory,
//! counted in `glimpse_sink_dead_letter_*`, and later events still land once the table is
//! fixed. Against a real ClickHouse, with the disk spool and with the in-memory writer.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{browser_client, wait_for_200, TestClickHouse};
use glimpse_core::schema::EventRow;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Sends one page view of `path`; the collector must accept it.
async fn send(base: &str, path: &str) {
    let response = browser_client()
        .post(format!("{base}/api/event"))
        .header("content-type", "text/plain")
        .body(format!(
            r#"{{"n":"pageview","u":"https://example.com{path}","d":"example.com"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{path}");
}

/// The rows of every complete dead-letter file in `dir`, and how many files there are.
fn dead_letters(dir: &Path) -> (Vec<EventRow>, usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let rows = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str::<EventRow>(line).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    (rows, files.len())
}

/// A counter's value in this process's metrics (0 when not recorded yet).
fn metric(name: &str) -> u64 {
    glimpse_core::telemetry::render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

async fn count_path(ch: &TestClickHouse, path: &str) -> u64 {
    ch.count(&format!(
        "SELECT count() FROM glimpse.events WHERE pathname = '{path}'"
    ))
    .await
}

/// One collector run: a good event lands, the table is broken, three events are dead-lettered,
/// the table is fixed, a later event lands; the dead-letter file replays with the command the
/// README gives.
async fn poison_batch_is_set_aside(spool: bool) {
    let ch = TestClickHouse::start().await;
    let config = glimpse_core::Config {
        collector: glimpse_core::config::CollectorConfig {
            spool,
            ..ch.config().collector
        },
        ..ch.config()
    };
    let dead_letter_dir = config.data_dir.join("dead-letter");
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
    let batches_before = metric("glimpse_sink_dead_letter_batches_total");
    let rows_before = metric("glimpse_sink_dead_letter_rows_total");

    send(&base, "/first").await;
    common::wait_for_event_rows(&ch.client, 1, Duration::from_secs(20)).await;

    // A column every insert names disappears: ClickHouse answers "no such column" (code 16).
    ch.client
        .query("ALTER TABLE glimpse.events DROP COLUMN scroll_depth")
        .execute()
        .await
        .unwrap();
    for path in ["/poison/1", "/poison/2", "/poison/3"] {
        send(&base, path).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (rows, files) = loop {
        let (rows, files) = dead_letters(&dead_letter_dir);
        if rows.len() >= 3 {
            break (rows, files);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused batch did not reach {} within 30 s ({} rows there)",
            dead_letter_dir.display(),
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut paths: Vec<&str> = rows.iter().map(|r| r.pathname.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/poison/1", "/poison/2", "/poison/3"]);
    assert!(rows
        .iter()
        .all(|r| r.site == "example.com" && r.ip_prefix.is_empty()));
    assert_eq!(
        metric("glimpse_sink_dead_letter_batches_total") - batches_before,
        files as u64
    );
    assert_eq!(
        metric("glimpse_sink_dead_letter_rows_total") - rows_before,
        3
    );

    // Fixed: later events land, and nothing of the refused batch was stored meanwhile.
    ch.client
        .query("ALTER TABLE glimpse.events ADD COLUMN scroll_depth UInt8 AFTER interactive")
        .execute()
        .await
        .unwrap();
    send(&base, "/later").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count_path(&ch, "/later").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an event sent after the table was fixed did not land within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ch.count("SELECT count() FROM glimpse.events").await, 2);

    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.rows_lost, 0);
    assert_eq!(report.rows_left_in_spool, 0);

    // The README's replay: each file is ClickHouse's JSONEachRow format.
    for entry in std::fs::read_dir(&dead_letter_dir).unwrap() {
        let path = entry.unwrap().path();
        let response = reqwest::Client::new()
            .post(format!(
                "{}/?query=INSERT%20INTO%20glimpse.events%20FORMAT%20JSONEachRow",
                ch.server.url().trim_end_matches('/')
            ))
            .basic_auth(ch.server.user(), Some(ch.password()))
            .body(std::fs::read(&path).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(status, 200, "{}", response.text().await.unwrap());
    }
    assert_eq!(
        ch.count("SELECT count() FROM glimpse.events WHERE pathname LIKE '/poison/%'")
            .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_refused_batch_goes_to_the_dead_letter_file_and_ingest_goes_on() {
    // One after the other: the metrics are process-wide.
    poison_batch_is_set_aside(true).await;
    poison_batch_is_set_aside(false).await;
}
