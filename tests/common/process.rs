//! The real `glimpse` binary as a child process of a test (`glimpse collector`, `glimpse
//! query`), on a cluster of `common::cluster`, its stderr in a file and its metrics on a port
//! of its own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::free_addr;

/// A `glimpse` process of the test, its stderr in a file.
pub struct Glimpse {
    pub name: &'static str,
    child: tokio::process::Child,
    log: PathBuf,
    metrics: std::net::SocketAddr,
}

impl Glimpse {
    /// `glimpse <command>` in cluster mode (`common::cluster::CLUSTER`) with its data in
    /// `dir`, site `example.com`, loopback trusted as a proxy, and `env` on top.
    pub fn start(name: &'static str, command: &str, env: &[(&str, String)], dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join(format!("{name}.log"));
        let metrics = free_addr();
        let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"));
        process
            .arg(command)
            .env_remove("GLIMPSE_CLICKHOUSE_URL")
            .env("GLIMPSE_DATA_DIR", dir)
            .env("GLIMPSE_SITES", "example.com")
            .env("GLIMPSE_CLICKHOUSE_CLUSTER", super::cluster::CLUSTER)
            .env("GLIMPSE_TRUSTED_PROXIES", "127.0.0.1")
            .env("GLIMPSE_METRICS_ADDR", metrics.to_string())
            .env("GLIMPSE_SHUTDOWN_TIMEOUT_SECS", "20")
            .env("GLIMPSE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (key, value) in env {
            process.env(key, value);
        }
        let child = process.spawn().expect("starting glimpse");
        Self {
            name,
            child,
            log,
            metrics,
        }
    }

    /// The value of the counter or gauge `name` (without labels) on its `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit within the shutdown timeout.
    pub async fn stop(mut self) -> String {
        let pid = self.child.id().expect("running") as i32;
        kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop:\n{}", self.name, self.log()))
            .unwrap();
        assert!(status.success(), "{}: {status}\n{}", self.name, self.log());
        self.log()
    }
}

/// Two `glimpse collector` processes (separate data directories under `work`, one shared salt
/// directory, so a visitor gets one id through either) and a `glimpse query` process, each
/// given its own list of servers (`clickhouse_url`).
pub struct Services {
    pub collectors: Vec<Glimpse>,
    /// The collectors' `http://addr`.
    pub bases: Vec<String>,
    pub query: Glimpse,
    pub query_base: String,
}

impl Services {
    pub fn start(work: &Path, collector_lists: [String; 2], query_list: String) -> Self {
        let salts = work.join("salts");
        let mut collectors = Vec::new();
        let mut bases = Vec::new();
        for (i, list) in collector_lists.into_iter().enumerate() {
            let addr = free_addr();
            let name = ["collector-1", "collector-2"][i];
            collectors.push(Glimpse::start(
                name,
                "collector",
                &[
                    ("GLIMPSE_CLICKHOUSE_URL", list),
                    ("GLIMPSE_COLLECTOR_ADDR", addr.to_string()),
                    ("GLIMPSE_BATCH_MAX_DELAY_MS", "200".into()),
                    // Both collectors on this machine: one salt directory gives a visitor one
                    // id (tests/cluster_salts.rs covers `salt_key`).
                    ("GLIMPSE_SALT_DIR", salts.display().to_string()),
                    ("GLIMPSE_SALT_DIR_SHARED", "true".into()),
                ],
                &work.join(name),
            ));
            bases.push(format!("http://{addr}"));
        }
        let query_addr = free_addr();
        let query = Glimpse::start(
            "query",
            "query",
            &[
                ("GLIMPSE_CLICKHOUSE_URL", query_list),
                ("GLIMPSE_QUERY_ADDR", query_addr.to_string()),
                ("GLIMPSE_ROLLUP_INTERVAL_SECS", "0".into()),
            ],
            &work.join("query"),
        );
        Services {
            collectors,
            bases,
            query,
            query_base: format!("http://{query_addr}"),
        }
    }
}
