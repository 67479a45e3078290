//! Shared by the end-to-end tests: a real ClickHouse (the same code `glimpse serve` uses to
//! start one), free ports, and small HTTP helpers.
#![allow(dead_code)] // each test binary uses its own subset

pub mod accounts;
pub mod browser;
pub mod cluster;
pub mod process;
pub mod secrets;
pub mod sql_recorder;
pub mod stats_matrix;

use std::time::Duration;

use glimpse_core::db::local::LocalClickHouse;
use glimpse_core::Config;

/// A small deterministic generator (64-bit LCG), so a fixture is the same on every run.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Unix seconds of `date` (`YYYY-MM-DD`) at midnight UTC.
pub fn utc_day_start(date: &str) -> i64 {
    let d: jiff::civil::Date = date.parse().unwrap();
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_second()
}

/// Inserts `rows` into `database.events` in one block.
pub async fn insert_events(
    client: &clickhouse::Client,
    database: &str,
    rows: &[glimpse_core::schema::EventRow],
) {
    let mut insert = client
        .clone()
        .with_database(database)
        .insert::<glimpse_core::schema::EventRow>("events")
        .await
        .unwrap();
    for row in rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
}

/// A ClickHouse server of its own for one test, deleted afterwards.
pub struct TestClickHouse {
    pub server: LocalClickHouse,
    pub client: clickhouse::Client,
    _dir: tempfile::TempDir,
}

impl TestClickHouse {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = LocalClickHouse::start(&dir.path().join("clickhouse"), "clickhouse-server")
            .await
            .expect("starting clickhouse-server (run the README's test command to install it)");
        // With the server's generated password: it refuses clients without it.
        let client = server.client();
        Self {
            server,
            client,
            _dir: dir,
        }
    }

    /// Keeps the server for every test of this binary (in a static, which is never dropped):
    /// a watchdog process kills it and deletes its directory once this process has exited,
    /// however it ends (a failed test, an abort, a kill by CI's timeout).
    pub fn shared_until_exit(self) -> &'static Self {
        let pid = self.server.pid().expect("clickhouse-server is running");
        // `read` returns when the pipe's write end closes: when the kernel closes this process's
        // descriptors at exit (the pipe is close-on-exec, so no other child holds it).
        // Interrupts are ignored so that a Ctrl-C or a group SIGTERM still leads to cleanup.
        const WATCHDOG: &str = r#"trap '' INT TERM HUP
read _
kill -KILL "$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
rm -rf "$2""#;
        let watchdog = std::process::Command::new("sh")
            .args(["-c", WATCHDOG, "clickhouse-watchdog", &pid.to_string()])
            .arg(self._dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the ClickHouse watchdog (sh)");
        // Its stdin stays open as long as this process lives.
        Box::leak(Box::new(watchdog));
        Box::leak(Box::new(self))
    }

    /// The server's URL with its credentials in it, as `GLIMPSE_CLICKHOUSE_URL` accepts it.
    pub fn url(&self) -> String {
        self.server.url_with_credentials()
    }

    /// The generated password of the server's `default` user.
    pub fn password(&self) -> &str {
        self.server.password()
    }

    /// A collector configuration pointed at this server, accepting `example.com`.
    pub fn config(&self) -> Config {
        test_config(&self.server, self._dir.path().join("glimpse"))
    }

    pub async fn count(&self, sql: &str) -> u64 {
        self.client
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Whether a table exists, for tests that expect it to be empty or absent.
    pub async fn events_rows(&self) -> u64 {
        let exists = self
            .count(
                "SELECT count() FROM system.tables WHERE database = 'glimpse' AND name = 'events'",
            )
            .await;
        if exists == 0 {
            return 0;
        }
        self.count("SELECT count() FROM glimpse.events").await
    }
}

/// A Glimpse configuration pointed at `server`, accepting `example.com`, keeping its state in
/// `data_dir`: quick flushes, no rollup (figures must not change under a test's feet: tests
/// that want the rollup build it themselves, `glimpse_query::rollup::refresh`).
pub fn test_config(server: &LocalClickHouse, data_dir: std::path::PathBuf) -> Config {
    Config {
        clickhouse_url: Some(server.url().to_string()),
        clickhouse_user: server.user().to_string(),
        clickhouse_password: server.password().into(),
        sites: vec![glimpse_core::site::Site::new("example.com")],
        data_dir,
        collector: glimpse_core::config::CollectorConfig {
            batch_max_delay_ms: 200,
            ..Default::default()
        },
        query: glimpse_core::config::QueryConfig {
            rollup_interval_secs: 0,
            ..Default::default()
        },
        ..Config::default()
    }
}

/// A real browser's user agent: requests without one are dropped as bots.
pub const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// An HTTP client that looks like a browser.
pub fn browser_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(FIREFOX)
        .build()
        .unwrap()
}

/// The directory a test's Glimpse state goes in (beside its ClickHouse).
impl TestClickHouse {
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("glimpse")
    }
}

/// The Python that runs the chdb (current ClickHouse) and Compose checks: `GLIMPSE_TEST_PYTHON`,
/// which `scripts/test.sh` points at its `.venv`, else `python3`.
pub fn test_python() -> std::path::PathBuf {
    std::env::var_os("GLIMPSE_TEST_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
        .into()
}

pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub async fn wait_for_200(client: &reqwest::Client, url: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(response) = client.get(url).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not answer 200 within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a page view of `path` to the collector at `addr` until it is answered `202`: while it
/// is refused, every answer must be a `503` (a collector that is full or waiting for
/// ClickHouse), and it must accept within `timeout`.
pub async fn post_until_accepted(addr: std::net::SocketAddr, path: &str, timeout: Duration) {
    let client = browser_client();
    let body = format!(r#"{{"n":"pageview","u":"https://example.com{path}","d":"example.com"}}"#);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let response = client
            .post(format!("http://{addr}/api/event"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if response.status() == 202 {
            return;
        }
        assert_eq!(response.status().as_u16(), 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "not accepting again within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `glimpse.events` through `client` until it holds at least `n` rows, failing after
/// `timeout` with how many arrived. A query that fails (ClickHouse still starting) counts 0.
pub async fn wait_for_event_rows(client: &clickhouse::Client, n: usize, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let count: u64 = client
            .query("SELECT count() FROM glimpse.events")
            .fetch_one()
            .await
            .unwrap_or(0);
        if count as usize >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {count} of {n} rows arrived within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serves this process's metrics on a free loopback port until `stop` is cancelled, as
/// `metrics_addr` does under `glimpse serve`, and returns their URL.
pub async fn serve_metrics_until(stop: &tokio_util::sync::CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(glimpse_core::telemetry::serve_metrics(
        listener,
        stop.clone().cancelled_owned(),
    ));
    url
}
