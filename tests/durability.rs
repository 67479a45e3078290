//! Durable ingest, end to end: the real `glimpse collector` with its disk spool, a real
//! ClickHouse, concurrent clients, and a fault in the middle of the load. Each test ends by
//! comparing the events answered `202` with the rows in ClickHouse (and finding no duplicates).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{free_addr, post_until_accepted, wait_for_200, wait_for_event_rows, FIREFOX};
use glimpse_core::db::local::LocalClickHouse;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

struct World {
    dir: tempfile::TempDir,
    clickhouse: Option<LocalClickHouse>,
    /// With the credentials, for `GLIMPSE_CLICKHOUSE_URL`.
    url: String,
    password: String,
    addr: std::net::SocketAddr,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clickhouse =
            LocalClickHouse::start(&dir.path().join("clickhouse"), "clickhouse-server")
                .await
                .expect("clickhouse-server (run scripts/test.sh)");
        let url = clickhouse.url_with_credentials();
        let password = clickhouse.password().to_string();
        Self {
            dir,
            clickhouse: Some(clickhouse),
            url,
            password,
            addr: free_addr(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("glimpse")
    }

    fn client(&self) -> clickhouse::Client {
        let url = self
            .url
            .replacen(&format!("default:{}@", self.password), "", 1);
        clickhouse::Client::default()
            .with_url(url)
            .with_user("default")
            .with_password(&self.password)
            .with_validation(false)
    }

    /// Starts `glimpse collector` against this world's ClickHouse and data directory.
    async fn collector(&self, url: &str, extra: &[(&str, &str)]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_glimpse"));
        command
            .arg("collector")
            .env("GLIMPSE_CLICKHOUSE_URL", url)
            .env("GLIMPSE_COLLECTOR_ADDR", self.addr.to_string())
            .env("GLIMPSE_METRICS_ADDR", "127.0.0.1:0")
            .env("GLIMPSE_SITES", "example.com")
            .env("GLIMPSE_DATA_DIR", self.data_dir())
            .env("GLIMPSE_BATCH_MAX_ROWS", "500")
            .env("GLIMPSE_BATCH_MAX_DELAY_MS", "200")
            .env("GLIMPSE_LOG", "warn")
            .kill_on_drop(true);
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn glimpse");
        wait_for_200(
            &reqwest::Client::new(),
            &format!("http://{}/ready", self.addr),
            Duration::from_secs(30),
        )
        .await;
        child
    }

    async fn stored(&self) -> Vec<String> {
        self.client()
            .query("SELECT pathname FROM glimpse.events")
            .fetch_all()
            .await
            .unwrap()
    }

    /// Waits until ClickHouse holds at least `n` rows (the spool drained), at most `timeout`.
    async fn wait_for_rows(&self, n: usize, timeout: Duration) {
        wait_for_event_rows(&self.client(), n, timeout).await;
    }

    async fn sql(&self, statement: &str) {
        self.client().query(statement).execute().await.unwrap();
    }
}

/// Concurrent clients sending unique beacons until `stop` is set or each has sent `max`.
/// Returns the paths answered 202 and the number of 503s seen (with their Retry-After).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<String>, Vec<String>)>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, clients: usize, max: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .user_agent(FIREFOX)
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let (mut accepted, mut retry_after) = (Vec::new(), Vec::new());
                    for n in 0..max {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let path = format!("/c{c}/n{n}");
                        let body = format!(
                            r#"{{"n":"pageview","u":"https://example.com{path}","d":"example.com"}}"#
                        );
                        match client
                            .post(format!("http://{addr}/api/event"))
                            .header("content-type", "text/plain")
                            .body(body)
                            .send()
                            .await
                        {
                            Ok(r) if r.status() == 202 => accepted.push(path),
                            Ok(r) if r.status() == 503 => {
                                let value = r.headers().get("retry-after").map(|v| {
                                    v.to_str().unwrap_or_default().to_string()
                                });
                                retry_after.push(value.unwrap_or_default());
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Ok(r) => panic!("unexpected status {}", r.status()),
                            // The collector is down (killed): this client stops.
                            Err(_) => break,
                        }
                        tokio::time::sleep(pause).await;
                    }
                    (accepted, retry_after)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> (HashSet<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut accepted = HashSet::new();
        let mut retry_after = Vec::new();
        for task in self.tasks {
            let (a, r) = task.await.unwrap();
            accepted.extend(a);
            retry_after.extend(r);
        }
        (accepted, retry_after)
    }
}

async fn terminate(mut child: Child) {
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exits within 60 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// Every accepted event stored exactly once; returns the stored set.
fn check_exactly_once(accepted: &HashSet<String>, stored: &[String]) -> HashSet<String> {
    let set: HashSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), set.len(), "duplicate rows in ClickHouse");
    let missing: Vec<_> = accepted.difference(&set).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} accepted events missing, e.g. {missing:?}",
        accepted.difference(&set).count()
    );
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_accepted_event() {
    let world = World::new().await;
    let child = world.collector(&world.url, &[]).await;
    let load = Load::start(world.addr, 16, 3000, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(800)).await;
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    let (accepted, _) = load.finish().await;
    drop(child);
    assert!(
        accepted.len() > 100,
        "only {} accepted before the kill",
        accepted.len()
    );

    // Restart: the spool is replayed first.
    let child = world.collector(&world.url, &[]).await;
    world
        .wait_for_rows(accepted.len(), Duration::from_secs(60))
        .await;
    terminate(child).await;
    let stored = world.stored().await;
    let stored = check_exactly_once(&accepted, &stored);
    // A beacon can be durable in the spool while its 202 is still being written when the
    // process dies: stored, though its client saw an error. At most one per client in flight.
    let extra = stored.len() - accepted.len();
    assert!(extra <= 16, "{extra} rows beyond the 202s");
    println!(
        "kill -9: {} answered 202, {} rows, {extra} stored but unanswered, 0 duplicates",
        accepted.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_for_30_seconds_mid_load() {
    let mut world = World::new().await;
    let child = world.collector(&world.url, &[]).await;
    let load = Load::start(world.addr, 8, 100_000, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = world.clickhouse.take().unwrap().stop_for_restart().await;
    let before = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(31)).await;
    // Still accepting while ClickHouse is away.
    let ready = reqwest::get(format!("http://{}/ready", world.addr))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["clickhouse"], "down", "{body}");
    assert!(
        body["buffer"]["spool_bytes"].as_u64().unwrap() > 0,
        "{body}"
    );
    world.clickhouse = Some(stopped.start_again().await.unwrap());
    let outage = before.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (accepted, retry_after) = load.finish().await;
    assert!(retry_after.is_empty(), "no 503 while the spool has room");
    world
        .wait_for_rows(accepted.len(), Duration::from_secs(60))
        .await;
    terminate(child).await;
    let stored = world.stored().await;
    check_exactly_once(&accepted, &stored);
    assert_eq!(stored.len(), accepted.len());
    println!(
        "ClickHouse down {:.1} s: {} answered 202, {} rows, 0 duplicates",
        outage.as_secs_f64(),
        accepted.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_rejecting_inserts_for_a_while() {
    let world = World::new().await;
    let child = world.collector(&world.url, &[]).await;
    let load = Load::start(world.addr, 8, 100_000, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Inserts now fail (the table is gone for ClickHouse) until it is attached again.
    world.sql("DETACH TABLE glimpse.events").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    world.sql("ATTACH TABLE glimpse.events").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (accepted, _) = load.finish().await;
    world
        .wait_for_rows(accepted.len(), Duration::from_secs(60))
        .await;
    terminate(child).await;
    let stored = world.stored().await;
    check_exactly_once(&accepted, &stored);
    assert_eq!(stored.len(), accepted.len());
    println!(
        "inserts rejected 4 s: {} answered 202, {} rows, 0 duplicates",
        accepted.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_budget_exhausted_answers_503_then_recovers() {
    let world = World::new().await;
    let child = world
        .collector(&world.url, &[("GLIMPSE_SPOOL_MAX_BYTES", "60000")])
        .await;
    world.sql("DETACH TABLE glimpse.events").await;
    let load = Load::start(world.addr, 8, 100_000, Duration::from_millis(5));
    // Wait until the budget is exhausted: /ready says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::get(format!("http://{}/ready", world.addr))
            .await
            .unwrap();
        if ready.status() == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool never filled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.sql("ATTACH TABLE glimpse.events").await;
    let (accepted, retry_after) = load.finish().await;
    // Recovery: the spool drains and beacons are accepted again.
    assert!(!retry_after.is_empty(), "503s were answered");
    assert!(retry_after.iter().all(|r| r == "30"), "{retry_after:?}");
    post_until_accepted(world.addr, "/after", Duration::from_secs(30)).await;
    let mut accepted = accepted;
    accepted.insert("/after".into());
    world
        .wait_for_rows(accepted.len(), Duration::from_secs(60))
        .await;
    terminate(child).await;
    let stored = world.stored().await;
    check_exactly_once(&accepted, &stored);
    assert_eq!(stored.len(), accepted.len());
    println!(
        "spool budget: {} answered 202, {} answered 503 (Retry-After 30), {} rows, 0 duplicates",
        accepted.len(),
        retry_after.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_spool_tail_keeps_the_valid_prefix() {
    let world = World::new().await;
    // A collector whose ClickHouse is unreachable keeps everything in its spool.
    let nowhere = format!("http://{}", free_addr());
    let child = world
        .collector(
            &nowhere,
            &[
                ("GLIMPSE_SHUTDOWN_TIMEOUT_SECS", "2"),
                ("GLIMPSE_BATCH_MAX_ROWS", "40"),
            ],
        )
        .await;
    let load = Load::start(world.addr, 4, 50, Duration::ZERO);
    let (accepted, _) = load.finish_after_all().await;
    assert_eq!(accepted.len(), 200);
    terminate(child).await;

    // While it is stopped: tear the tail of one segment, append garbage to another.
    let spool = world.data_dir().join("spool");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 2, "{segments:?}");
    let torn = segments.last().unwrap().clone();
    let torn_rows_before = rows_in(&torn);
    let len = std::fs::metadata(&torn).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&segments[0])
            .unwrap();
        f.write_all(b"\x13\x37 garbage after a crash \xff\xff\xff\xff")
            .unwrap();
    }
    let torn_rows_after = rows_in(&torn);
    assert_eq!(torn_rows_after + 1, torn_rows_before, "one record torn");

    // Restart against the real ClickHouse: the valid prefix of everything is shipped.
    let child = world.collector(&world.url, &[]).await;
    let expected = accepted.len() - 1;
    world.wait_for_rows(expected, Duration::from_secs(60)).await;
    terminate(child).await;
    let stored = world.stored().await;
    let set: HashSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), set.len(), "no duplicates");
    assert_eq!(stored.len(), expected, "all but the torn record");
    assert!(set.is_subset(&accepted));
    println!(
        "corrupt tail: {} answered 202, 1 record torn, {} rows recovered, 0 duplicates",
        accepted.len(),
        stored.len()
    );
}

fn rows_in(segment: &Path) -> usize {
    glimpse_collector::sink::spool::segment::read(segment)
        .unwrap()
        .rows
        .len()
}

impl Load {
    /// Waits for every client to send all of its beacons.
    async fn finish_after_all(self) -> (HashSet<String>, Vec<String>) {
        let mut accepted = HashSet::new();
        let mut retry_after = Vec::new();
        for task in self.tasks {
            let (a, r) = task.await.unwrap();
            accepted.extend(a);
            retry_after.extend(r);
        }
        (accepted, retry_after)
    }
}

/// An insert of a batch that is still running inside ClickHouse (its collector was killed
/// after sending it) must not read as "not stored": the count waits for it, and a re-send
/// while it runs is refused by its query id. Without both, the replay after a `kill -9`
/// could store the batch twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_insert_still_running_is_waited_for() {
    use glimpse_collector::sink::{ClickHouseSink, Sink};

    let world = World::new().await;
    let client = world.client();
    glimpse_core::schema::migrate(&client, "glimpse")
        .await
        .unwrap();
    let batch_id = 0x5EED_u64;
    let query_id = format!("glimpse-batch-{batch_id:016x}");
    // The orphan: an insert of the batch that takes 2 s inside ClickHouse.
    let orphan = {
        let client = client.clone().with_setting("query_id", query_id.clone());
        tokio::spawn(async move {
            client
                .query(&format!(
                    "INSERT INTO glimpse.events (site, timestamp, pathname, batch_id) \
                     SELECT 'example.com', now(), '/orphan', toUInt64({batch_id}) \
                     FROM system.one WHERE sleep(2) = 0"
                ))
                .execute()
                .await
        })
    };
    // Until it shows in the process list.
    let started = std::time::Instant::now();
    loop {
        let running: u64 = client
            .query("SELECT count() FROM system.processes WHERE query_id = ?")
            .bind(&query_id)
            .fetch_one()
            .await
            .unwrap();
        if running > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the orphan never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let flavor = std::sync::Arc::new(std::sync::OnceLock::new());
    let sink = ClickHouseSink::new(client.clone(), "glimpse", flavor);
    // A re-send while the orphan runs is refused...
    let row = glimpse_core::schema::EventRow {
        site: "example.com".into(),
        pathname: "/again".into(),
        batch_id,
        ..Default::default()
    };
    assert!(sink.write_batch(batch_id, &[row]).await.is_err());
    // ...and the count waits for the orphan: 1, not 0.
    assert_eq!(sink.stored_rows(batch_id).await.unwrap(), 1);
    orphan.await.unwrap().unwrap();
    let stored = world.stored().await;
    assert_eq!(stored, ["/orphan"]);
}
