//! `glimpse serve` with the ClickHouse it starts itself, end to end with the real binary: a CLI
//! command run beside it (the README's first step, `glimpse key create`) uses serve's
//! ClickHouse and leaves it running; serve starts its ClickHouse again when it dies and exits
//! within `shutdown_timeout_secs` on SIGTERM; that ClickHouse has a password nobody else has.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_addr, wait_for_200};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

struct Serve {
    child: tokio::process::Child,
    data: tempfile::TempDir,
    collector: std::net::SocketAddr,
    query: std::net::SocketAddr,
    /// One fixed metrics address for serve and every command, as with the default
    /// (`127.0.0.1:9464`): a command must not try to take serve's port.
    metrics: std::net::SocketAddr,
    log: PathBuf,
}

/// What every command of this installation runs with (no `GLIMPSE_CLICKHOUSE_URL`).
fn env(
    data: &Path,
    collector: std::net::SocketAddr,
    query: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
) -> Vec<(String, String)> {
    [
        ("GLIMPSE_DATA_DIR", data.to_string_lossy().into_owned()),
        ("GLIMPSE_COLLECTOR_ADDR", collector.to_string()),
        ("GLIMPSE_METRICS_ADDR", metrics.to_string()),
        ("GLIMPSE_QUERY_ADDR", query.to_string()),
        ("GLIMPSE_SITES", "example.com".into()),
        ("GLIMPSE_SHUTDOWN_TIMEOUT_SECS", "10".into()),
        ("GLIMPSE_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn command(serve: &Serve, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"));
    command.args(args).env_remove("GLIMPSE_CLICKHOUSE_URL");
    for (k, v) in env(
        serve.data.path(),
        serve.collector,
        serve.query,
        serve.metrics,
    ) {
        command.env(k, v);
    }
    command
}

impl Serve {
    async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let (collector, query, metrics) = (free_addr(), free_addr(), free_addr());
        let log = data.path().join("serve.log");
        let mut serve = Serve {
            child: tokio::process::Command::new("true").spawn().unwrap(),
            data,
            collector,
            query,
            metrics,
            log,
        };
        let log_file = std::fs::File::create(&serve.log).unwrap();
        serve.child = command(&serve, &["serve"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        serve.wait_ready(Duration::from_secs(90)).await;
        serve
    }

    async fn wait_ready(&self, timeout: Duration) {
        let client = reqwest::Client::new();
        wait_for_200(
            &client,
            &format!("http://{}/ready", self.collector),
            timeout,
        )
        .await;
        wait_for_200(&client, &format!("http://{}/ready", self.query), timeout).await;
    }

    async fn query_ready(&self) -> bool {
        let url = format!("http://{}/ready", self.query);
        matches!(reqwest::get(url).await, Ok(r) if r.status() == 200)
    }

    fn clickhouse_dir(&self) -> PathBuf {
        self.data.path().join("clickhouse")
    }

    fn clickhouse_pid(&self) -> i32 {
        std::fs::read_to_string(self.clickhouse_dir().join("server.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The local ClickHouse's HTTP URL, from its generated config.
    fn clickhouse_url(&self) -> String {
        let config = std::fs::read_to_string(self.clickhouse_dir().join("config.xml")).unwrap();
        let port = config
            .split("<http_port>")
            .nth(1)
            .and_then(|rest| rest.split("</http_port>").next())
            .unwrap();
        format!("http://127.0.0.1:{port}")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A test that fails (or ends without SIGTERM) must not leave serve's ClickHouse running: a
/// killed serve cannot stop its child.
impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let pid = std::fs::read_to_string(self.clickhouse_dir().join("server.pid"));
        if let Some(pid) = pid.ok().and_then(|t| t.trim().parse::<i32>().ok()) {
            // Only if that pid is still this test's ClickHouse.
            let config = self.clickhouse_dir().join("config.xml");
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

async fn stats(serve: &Serve, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/stats/aggregate?site_id=example.com&period=day",
            serve.query
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_beside_serve_leaves_it_running_and_serve_survives_its_clickhouse_dying() {
    let mut serve = Serve::start().await;
    let first_pid = serve.clickhouse_pid();

    // The README's first step, with the same environment as the running server.
    let output = command(&serve, &["key", "create", "--site", "example.com"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "glimpse key create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(!key.is_empty(), "a key is printed");
    for _ in 0..10 {
        assert!(
            serve.query_ready().await,
            "the query service stays ready after `glimpse key create`; serve's log:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        kill(Pid::from_raw(first_pid), None).is_ok(),
        "serve's ClickHouse still runs"
    );
    let response = stats(&serve, &key).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    // Other commands too, several times: none stops serve's ClickHouse.
    for args in [&["key", "list"][..], &["site", "list"], &["migrate"]] {
        let output = command(&serve, args).output().await.unwrap();
        assert!(output.status.success(), "glimpse {args:?}");
    }
    assert_eq!(serve.clickhouse_pid(), first_pid);
    assert_eq!(stats(&serve, &key).await.status(), 200);

    // A second `glimpse serve` on the same data directory refuses to start, touching nothing.
    let second = tokio::time::timeout(
        Duration::from_secs(30),
        command(&serve, &["serve"]).output(),
    )
    .await
    .expect("a second serve gives up at once")
    .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another Glimpse process"), "{stderr}");
    assert_eq!(serve.clickhouse_pid(), first_pid);
    assert!(serve.query_ready().await);

    // Serve's ClickHouse dies: serve starts it again and is ready again, the key still works.
    kill(Pid::from_raw(first_pid), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pid = std::fs::read_to_string(serve.clickhouse_dir().join("server.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        if pid.is_some_and(|pid| pid != first_pid) && serve.query_ready().await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not start its ClickHouse again; its log:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stats(&serve, &key).await.status(), 200);
    assert!(
        serve.log().contains("starting it again"),
        "the restart is logged:\n{}",
        serve.log()
    );

    // SIGTERM: out within shutdown_timeout_secs (10), ClickHouse stopped.
    let second_pid = serve.clickhouse_pid();
    let started = Instant::now();
    kill(
        Pid::from_raw(serve.child.id().unwrap() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(12), serve.child.wait())
        .await
        .expect("serve exits within shutdown_timeout_secs after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}: {}", serve.log());
    assert!(started.elapsed() < Duration::from_secs(11));
    assert!(
        kill(Pid::from_raw(second_pid), None).is_err(),
        "serve stopped its ClickHouse"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_clickhouse_refuses_clients_without_its_password() {
    let serve = Serve::start().await;
    let url = serve.clickhouse_url();
    let http = reqwest::Client::new();
    let ask = |user: Option<(&str, &str)>| {
        let mut request = http
            .post(&url)
            .body("SELECT count() FROM system.tables WHERE database = 'glimpse'");
        if let Some((user, password)) = user {
            request = request
                .header("X-ClickHouse-User", user)
                .header("X-ClickHouse-Key", password);
        }
        request.send()
    };
    let anonymous = ask(None).await.unwrap();
    let status = anonymous.status();
    let body = anonymous.text().await.unwrap();
    assert_ne!(status, 200, "an unauthenticated query is refused: {body}");
    assert!(
        body.contains("assword") || body.contains("uthenticat"),
        "{body}"
    );
    let wrong = ask(Some(("default", "not-the-password"))).await.unwrap();
    assert_ne!(wrong.status(), 200, "a wrong password is refused");

    // The password is in the data directory, readable by its owner only.
    let path = serve.clickhouse_dir().join("password");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "password file mode {mode:o}");
    let password = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(password.len() >= 32, "a long random password");
    let dir_mode = std::fs::metadata(serve.clickhouse_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        dir_mode & 0o077,
        0,
        "the ClickHouse directory is private: {dir_mode:o}"
    );
    let right = ask(Some(("default", &password))).await.unwrap();
    assert_eq!(right.status(), 200, "the password works");

    // The password is in no log: not serve's, not ClickHouse's, not a CLI command's.
    let output = command(&serve, &["key", "list"]).output().await.unwrap();
    assert!(output.status.success());
    let logs = [
        serve.log(),
        std::fs::read_to_string(serve.clickhouse_dir().join("server.log")).unwrap_or_default(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ];
    for log in logs {
        assert!(!log.contains(&password), "the password is logged:\n{log}");
    }

    // ClickHouse listens on loopback only: its config says so, and its process's listening
    // sockets are all on 127.0.0.1.
    let listening = listening_addresses(serve.clickhouse_pid());
    assert!(!listening.is_empty(), "found ClickHouse's sockets");
    for addr in &listening {
        assert!(addr.ip().is_loopback(), "ClickHouse listens on {addr}");
    }
}

/// The TCP addresses process `pid` listens on (IPv4 and IPv6), from /proc.
fn listening_addresses(pid: i32) -> Vec<std::net::SocketAddr> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // st 0A: LISTEN.
            if fields.len() < 10 || fields[3] != "0A" || !inodes.contains(fields[9]) {
                continue;
            }
            let (ip, port) = fields[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            let ip: std::net::IpAddr = if ip.len() == 8 {
                let n = u32::from_str_radix(ip, 16).unwrap();
                std::net::Ipv4Addr::from(n.swap_bytes()).into()
            } else {
                let mut bytes = [0u8; 16];
                for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                    let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).unwrap();
                    chunk.copy_from_slice(&word.to_le_bytes());
                }
                std::net::Ipv6Addr::from(bytes).into()
            };
            found.push(std::net::SocketAddr::new(ip, port));
        }
    }
    found
}
