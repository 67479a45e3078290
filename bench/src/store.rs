//! Where a benchmark keeps its events: one ClickHouse 18.16 server, or the loopback cluster
//! of `glimpse-localcluster` (ZooKeeper and 2 shards × 2 replicas), started by the benchmark
//! and reached the way Glimpse reaches it (`db::connect`: on the cluster, the `Distributed`
//! tables with synchronous inserts and `load_balancing = in_order`).

use std::path::Path;

use anyhow::Context;
use glimpse_core::config::{ClusterName, Config};
use glimpse_core::db::local::LocalClickHouse;
use glimpse_localcluster::{ClusterNode, LocalCluster};

pub enum Store {
    Single(Box<LocalClickHouse>),
    Cluster(LocalCluster),
}

impl Store {
    /// Starts one server in `dir`, or the cluster (in a directory of its own).
    pub async fn start(cluster: bool, dir: &Path) -> anyhow::Result<Self> {
        Ok(if cluster {
            Self::Cluster(
                LocalCluster::start()
                    .await
                    .context("starting ZooKeeper and the four-server cluster")?,
            )
        } else {
            Self::Single(Box::new(
                LocalClickHouse::start(dir, "clickhouse-server")
                    .await
                    .context("starting clickhouse-server")?,
            ))
        })
    }

    /// For tables and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Single(_) => "1 server",
            Self::Cluster(_) => "cluster 2×2",
        }
    }

    /// The server every connection goes to first.
    fn first(&self) -> &LocalClickHouse {
        match self {
            Self::Single(server) => server,
            Self::Cluster(cluster) => &cluster.nodes[0].server,
        }
    }

    pub fn cluster(&self) -> Option<ClusterName> {
        match self {
            Self::Single(_) => None,
            Self::Cluster(cluster) => Some(cluster.cluster_name()),
        }
    }

    /// A Glimpse configuration reaching the store (the first server; in cluster mode).
    pub fn config(&self) -> Config {
        let first = self.first();
        Config {
            clickhouse_url: Some(first.url().to_string()),
            clickhouse_user: first.user().to_string(),
            clickhouse_password: first.password().into(),
            clickhouse_cluster: self.cluster(),
            ..Config::default()
        }
    }

    /// A client as Glimpse makes it (with the cluster's settings on a cluster).
    pub fn client(&self) -> clickhouse::Client {
        match self {
            Self::Single(server) => server.client(),
            Self::Cluster(_) => glimpse_core::db::connect(&self.config(), self.first().url()),
        }
    }

    /// `GLIMPSE_CLICKHOUSE_URL` for a collector: the server, or on the cluster the first
    /// replica of each shard starting with shard `first_shard` (1-based), so that collectors
    /// given different shards spread the `Distributed` inserts' fan-out (README, "Scaling
    /// out"). Holds the password: never print it.
    pub fn collector_url(&self, first_shard: u32) -> String {
        match self {
            Self::Single(server) => server.url_with_credentials(),
            Self::Cluster(cluster) => {
                let shards = glimpse_localcluster::SHARDS;
                let urls: Vec<String> = (0..shards)
                    .map(|i| (first_shard - 1 + i) % shards + 1)
                    .map(|shard| cluster.node(shard, 1).server.url_with_credentials())
                    .collect();
                urls.join(",")
            }
        }
    }

    /// The ClickHouse processes (four on the cluster; ZooKeeper not included).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Self::Single(server) => server.pid().into_iter().collect(),
            Self::Cluster(cluster) => cluster
                .nodes
                .iter()
                .filter_map(|n| n.server.pid())
                .collect(),
        }
    }

    /// The servers holding one copy of the rows: the server, or the first replica of each
    /// shard (where `load_balancing = in_order` writes and reads).
    fn one_copy(&self) -> Vec<clickhouse::Client> {
        match self {
            Self::Single(server) => vec![server.client()],
            Self::Cluster(cluster) => cluster
                .nodes
                .iter()
                .filter(|n| n.replica == 1)
                .map(ClusterNode::client)
                .collect(),
        }
    }

    /// The servers to send a change of a sharded table's rows to: the server, or on the
    /// cluster each shard's leader replica of `local`. A replicated `TRUNCATE` or `OPTIMIZE`
    /// reaches the other replica by the replication log, and 18.16 forwards one sent to a
    /// follower to the leader without a password.
    async fn leaders(&self, local: &str) -> anyhow::Result<Vec<clickhouse::Client>> {
        let cluster = match self {
            Self::Single(server) => return Ok(vec![server.client()]),
            Self::Cluster(cluster) => cluster,
        };
        let mut leaders = Vec::new();
        for node in &cluster.nodes {
            let leader: u8 = node
                .client()
                .query(
                    "SELECT toUInt8(count()) FROM system.replicas \
                     WHERE database = 'glimpse' AND table = ? AND is_leader",
                )
                .bind(local)
                .fetch_one()
                .await
                .with_context(|| format!("is {} the leader of {local}", node.name()))?;
            if leader == 1 {
                leaders.push(node.client());
            }
        }
        anyhow::ensure!(
            leaders.len() == glimpse_localcluster::SHARDS as usize,
            "{} leaders of {local} for {} shards",
            leaders.len(),
            glimpse_localcluster::SHARDS
        );
        Ok(leaders)
    }

    /// Empties a table of `glimpse` (on the cluster, its `_local` table on every server).
    pub async fn truncate(&self, table: &str) -> anyhow::Result<()> {
        let local = glimpse_core::schema::cluster::local_table(table, self.cluster().as_ref());
        for client in self.leaders(&local).await? {
            client
                .query(&format!("TRUNCATE TABLE glimpse.{local}"))
                .execute()
                .await
                .with_context(|| format!("TRUNCATE TABLE glimpse.{local}"))?;
        }
        Ok(())
    }

    /// Merges the events' parts (best effort, as before a size's measurements: ClickHouse
    /// merges in the background anyway).
    pub async fn optimize_events(&self) {
        let local = glimpse_core::schema::cluster::local_table("events", self.cluster().as_ref());
        for client in self.leaders(&local).await.unwrap_or_default() {
            let _ = client
                .query(&format!("OPTIMIZE TABLE glimpse.{local}"))
                .execute()
                .await;
        }
    }

    /// Bytes on disk of one copy of a table's rows (on the cluster, summed over the shards'
    /// first replicas: the second replicas hold as much again).
    pub async fn table_bytes(&self, table: &str) -> anyhow::Result<u64> {
        let local = glimpse_core::schema::cluster::local_table(table, self.cluster().as_ref());
        let mut sum = 0;
        for client in self.one_copy() {
            sum += crate::scale::table_bytes(&client, &local).await?;
        }
        Ok(sum)
    }

    pub async fn stop(self) {
        match self {
            Self::Single(server) => server.stop().await,
            // Killed and deleted on drop.
            Self::Cluster(cluster) => drop(cluster),
        }
    }
}
