//! ClickHouse: the connection every part of Glimpse uses, TLS to it, and the local server
//! Glimpse starts when none is configured.

pub mod failover;
pub mod local;
pub mod server_error;
pub mod tls;

use crate::config::{Config, ServerList};

/// A client for the configured ClickHouse, not bound to a database (migrations create it);
/// `https://` URLs are verified against `clickhouse_ca_cert` or the system's roots.
///
/// Validation is off: it needs `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 lacks. The
/// row type is checked against the DDL by tests on 18.16 and on current ClickHouse instead.
///
/// On a cluster (`clickhouse_cluster`) every request carries two settings:
/// - `insert_distributed_sync = 1`: an insert into a `Distributed` table returns only once
///   every shard's part of it is stored on one replica of that shard, so a `202` (and the
///   spool's deletion of a shipped segment) never rests on a server's local queue of pending
///   distributed sends. A re-sent batch is split into the same blocks per shard, which the
///   replicated tables deduplicate.
/// - `distributed_product_mode = local`: a subquery on a sharded table inside a query on a
///   sharded table (`session_id IN (SELECT session_id FROM events …)`) reads each shard's own
///   rows. Exact, because rows are sharded by visitor (`schema::cluster`) and a visit keeps its
///   first visitor id, so a visit never spans shards; ClickHouse refuses such queries by default.
/// - `load_balancing = in_order`: every query and insert through a `Distributed` table uses the
///   first healthy replica of each shard (in `remote_servers` order), so a read sees the rows
///   just written (replication to the other replica is asynchronous): the spool's check of a
///   re-sent batch, an erasure's count, a deleted site's rows. The other replicas are hot
///   standbys, used when the first is down.
/// - `prefer_localhost_replica = 0`: without it a server that is itself a replica of a shard
///   reads and writes that shard on its own table, whatever the order, so a collector entering
///   through a second replica and a query service entering through the first saw different
///   rows until replication caught up (a read 560 of 600 right after a write; during a
///   ZooKeeper outage, when replicas cannot fetch, for the whole outage).
///
/// `insert_quorum` is deliberately not set: replicated deduplication (block hashes in
/// ZooKeeper, shared by a shard's replicas) already makes a batch re-sent through another
/// server land once, and with two replicas a quorum of 2 would refuse every insert into a shard
/// while one replica is down — the outage `failover` exists for (README, "Scaling out").
///
/// `url` may list several servers of one cluster, comma-separated (`clickhouse_url`): the
/// client then talks to the first that is up and fails over to the next ([`failover`]).
pub fn connect(config: &Config, url: &str) -> clickhouse::Client {
    let (client, url) = match ServerList::parse(url) {
        Ok(list) if list.len() > 1 => (
            failover::client(config, &list),
            list.first().as_str().to_string(),
        ),
        _ => (
            tls::client(config.clickhouse_ca_cert.as_ref()),
            url.to_string(),
        ),
    };
    let client = client
        .with_url(url)
        .with_user(&config.clickhouse_user)
        .with_password(config.clickhouse_password.expose())
        .with_validation(false);
    match &config.clickhouse_cluster {
        Some(_) => client
            .with_setting("insert_distributed_sync", "1")
            .with_setting("distributed_product_mode", "local")
            .with_setting("load_balancing", "in_order")
            .with_setting("prefer_localhost_replica", "0"),
        None => client,
    }
}
