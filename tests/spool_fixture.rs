//! A spool written by an older release is shipped by this one: `tests/fixtures/spool-v1/`
//! holds a segment written by the release of 2026-12-07 (v1 records, JSON rows; six beacons
//! accepted while ClickHouse was unreachable, then SIGTERM). The collector built now must
//! ship every row of it, as written, then delete it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{free_addr, wait_for_200, wait_for_event_rows};
use glimpse_core::db::local::LocalClickHouse;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const FIXTURE: &str = "tests/fixtures/spool-v1/00000000000000000000.seg";
/// The batch id in the fixture's header: every row it ships carries it.
const FIXTURE_BATCH_ID: u64 = 15_072_769_896_820_228_731;

#[derive(Debug, PartialEq, serde::Deserialize, clickhouse::Row)]
struct Shipped {
    pathname: String,
    name: String,
    timestamp: u32,
    browser: String,
    utm_source: String,
    visit_entry: u8,
    prop_keys: Vec<String>,
    prop_values: Vec<String>,
    batch_id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_spool_segment_from_the_previous_release_is_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let clickhouse = LocalClickHouse::start(&dir.path().join("clickhouse"), "clickhouse-server")
        .await
        .expect("clickhouse-server (run scripts/test.sh)");
    let data_dir = dir.path().join("glimpse");
    let spool = data_dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let segment = spool.join("00000000000000000000.seg");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE),
        &segment,
    )
    .unwrap();

    let addr = free_addr();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .arg("collector")
        .env("GLIMPSE_CLICKHOUSE_URL", clickhouse.url_with_credentials())
        .env("GLIMPSE_COLLECTOR_ADDR", addr.to_string())
        .env("GLIMPSE_METRICS_ADDR", "127.0.0.1:0")
        .env("GLIMPSE_SITES", "example.com")
        .env("GLIMPSE_DATA_DIR", &data_dir)
        .env("GLIMPSE_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn glimpse");
    wait_for_200(
        &reqwest::Client::new(),
        &format!("http://{addr}/ready"),
        Duration::from_secs(30),
    )
    .await;
    let client = clickhouse.client();
    wait_for_event_rows(&client, 6, Duration::from_secs(30)).await;
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exits within 60 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let shipped: Vec<Shipped> = client
        .query(
            "SELECT pathname, name, timestamp, browser, utm_source, visit_entry, prop_keys, \
             prop_values, batch_id FROM glimpse.events ORDER BY pathname",
        )
        .fetch_all()
        .await
        .unwrap();
    let expected: Vec<Shipped> = (1..=6)
        .map(|i| {
            let pageview = i < 6;
            Shipped {
                pathname: format!("/fixture/{i}"),
                name: if pageview { "pageview" } else { "signup" }.into(),
                timestamp: 1_796_662_742,
                browser: "Firefox".into(),
                utm_source: if pageview { "news" } else { "" }.into(),
                visit_entry: 1,
                prop_keys: if pageview {
                    vec!["plan".into(), "é".into()]
                } else {
                    vec!["plan".into()]
                },
                prop_values: if pageview {
                    vec!["pro".into(), format!("ü{i}")]
                } else {
                    vec!["free".into()]
                },
                batch_id: FIXTURE_BATCH_ID,
            }
        })
        .collect();
    assert_eq!(
        shipped, expected,
        "every row of the old segment, as written"
    );
    assert!(!segment.exists(), "the shipped segment is deleted");
    clickhouse.stop().await;
}
