//! A full disk, end to end, on small real file systems (tmpfs mounts; the tests run as root and
//! say so plainly when they cannot mount). Three writers share Glimpse's data directory: the
//! spool, the salt files and, under `glimpse serve`, the local ClickHouse. None of them may lose
//! an accepted event or leave damaged state behind when the disk runs out.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{free_addr, post_until_accepted, wait_for_200, wait_for_event_rows, FIREFOX};
use glimpse_collector::ingest::pseudonym::SaltStore;
use glimpse_core::db::local::LocalClickHouse;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A tmpfs of `mib` MiB mounted at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (after saying why) where mounting is impossible, e.g. without root.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Self(dir.to_path_buf())),
            Ok(out) => {
                println!(
                    "SKIPPED: cannot mount a tmpfs at {} (the test needs root): {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    /// Fills the file system with `name`, leaving `leave` bytes free.
    fn fill(&self, name: &str, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xAAu8; 4096];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&[0xAA]).is_ok() {}
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(leave)).unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A client for `http://user:password@host:port` (the local ClickHouse has a password).
fn client(url: &str) -> clickhouse::Client {
    let (credentials, host) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('@'))
        .expect("a URL with credentials");
    let (user, password) = credentials.split_once(':').unwrap();
    clickhouse::Client::default()
        .with_url(format!("http://{host}"))
        .with_user(user)
        .with_password(password)
        .with_validation(false)
}

/// Starts `glimpse collector` and waits until it is ready.
async fn collector(
    url: &str,
    addr: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
    data_dir: &Path,
    min_free_bytes: u64,
) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .arg("collector")
        .env("GLIMPSE_SPOOL_MIN_FREE_BYTES", min_free_bytes.to_string())
        .env("GLIMPSE_CLICKHOUSE_URL", url)
        .env("GLIMPSE_COLLECTOR_ADDR", addr.to_string())
        .env("GLIMPSE_METRICS_ADDR", metrics_addr.to_string())
        .env("GLIMPSE_SITES", "example.com")
        .env("GLIMPSE_DATA_DIR", data_dir)
        .env("GLIMPSE_BATCH_MAX_ROWS", "500")
        .env("GLIMPSE_BATCH_MAX_DELAY_MS", "200")
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
    child
}

async fn terminate(mut child: Child) {
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exits within 60 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// What the clients were told.
#[derive(Default)]
struct Answers {
    accepted: HashSet<String>,
    /// The `Retry-After` of every `503` (empty string if it had none).
    retry_after: Vec<String>,
}

/// Concurrent clients sending unique beacons until `stop` is set.
fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Answers>> {
    (0..clients)
        .map(|c| {
            let stop = stop.clone();
            let refused = refused.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .user_agent(FIREFOX)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut answers = Answers::default();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let path = format!("/c{c}/n{n}");
                    let body = format!(
                        r#"{{"n":"pageview","u":"https://example.com{path}","d":"example.com"}}"#
                    );
                    let response = client
                        .post(format!("http://{addr}/api/event"))
                        .header("content-type", "text/plain")
                        .body(body)
                        .send()
                        .await
                        .expect("the collector answers");
                    match response.status().as_u16() {
                        202 => {
                            answers.accepted.insert(path);
                        }
                        503 => {
                            let value = response
                                .headers()
                                .get("retry-after")
                                .map(|v| v.to_str().unwrap_or_default().to_string());
                            answers.retry_after.push(value.unwrap_or_default());
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!("unexpected status {other}: {:?}", response.text().await),
                    }
                }
                answers
            })
        })
        .collect()
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<Answers>>) -> Answers {
    let mut all = Answers::default();
    for task in tasks {
        let answers = task.await.unwrap();
        all.accepted.extend(answers.accepted);
        all.retry_after.extend(answers.retry_after);
    }
    all
}

async fn ready(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("http://{addr}/ready")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A metric's value on the process's metrics listener (`metrics_addr`; 0 if absent).
async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn stored(url: &str) -> Vec<String> {
    client(url)
        .query("SELECT pathname FROM glimpse.events")
        .fetch_all()
        .await
        .unwrap()
}

async fn wait_for_rows(url: &str, n: usize, timeout: Duration) {
    wait_for_event_rows(&client(url), n, timeout).await;
}

/// Files in a directory, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The stored rows are exactly the accepted beacons, each once.
fn check_exactly_once(accepted: &HashSet<String>, stored: &[String]) {
    let set: HashSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), set.len(), "duplicate rows in ClickHouse");
    let missing: Vec<_> = accepted.difference(&set).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} accepted events missing, e.g. {missing:?}",
        accepted.difference(&set).count()
    );
    let extra: Vec<_> = set.difference(accepted).take(5).collect();
    assert!(
        extra.is_empty(),
        "{} refused events stored, e.g. {extra:?}",
        set.difference(accepted).count()
    );
}

/// The data directory (spool and salts) on a 4 MiB file system, ClickHouse down, load until
/// the disk is full, ClickHouse back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_disk_full_refuses_with_503_and_loses_no_accepted_event() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("glimpse");
    let Some(disk) = Tmpfs::mount(&data_dir, "4m") else {
        return;
    };
    let clickhouse = LocalClickHouse::start(&dir.path().join("clickhouse"), "clickhouse-server")
        .await
        .expect("clickhouse-server (run scripts/test.sh)");
    let url = clickhouse.url_with_credentials();
    let (addr, metrics_addr) = (free_addr(), free_addr());
    // No reserve: the spool writes until the disk is really full (ENOSPC).
    let child = collector(&url, addr, metrics_addr, &data_dir, 0).await;
    let stopped = clickhouse.stop_for_restart().await;

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let clients = load(addr, 16, stop.clone(), refused.clone());
    // Until the disk is full: beacons are refused, and /ready says why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while refused.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the disk never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Under load the last bytes come and go (a torn write is cut back, a smaller record then
    // fits and clears the flag): /ready says "full" while appends keep failing, so it is
    // polled rather than read once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = ready(addr).await;
        if status == 503 {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "never 503: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["buffer"]["disk_full"], true, "{body}");
    // Refused for a while, then ClickHouse comes back under load and the spool drains.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let clickhouse = stopped.start_again().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = finish(clients).await;
    assert!(
        !answers.retry_after.is_empty(),
        "the full disk refused beacons"
    );
    assert!(
        answers
            .retry_after
            .iter()
            .all(|r| r.parse::<u32>().is_ok_and(|s| s > 0)),
        "every 503 says when to retry: {:?}",
        &answers.retry_after[..answers.retry_after.len().min(10)]
    );
    wait_for_rows(&url, answers.accepted.len(), Duration::from_secs(30)).await;

    // Accepting again without a restart.
    post_until_accepted(addr, "/after", Duration::from_secs(30)).await;
    let mut accepted = answers.accepted;
    accepted.insert("/after".into());
    wait_for_rows(&url, accepted.len(), Duration::from_secs(30)).await;
    // Give the shipper a moment to delete the segment it just shipped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = ready(addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["buffer"]["disk_full"], false, "{body}");

    // The gauges match the disk: the spool's bytes are its files' sizes, nothing pending.
    let spool = data_dir.join("spool");
    let on_disk: u64 = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(
        metric(metrics_addr, "glimpse_spool_bytes").await,
        on_disk as f64
    );
    assert_eq!(body["buffer"]["spool_bytes"], on_disk, "{body}");
    assert_eq!(
        metric(metrics_addr, "glimpse_spool_segments_pending").await,
        0.0
    );
    let accepted_metric = metric(metrics_addr, "glimpse_events_accepted_total").await;
    assert_eq!(accepted_metric, accepted.len() as f64);
    let leftovers = files(&spool);
    assert!(
        leftovers.len() <= 1,
        "only the open segment is left: {leftovers:?}"
    );

    terminate(child).await;
    let rows = stored(&url).await;
    check_exactly_once(&accepted, &rows);
    assert!(
        files(&spool).is_empty(),
        "spool empty after shutdown: {:?}",
        files(&spool)
    );
    println!(
        "spool disk full: {} answered 202, {} answered 503 with Retry-After, {} rows, 0 lost, 0 duplicates",
        accepted.len(),
        answers.retry_after.len(),
        rows.len()
    );
    clickhouse.stop().await;
    drop(disk);
}

/// Salt files on a full disk: creating a day's salt fails cleanly (the request gets a `503`,
/// see `http::event`), leaves no temp file, keeps the current day's salt working and intact,
/// and works once space is back, with the salt it then persists.
#[test]
fn salt_files_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("data"), "64k") else {
        return;
    };
    let salts = disk.0.join("salts");
    let day = 20_000;
    let at = |d: u32| u64::from(d) * 86_400 + 5;
    let ip = "81.2.69.142".parse().unwrap();
    let store = SaltStore::open(&salts, day).unwrap();
    let today = store
        .salts_at(at(day))
        .unwrap()
        .visitor_id("e.com", ip, FIREFOX);
    let filler = disk.fill("filler", 0);

    // A collector starting on the full disk, and midnight on the full disk, both fail cleanly.
    for _ in 0..3 {
        assert!(SaltStore::open(&salts, day + 1).is_err());
        assert!(store.salts_at(at(day + 1)).is_err());
    }
    assert_eq!(files(&salts), [format!("{day}.salt")], "no temp files left");
    // The day's salt keeps working and its file is whole.
    assert_eq!(
        store
            .salts_at(at(day))
            .unwrap()
            .visitor_id("e.com", ip, FIREFOX),
        today
    );
    assert_eq!(
        SaltStore::open(&salts, day)
            .unwrap()
            .salts_at(at(day))
            .unwrap()
            .visitor_id("e.com", ip, FIREFOX),
        today
    );

    // Space is back: the next day's salt is created, persisted, and the same after a restart.
    std::fs::remove_file(filler).unwrap();
    let next = store
        .salts_at(at(day + 1))
        .unwrap()
        .visitor_id("e.com", ip, FIREFOX);
    assert_ne!(next, today);
    drop(store);
    let restarted = SaltStore::open(&salts, day + 1).unwrap();
    assert_eq!(
        restarted
            .salts_at(at(day + 1))
            .unwrap()
            .visitor_id("e.com", ip, FIREFOX),
        next
    );
}

/// `glimpse serve`'s layout: the local ClickHouse's data beside the spool on one disk, with
/// 22 MiB left free by other files. ClickHouse down, load until the spool refuses, ClickHouse
/// back. Without the spool's free space reserve (`spool_min_free_bytes`, 16 MiB here) the spool
/// filled the disk to its last byte, and ClickHouse, with no room to store a single part, could
/// never take the backlog that would have freed it: every beacon after that was refused for
/// good. With it, the backlog drains, ClickHouse's data stays whole, and beacons are accepted
/// again once there is space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_on_the_same_disk_can_still_take_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("data"), "64m") else {
        return;
    };
    let data_dir = disk.0.join("glimpse");
    let clickhouse = LocalClickHouse::start(&disk.0.join("clickhouse"), "clickhouse-server")
        .await
        .expect("clickhouse-server (run scripts/test.sh)");
    let url = clickhouse.url_with_credentials();
    let addr = free_addr();
    let child = collector(&url, addr, free_addr(), &data_dir, 16 << 20).await;
    let stopped = clickhouse.stop_for_restart().await;
    let other_files = disk.fill("other-files", 22 << 20);

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let clients = load(addr, 16, stop.clone(), refused.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while refused.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = ready(addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["buffer"]["disk_full"], true, "{body}");
    let clickhouse = stopped
        .start_again()
        .await
        .expect("ClickHouse starts on the spool's disk");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = finish(clients).await;
    wait_for_rows(&url, answers.accepted.len(), Duration::from_secs(60)).await;
    let probe = reqwest::Client::builder()
        .user_agent(FIREFOX)
        .build()
        .unwrap();
    // The backlog now takes ClickHouse's room on this disk (small parts cost more than spool
    // records until they merge). Once the operator frees space, beacons are accepted again.
    std::fs::remove_file(other_files).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = probe
            .post(format!("http://{addr}/api/event"))
            .body(r#"{"n":"pageview","u":"https://example.com/after","d":"example.com"}"#)
            .send()
            .await
            .unwrap();
        if response.status() == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not accepting again after the drain"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut accepted = answers.accepted;
    accepted.insert("/after".into());
    wait_for_rows(&url, accepted.len(), Duration::from_secs(30)).await;
    terminate(child).await;
    // ClickHouse's state is whole: it restarts on that disk and holds every row once.
    let clickhouse = clickhouse.restart().await.expect("ClickHouse restarts");
    let rows = stored(&url).await;
    check_exactly_once(&accepted, &rows);
    println!(
        "shared disk: {} answered 202, {} answered 503 with Retry-After, {} rows, 0 lost, 0 duplicates",
        accepted.len(),
        answers.retry_after.len(),
        rows.len()
    );
    clickhouse.stop().await;
    drop(disk);
}
