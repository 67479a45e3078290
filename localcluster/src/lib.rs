//! A real ClickHouse cluster on loopback, for the scale-out tests (`tests/common/cluster.rs`)
//! and the cluster benchmarks (`glimpse-bench cluster-ingest`, `query --cluster`): Debian's
//! ZooKeeper and four `clickhouse-server`s as 2 shards × 2 replicas, each started by the same
//! code as a single server (`LocalClickHouse`), with its cluster settings in
//! `config.d/cluster.xml`. Everything is killed and deleted when the [`LocalCluster`] is
//! dropped. Glimpse itself never starts a cluster.

mod zookeeper;

use std::path::Path;
use std::time::Duration;

use glimpse_core::config::ClusterName;
use glimpse_core::db::local::{LocalClickHouse, LocalClickHouseError, StoppedClickHouse};

use zookeeper::ZooKeeper;

/// The cluster's name in every server's `remote_servers`.
pub const CLUSTER: &str = "glimpse_test";
pub const SHARDS: u32 = 2;
pub const REPLICAS: u32 = 2;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {script} (apt-get install zookeeper): {source}")]
    ZooKeeperMissing {
        script: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("ZooKeeper exited ({status}): {log}")]
    ZooKeeperExited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("ZooKeeper did not answer within {0:?}")]
    ZooKeeperTimeout(Duration),
    #[error("starting clickhouse-server of shard {shard} replica {replica}: {source}")]
    Server {
        shard: u32,
        replica: u32,
        #[source]
        source: LocalClickHouseError,
    },
    #[error("a server's start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{node} does not see ZooKeeper or the cluster within {timeout:?}: {detail}")]
    NotCoordinated {
        node: String,
        timeout: Duration,
        detail: String,
    },
    #[error("the cluster has no running server of shard {0} replica {1}")]
    NoSuchServer(u32, u32),
    #[error("killing the server of shard {shard} replica {replica}: {source}")]
    Kill {
        shard: u32,
        replica: u32,
        #[source]
        source: nix::Error,
    },
}

/// One server of the cluster.
pub struct ClusterNode {
    /// 1-based, as in the `{shard}` macro (`01`, `02`).
    pub shard: u32,
    /// 1-based, as in the `{replica}` macro (`r1`, `r2`).
    pub replica: u32,
    pub server: LocalClickHouse,
}

impl ClusterNode {
    pub fn client(&self) -> clickhouse::Client {
        self.server.client()
    }

    /// `shard 1 replica 2`, for messages.
    pub fn name(&self) -> String {
        format!("shard {} replica {}", self.shard, self.replica)
    }
}

/// A server [`LocalCluster::kill`] killed: its directory and ports, to start it again.
pub struct KilledNode {
    shard: u32,
    replica: u32,
    stopped: StoppedClickHouse,
}

/// ZooKeeper and four ClickHouse servers (2 shards × 2 replicas) on loopback.
pub struct LocalCluster {
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

impl LocalCluster {
    /// Starts ZooKeeper, then the four servers at once, and waits until every server answers
    /// and sees ZooKeeper and the cluster.
    pub async fn start() -> Result<Self, ClusterError> {
        let dir = tempfile::tempdir().map_err(|source| ClusterError::Io {
            what: "creating the cluster's directory",
            source,
        })?;
        // ZooKeeper first: a 18.16 server whose DDL worker could not reach it at start-up
        // crashes on the next `ON CLUSTER` statement.
        let zookeeper = ZooKeeper::start(&dir.path().join("zookeeper")).await?;
        // One password for every server: Glimpse has one set of credentials for the cluster,
        // and the servers use it to query each other.
        let password = format!("cluster-{:016x}", std::process::id() as u64 * 0x9E37_79B9);
        let mut layout: Vec<(u32, u32, NodePorts)> = Vec::new();
        for shard in 1..=SHARDS {
            for replica in 1..=REPLICAS {
                let ports = NodePorts {
                    http: free_port()?,
                    tcp: free_port()?,
                    interserver: free_port()?,
                };
                layout.push((shard, replica, ports));
            }
        }
        let remote_servers = remote_servers(&layout, &password);
        let mut starts = Vec::new();
        for (shard, replica, ports) in &layout {
            let node_dir = dir.path().join(format!("clickhouse-{shard}-{replica}"));
            let config_d = node_dir.join("config.d");
            let xml = node_config(*shard, *replica, ports, zookeeper.port, &remote_servers);
            std::fs::create_dir_all(&config_d)
                .and_then(|()| std::fs::write(config_d.join("cluster.xml"), xml))
                .map_err(|source| ClusterError::Io {
                    what: "writing a server's config.d/cluster.xml",
                    source,
                })?;
            let (shard, replica, password) = (*shard, *replica, password.clone());
            let http_and_tcp = (ports.http, ports.tcp);
            starts.push(tokio::spawn(async move {
                LocalClickHouse::start_node(&node_dir, "clickhouse-server", http_and_tcp, &password)
                    .await
                    .map(|server| ClusterNode {
                        shard,
                        replica,
                        server,
                    })
                    .map_err(|source| ClusterError::Server {
                        shard,
                        replica,
                        source,
                    })
            }));
        }
        // Every start is awaited before any error is returned, so that no server is left
        // starting in the background (a started one is killed when dropped).
        let mut nodes = Vec::new();
        let mut failed = None;
        for start in starts {
            match start.await.map_err(ClusterError::from).and_then(|r| r) {
                Ok(node) => nodes.push(node),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let cluster = Self {
            nodes,
            zookeeper,
            dir,
        };
        cluster.wait_until_coordinated().await?;
        Ok(cluster)
    }

    /// Every server sees ZooKeeper and the cluster's four servers.
    async fn wait_until_coordinated(&self) -> Result<(), ClusterError> {
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
                if tokio::time::Instant::now() >= deadline {
                    return Err(ClusterError::NotCoordinated {
                        node: node.name(),
                        timeout: STARTUP_TIMEOUT,
                        detail: format!("{zk:?} {hosts:?}"),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    pub fn cluster_name(&self) -> ClusterName {
        ClusterName::parse(CLUSTER).expect("CLUSTER is a valid cluster name")
    }

    /// Kills the server of `shard` and `replica` (SIGKILL: its in-flight work is broken off,
    /// as when a machine dies) and takes it out of [`Self::nodes`], keeping its directory and
    /// ports for [`Self::start_again`].
    pub async fn kill(&mut self, shard: u32, replica: u32) -> Result<KilledNode, ClusterError> {
        let index = self
            .nodes
            .iter()
            .position(|n| n.shard == shard && n.replica == replica)
            .ok_or(ClusterError::NoSuchServer(shard, replica))?;
        let pid = self.nodes[index]
            .server
            .pid()
            .ok_or(ClusterError::NoSuchServer(shard, replica))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|source| ClusterError::Kill {
            shard,
            replica,
            source,
        })?;
        let node = self.nodes.remove(index);
        // The process is gone: this only reaps it.
        Ok(KilledNode {
            shard,
            replica,
            stopped: node.server.stop_for_restart().await,
        })
    }

    /// Starts a killed server again, on its directory and ports, back in [`Self::nodes`].
    pub async fn start_again(&mut self, killed: KilledNode) -> Result<(), ClusterError> {
        let server = killed
            .stopped
            .start_again()
            .await
            .map_err(|source| ClusterError::Server {
                shard: killed.shard,
                replica: killed.replica,
                source,
            })?;
        self.nodes.push(ClusterNode {
            shard: killed.shard,
            replica: killed.replica,
            server,
        });
        Ok(())
    }

    /// The server of `shard` and `replica` (1-based).
    ///
    /// # Panics
    /// If the cluster has no such running server (the layout is fixed: a caller's mistake).
    pub fn node(&self, shard: u32, replica: u32) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.shard == shard && n.replica == replica)
            .unwrap_or_else(|| panic!("no running server of shard {shard} replica {replica}"))
    }

    /// Where ZooKeeper listens, for tests that look into it.
    /// Kills ZooKeeper (SIGKILL): the servers lose their sessions and their replicated tables
    /// turn read-only. Its data stays for [`Self::start_zookeeper`].
    pub fn stop_zookeeper(&mut self) {
        self.zookeeper.kill();
    }

    /// Starts ZooKeeper again on its data and port, and waits until it answers (the servers
    /// reconnect on their own schedule).
    pub async fn start_zookeeper(&mut self) -> Result<(), ClusterError> {
        self.zookeeper.spawn().await
    }

    pub fn zookeeper_port(&self) -> u16 {
        self.zookeeper.port
    }

    /// The cluster's directory (ZooKeeper's and every server's data, and room for more).
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

/// A free loopback port (released at once: another process may take it before the server
/// does, rarely enough on loopback).
fn free_port() -> Result<u16, ClusterError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ClusterError::Io {
            what: "finding a free loopback port",
            source,
        })
}
