//! A real ClickHouse cluster on loopback for the scale-out tests: Debian's ZooKeeper and four
//! `clickhouse-server`s as 2 shards × 2 replicas, each started by the same code as the single
//! test server (`LocalClickHouse`), with its cluster settings in `config.d/cluster.xml`.
//! Everything is killed and deleted when the [`TestCluster`] is dropped.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use glimpse_core::config::ClusterName;
use glimpse_core::db::local::LocalClickHouse;
use glimpse_core::Config;

/// The cluster's name in every server's `remote_servers`.
pub const CLUSTER: &str = "glimpse_test";
pub const SHARDS: u32 = 2;
pub const REPLICAS: u32 = 2;
const ZOOKEEPER_SCRIPT: &str = "/usr/share/zookeeper/bin/zkServer.sh";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// One server of the cluster.
pub struct ClusterNode {
    /// 1-based, as in the `{shard}` macro (`01`, `02`).
    pub shard: u32,
    /// 1-based, as in the `{replica}` macro (`r1`, `r2`).
    pub replica: u32,
    pub server: LocalClickHouse,
}

/// A server [`TestCluster::kill`] killed.
pub struct KilledNode {
    shard: u32,
    replica: u32,
    stopped: glimpse_core::db::local::StoppedClickHouse,
}

impl ClusterNode {
    pub fn client(&self) -> clickhouse::Client {
        self.server.client()
    }

    /// `shard 1 replica 2`, for assertion messages.
    pub fn name(&self) -> String {
        format!("shard {} replica {}", self.shard, self.replica)
    }

    pub async fn count(&self, sql: &str) -> u64 {
        self.client()
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{} on {}: {e}", sql, self.name()))
    }
}

/// ZooKeeper and four ClickHouse servers (2 shards × 2 replicas) on loopback.
pub struct TestCluster {
    // Dropped in this order: the servers first (they would otherwise retry ZooKeeper), then
    // ZooKeeper, then the directory.
    pub nodes: Vec<ClusterNode>,
    zookeeper: ZooKeeper,
    dir: tempfile::TempDir,
}

/// The ports of one server, chosen before any starts: every server's config names the others'.
struct NodePorts {
    http: u16,
    tcp: u16,
    interserver: u16,
}

impl TestCluster {
    /// Starts ZooKeeper, then the four servers at once, and waits until every server answers
    /// and sees ZooKeeper.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let zookeeper = ZooKeeper::start(&dir.path().join("zookeeper"));
        // One password for every server: Glimpse has one set of credentials for the cluster,
        // and the servers use it to query each other.
        let password = format!("cluster-{:016x}", std::process::id() as u64 * 0x9E37_79B9);
        let layout: Vec<(u32, u32, NodePorts)> = (1..=SHARDS)
            .flat_map(|shard| (1..=REPLICAS).map(move |replica| (shard, replica)))
            .map(|(shard, replica)| {
                let ports = NodePorts {
                    http: free_port(),
                    tcp: free_port(),
                    interserver: free_port(),
                };
                (shard, replica, ports)
            })
            .collect();
        let remote_servers = remote_servers(&layout, &password);
        let mut starts = Vec::new();
        for (shard, replica, ports) in &layout {
            let node_dir = dir.path().join(format!("clickhouse-{shard}-{replica}"));
            let config_d = node_dir.join("config.d");
            std::fs::create_dir_all(&config_d).expect("config.d");
            let xml = node_config(*shard, *replica, ports, zookeeper.port, &remote_servers);
            std::fs::write(config_d.join("cluster.xml"), xml).expect("writing cluster.xml");
            let (shard, replica, password) = (*shard, *replica, password.clone());
            let http_and_tcp = (ports.http, ports.tcp);
            starts.push(tokio::spawn(async move {
                let server = LocalClickHouse::start_node(
                    &node_dir,
                    "clickhouse-server",
                    http_and_tcp,
                    &password,
                )
                .await
                .unwrap_or_else(|e| panic!("starting clickhouse-server {shard}/{replica}: {e}"));
                ClusterNode {
                    shard,
                    replica,
                    server,
                }
            }));
        }
        let mut nodes = Vec::new();
        for start in starts {
            nodes.push(start.await.expect("a server's start panicked"));
        }
        let cluster = Self {
            nodes,
            zookeeper,
            dir,
        };
        cluster.wait_until_coordinated().await;
        cluster
    }

    /// Every server sees ZooKeeper and the cluster's four servers.
    async fn wait_until_coordinated(&self) {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        for node in &self.nodes {
            loop {
                let zk = node
                    .client()
                    .query("SELECT count() FROM system.zookeeper WHERE path = '/'")
                    .fetch_one::<u64>()
                    .await;
                let hosts = node
                    .client()
                    .query("SELECT count() FROM system.clusters WHERE cluster = ?")
                    .bind(CLUSTER)
                    .fetch_one::<u64>()
                    .await;
                if zk.is_ok() && hosts.as_ref().ok() == Some(&u64::from(SHARDS * REPLICAS)) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} does not see ZooKeeper or the cluster: {zk:?} {hosts:?}",
                    node.name()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    pub fn cluster_name(&self) -> ClusterName {
        ClusterName::parse(CLUSTER).unwrap()
    }

    /// A Glimpse configuration pointed at the first server, in cluster mode.
    pub fn config(&self) -> Config {
        let first = &self.nodes[0].server;
        Config {
            clickhouse_cluster: Some(self.cluster_name()),
            ..super::test_config(first, self.dir.path().join("glimpse"))
        }
    }

    /// Kills the server of `shard` and `replica` (SIGKILL: its in-flight work is broken off,
    /// as when a machine dies) and takes it out of [`Self::nodes`], keeping its directory and
    /// ports for [`Self::start_again`].
    pub async fn kill(&mut self, shard: u32, replica: u32) -> KilledNode {
        let index = self
            .nodes
            .iter()
            .position(|n| n.shard == shard && n.replica == replica)
            .expect("no such server");
        let node = self.nodes.remove(index);
        let pid = node.server.pid().expect("running") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("killing the server");
        // The process is gone: this only reaps it.
        KilledNode {
            shard,
            replica,
            stopped: node.server.stop_for_restart().await,
        }
    }

    /// Starts a killed server again, on its directory and ports, back in [`Self::nodes`].
    pub async fn start_again(&mut self, killed: KilledNode) {
        let server = killed
            .stopped
            .start_again()
            .await
            .expect("starting the server again");
        self.nodes.push(ClusterNode {
            shard: killed.shard,
            replica: killed.replica,
            server,
        });
    }

    /// The server of `shard` and `replica` (1-based).
    pub fn node(&self, shard: u32, replica: u32) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.shard == shard && n.replica == replica)
            .expect("no such server")
    }

    /// Kills ZooKeeper (SIGKILL): the servers lose their sessions and their replicated tables
    /// turn read-only. Its data stays for [`Self::start_zookeeper`].
    pub fn stop_zookeeper(&mut self) {
        self.zookeeper.kill();
    }

    /// Starts ZooKeeper again on its data and port, and waits until it answers (the servers
    /// reconnect on their own schedule).
    pub fn start_zookeeper(&mut self) {
        self.zookeeper.spawn();
    }

    /// Where ZooKeeper listens, for tests that look into it.
    pub fn zookeeper_port(&self) -> u16 {
        self.zookeeper.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of every server's log, for a failure's message.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let log =
                std::fs::read_to_string(node.server.dir().join("server.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {} ---\n", node.name()));
            out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
            out.push('\n');
        }
        out
    }
}

/// `remote_servers` with the one cluster: shards of replicas, each replica with the shared
/// credentials. `internal_replication`: a `Distributed` insert writes one replica of each
/// shard and the replicated table copies it to the other (writing both would store it twice).
fn remote_servers(layout: &[(u32, u32, NodePorts)], password: &str) -> String {
    let mut xml = format!("<remote_servers><{CLUSTER}>");
    for shard in 1..=SHARDS {
        xml.push_str("<shard><internal_replication>true</internal_replication>");
        for (_, _, ports) in layout.iter().filter(|(s, _, _)| *s == shard) {
            xml.push_str(&format!(
                "<replica><host>127.0.0.1</host><port>{}</port><user>default</user>\
                 <password>{password}</password></replica>",
                ports.tcp
            ));
        }
        xml.push_str("</shard>");
    }
    xml.push_str(&format!("</{CLUSTER}></remote_servers>"));
    xml
}

/// What one server adds to the configuration `LocalClickHouse` generates.
fn node_config(
    shard: u32,
    replica: u32,
    ports: &NodePorts,
    zookeeper_port: u16,
    remote_servers: &str,
) -> String {
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>{interserver}</interserver_http_port>
    <macros><shard>0{shard}</shard><replica>r{replica}</replica></macros>
    <zookeeper>
        <node><host>127.0.0.1</host><port>{zookeeper_port}</port></node>
        <session_timeout_ms>30000</session_timeout_ms>
    </zookeeper>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
    {remote_servers}
</yandex>
"#,
        interserver = ports.interserver,
    )
}

/// `clickhouse_url` listing `nodes` in order, with the cluster's credentials in each URL.
pub fn url_list(nodes: &[&ClusterNode]) -> String {
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.server.url_with_credentials())
        .collect();
    urls.join(",")
}

fn free_port() -> u16 {
    super::free_addr().port()
}

/// Debian's ZooKeeper in the foreground: its own `zoo.cfg`, data directory and port. Killed on
/// drop.
struct ZooKeeper {
    /// `None` while stopped ([`TestCluster::stop_zookeeper`]).
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl ZooKeeper {
    fn start(dir: &Path) -> Self {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("ZooKeeper's data directory");
        let port = free_port();
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n\
                 forceSync=no\n4lw.commands.whitelist=ruok,srvr\n",
                data.display()
            ),
        )
        .expect("writing zoo.cfg");
        let mut zookeeper = Self {
            child: None,
            port,
            dir: dir.to_path_buf(),
        };
        zookeeper.spawn();
        zookeeper
    }

    /// Runs ZooKeeper on its `zoo.cfg` (its data and port as before) until it answers.
    fn spawn(&mut self) {
        let dir = &self.dir;
        let log_path = dir.join("zookeeper.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("ZooKeeper's log");
        // The script `exec`s java, so the child is ZooKeeper itself. A small heap: the machine
        // is shared, and a test cluster's state is tiny.
        let child = Command::new(ZOOKEEPER_SCRIPT)
            .arg("start-foreground")
            .arg(dir.join("zoo.cfg"))
            .env("ZOOCFGDIR", dir)
            .env("JMXDISABLE", "true")
            .env(
                "JVMFLAGS",
                format!(
                    "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.log.dir={}",
                    dir.display()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {ZOOKEEPER_SCRIPT} (apt-get install zookeeper): {e}")
            });
        self.child = Some(child);
        self.wait_until_ok(&log_path);
    }

    /// Until ZooKeeper answers `ruok` with `imok`.
    fn wait_until_ok(&mut self, log: &PathBuf) {
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        let child = self.child.as_mut().expect("started");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "ZooKeeper exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if four_letters(self.port, "ruok") == "imok"
                && four_letters(self.port, "srvr").contains("Mode: standalone")
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ZooKeeper did not answer within {STARTUP_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, as when its machine dies.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// ZooKeeper's answer to a four-letter command (`ruok`, `srvr`); empty if none.
fn four_letters(port: u16, command: &str) -> String {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    if stream.write_all(command.as_bytes()).is_ok() {
        let _ = stream.read_to_string(&mut answer);
    }
    answer
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.kill();
    }
}
