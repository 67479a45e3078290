//! The scale-out tests' cluster: `glimpse-localcluster` (ZooKeeper and four ClickHouse 18.16
//! servers, 2 shards × 2 replicas, on loopback; shared with the cluster benchmarks), with the
//! tests' Glimpse configuration, and failing the test at once when the cluster misbehaves.

use std::ops::{Deref, DerefMut};

use glimpse_core::Config;
#[allow(unused_imports)] // each test binary uses its own subset
pub use glimpse_localcluster::{ClusterNode, KilledNode, LocalCluster, CLUSTER, REPLICAS, SHARDS};

/// A [`LocalCluster`] for one test; everything is killed and deleted when it is dropped.
pub struct TestCluster(LocalCluster);

impl TestCluster {
    pub async fn start() -> Self {
        Self(
            LocalCluster::start()
                .await
                .unwrap_or_else(|e| panic!("starting the test cluster: {e}")),
        )
    }

    /// A Glimpse configuration pointed at the first server, in cluster mode.
    pub fn config(&self) -> Config {
        let first = &self.nodes[0].server;
        Config {
            clickhouse_cluster: Some(self.cluster_name()),
            ..super::test_config(first, self.dir().join("glimpse"))
        }
    }

    /// [`LocalCluster::kill`], failing the test if the server cannot be killed.
    pub async fn kill(&mut self, shard: u32, replica: u32) -> KilledNode {
        self.0
            .kill(shard, replica)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`LocalCluster::start_zookeeper`], failing the test if ZooKeeper does not answer.
    pub async fn start_zookeeper(&mut self) {
        self.0
            .start_zookeeper()
            .await
            .unwrap_or_else(|e| panic!("starting ZooKeeper again: {e}"))
    }

    /// [`LocalCluster::start_again`], failing the test if the server does not start.
    pub async fn start_again(&mut self, killed: KilledNode) {
        self.0
            .start_again(killed)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Deref for TestCluster {
    type Target = LocalCluster;

    fn deref(&self) -> &LocalCluster {
        &self.0
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.0
    }
}

/// A count on one server, failing the test if the query fails.
pub trait NodeCount {
    async fn count(&self, sql: &str) -> u64;
}

impl NodeCount for ClusterNode {
    async fn count(&self, sql: &str) -> u64 {
        self.client()
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{} on {}: {e}", sql, self.name()))
    }
}

/// `clickhouse_url` listing `nodes` in order, with the cluster's credentials in each URL.
#[allow(dead_code)] // each test binary uses its own subset
pub fn url_list(nodes: &[&ClusterNode]) -> String {
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.server.url_with_credentials())
        .collect();
    urls.join(",")
}

/// Each page and how often it is stored in `node`'s own shard table of `example.com`
/// (empty while the server refuses: a restarted one may, for a moment).
#[allow(dead_code)] // each test binary uses its own subset
pub async fn local_pages(node: &ClusterNode) -> std::collections::BTreeMap<String, u64> {
    node.client()
        .query(
            "SELECT pathname, count() FROM glimpse.events_local WHERE site = 'example.com' \
             GROUP BY pathname",
        )
        .fetch_all::<(String, u64)>()
        .await
        .map(|rows| rows.into_iter().collect())
        .unwrap_or_default()
}
