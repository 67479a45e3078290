//! Glimpse on a real ClickHouse cluster (`clickhouse_cluster`): ZooKeeper and four ClickHouse
//! 18.16 servers as 2 shards × 2 replicas on loopback (`common::cluster`). The product's own
//! migrations create `glimpse.events` as a `Distributed` table over replicated `events_local`
//! tables on every server; beacons through an in-process collector land on both shards, once,
//! a visitor's events on one shard, and both replicas of a shard agree; a re-sent batch is
//! stored once; a query service connected to another server counts every page view; erasure,
//! retention and a site's deletion remove rows on every server; the rollup adds up.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::cluster::{ClusterNode, NodeCount, TestCluster, REPLICAS, SHARDS};
use common::{browser_client, wait_for_200};
use glimpse_collector::sink::{ClickHouseSink, Sink as _};
use glimpse_core::schema::{self, EventRow};
use glimpse_core::Config;
use serde_json::Value;
use tokio::net::TcpListener;

/// Page views sent, each from its own address (its own visitor) and of its own page.
const BEACONS: usize = 400;
const WAIT: Duration = Duration::from_secs(60);

fn beacon(i: usize) -> String {
    format!(r#"{{"n":"pageview","u":"https://example.com/page/{i}","d":"example.com"}}"#)
}

/// A distinct public-looking address per visitor (documentation ranges are not special-cased).
fn visitor_ip(i: usize) -> String {
    format!("198.51.{}.{}", i / 250, i % 250 + 1)
}

/// The cluster's configuration, with the proxy header believed so that every beacon has its
/// own client address. One collector at a time, so its own `salt_dir` is the only one
/// (`salt_dir_shared`; `tests/cluster_salts.rs` covers `salt_key`).
fn config(cluster: &TestCluster) -> Config {
    let base = cluster.config();
    Config {
        trusted_proxies: glimpse_core::proxies::ProxyNets::parse(&["127.0.0.1".into()]).unwrap(),
        collector: glimpse_core::config::CollectorConfig {
            salt_dir_shared: true,
            ..base.collector.clone()
        },
        ..base
    }
}

/// The same configuration, connected to another server of the cluster.
fn config_on(cluster: &TestCluster, node: &ClusterNode) -> Config {
    Config {
        clickhouse_url: Some(node.server.url().to_string()),
        ..config(cluster)
    }
}

async fn engine(node: &ClusterNode, table: &str) -> String {
    node.client()
        .query("SELECT engine FROM system.tables WHERE database = 'glimpse' AND name = ?")
        .bind(table)
        .fetch_optional::<String>()
        .await
        .unwrap()
        .unwrap_or_else(|| format!("(no table {table} on {})", node.name()))
}

/// Polls `sql` on `node` until it returns `want`, failing with the last value after [`WAIT`].
async fn wait_for_count(node: &ClusterNode, sql: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = node.client().query(sql).fetch_one::<u64>().await;
        if got.as_ref().ok() == Some(&want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql} on {}: {got:?}, want {want}",
            node.name()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shards_by_visitor_replicates_counts_every_beacon_once_and_erases_everywhere() {
    let cluster = TestCluster::start().await;
    let config = config(&cluster);
    let url = config.clickhouse_url.clone().unwrap();

    // Migrations through the product's code, twice: the second run finds them all applied and
    // runs no DDL (so a server that is down would not hold up a restart).
    let client = glimpse_core::db::connect(&config, &url);
    let mut flavor = None;
    for _ in 0..2 {
        let migrated = schema::migrate_on(&client, "glimpse", config.clickhouse_cluster.as_ref())
            .await
            .unwrap_or_else(|e| {
                panic!("migrations on the cluster: {e:?}\n{}", cluster.log_tails())
            });
        flavor = Some(migrated);
    }
    let flavor = flavor.unwrap();
    check_table_layout(&cluster).await;

    ingest_beacons(&cluster, &config).await;
    check_rows_are_sharded_by_visitor_and_replicated(&cluster).await;
    check_a_resent_batch_is_stored_once(&cluster, &config, flavor).await;
    let api = check_the_stats_api_counts_every_page_view(&cluster, &config).await;
    check_an_erasure_reaches_every_server(&cluster, &config).await;
    check_retention_reaches_every_server(&cluster, &config).await;
    check_a_deleted_sites_rows_go_from_every_server(&cluster, &config).await;
    check_the_rollup_adds_up(&cluster, &config, &api).await;
}

/// On every server: the tables under today's names are `Distributed` over replicated local
/// tables, the small tables are replicated, and the bookkeeping says every migration ran.
async fn check_table_layout(cluster: &TestCluster) {
    let latest = schema::latest_version();
    for node in &cluster.nodes {
        for (table, _) in schema::cluster::SHARDED {
            assert_eq!(engine(node, table).await, "Distributed", "{table}");
            let local = schema::cluster::local_table(table, Some(&cluster.cluster_name()));
            assert!(
                engine(node, &local).await.starts_with("Replicated"),
                "{local} on {}: {}",
                node.name(),
                engine(node, &local).await
            );
        }
        assert_eq!(
            engine(node, "events_local").await,
            "ReplicatedMergeTree",
            "{}",
            node.name()
        );
        for table in ["site_registry", "users", "api_keys", "audit_log"] {
            let engine = engine(node, table).await;
            assert!(engine.starts_with("Replicated"), "{table}: {engine}");
        }
        wait_for_count(
            node,
            &format!("SELECT toUInt64(countIf(version = {latest})) FROM glimpse.schema_migrations"),
            1,
        )
        .await;
    }
    // The Distributed table covers the whole cluster.
    let hosts = cluster.nodes[0]
        .count("SELECT count() FROM system.clusters WHERE cluster = 'glimpse_test'")
        .await;
    assert_eq!(hosts, u64::from(SHARDS * REPLICAS));
}

/// Sends [`BEACONS`] page views through an in-process collector on the cluster; every one is
/// accepted (`202`) and, once the collector has shut down cleanly, stored.
async fn ingest_beacons(cluster: &TestCluster, config: &Config) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(glimpse_collector::serve(config.clone(), listener, async {
        let _ = stopped.await;
    }));
    let http = browser_client();
    wait_for_200(&http, &format!("{base}/ready"), WAIT).await;
    let http = Arc::new(http);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = BTreeMap::<u16, usize>::new();
            for i in (worker..BEACONS).step_by(8) {
                let status = http
                    .post(format!("{base}/api/event"))
                    .header("content-type", "text/plain")
                    .header("x-forwarded-for", visitor_ip(i))
                    .body(beacon(i))
                    .send()
                    .await
                    .expect("beacon")
                    .status()
                    .as_u16();
                *statuses.entry(status).or_default() += 1;
            }
            statuses
        }));
    }
    let mut statuses = BTreeMap::<u16, usize>::new();
    for task in tasks {
        for (status, n) in task.await.unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    assert_eq!(statuses, BTreeMap::from([(202, BEACONS)]));
    let _ = stop.send(());
    let report = server.await.unwrap().expect("collector");
    println!("collector: {report:?}");
    wait_for_count(
        &cluster.nodes[0],
        "SELECT count() FROM glimpse.events",
        BEACONS as u64,
    )
    .await;
}

/// Both shards hold rows, each visitor's rows on one shard only, each page view once, and the
/// two replicas of a shard hold the same rows.
async fn check_rows_are_sharded_by_visitor_and_replicated(cluster: &TestCluster) {
    const ROWS: &str = "SELECT count() FROM glimpse.events_local";
    // Replication is asynchronous: each replica has caught up once its shards' rows add up to
    // every beacon (each replica of a shard only ever gains the shard's rows).
    for replica in 1..=REPLICAS {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut counts = Vec::new();
            for shard in 1..=SHARDS {
                counts.push(cluster.node(shard, replica).count(ROWS).await);
            }
            if counts.iter().sum::<u64>() == BEACONS as u64 {
                println!("replica {replica} of each shard: {counts:?} rows");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica {replica} of each shard: {counts:?} rows, want {BEACONS} in all"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut total = 0;
    let mut visitors_per_shard = Vec::new();
    for shard in 1..=SHARDS {
        let first = cluster.node(shard, 1);
        let rows = first.count(ROWS).await;
        assert!(
            rows > BEACONS as u64 / 5,
            "shard {shard} holds {rows} of {BEACONS}: not sharded"
        );
        total += rows;
        let visitors: Vec<u64> = first
            .client()
            .query("SELECT DISTINCT visitor_id FROM glimpse.events_local")
            .fetch_all()
            .await
            .unwrap();
        visitors_per_shard.push(visitors.into_iter().collect::<HashSet<u64>>());
        // The other replicas hold the same rows.
        let checksum = "SELECT sum(cityHash64(pathname, visitor_id, session_id, timestamp)) \
                        FROM glimpse.events_local";
        for replica in 2..=REPLICAS {
            let other = cluster.node(shard, replica);
            assert_eq!(other.count(ROWS).await, rows, "shard {shard}");
            assert_eq!(
                first.count(checksum).await,
                other.count(checksum).await,
                "replicas of shard {shard} differ"
            );
        }
    }
    assert_eq!(total, BEACONS as u64, "every beacon stored exactly once");
    let overlap = visitors_per_shard[0]
        .intersection(&visitors_per_shard[1])
        .count();
    assert_eq!(overlap, 0, "a visitor's events on both shards");
    assert_eq!(
        visitors_per_shard.iter().map(HashSet::len).sum::<usize>(),
        BEACONS,
        "one visitor per beacon"
    );
    let node = &cluster.nodes[REPLICAS as usize]; // a server of the other shard
    assert_eq!(
        node.count("SELECT uniqExact(pathname) FROM glimpse.events")
            .await,
        BEACONS as u64,
        "every page once, read through another server"
    );
}

/// A batch sent again through the product's sink, under the same batch id, is stored once:
/// after an insert that reached only shard 1 (its part written straight to shard 1, as the
/// failed insert would have), the sink sees a partial batch and sends all of it again, twice
/// (an answer lost), the second time through a server of the other shard, as a collector that
/// failed over would. Each shard's replicated table recognises the block it already has.
async fn check_a_resent_batch_is_stored_once(
    cluster: &TestCluster,
    config: &Config,
    flavor: schema::Flavor,
) {
    const BATCH_ID: u64 = 0x00C1_u64 << 40 | 77;
    let rows: Vec<EventRow> = (0..64u64)
        .map(|i| EventRow {
            site: "resent.example".into(),
            timestamp: glimpse_core::clock::unix_now(),
            name: "pageview".into(),
            pathname: format!("/resent/{i}"),
            visitor_id: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            session_id: i,
            batch_id: BATCH_ID,
            ..EventRow::default()
        })
        .collect();
    let sink_on = |url: &str| {
        ClickHouseSink::new(
            glimpse_core::db::connect(config, url),
            "glimpse",
            Arc::new(OnceLock::from(flavor)),
        )
        .on_cluster(true)
    };
    let sink = sink_on(config.clickhouse_url.as_deref().unwrap());
    let other = sink_on(cluster.node(2, 2).server.url());
    assert!(sink.resend_completes_partial());

    // The rows `Distributed` sends to shard 1: sharding key modulo the shards' total weight, 0.
    let slots: Vec<u64> = cluster.nodes[0]
        .client()
        .query(
            "SELECT toUInt64(cityHash64('resent.example', v) % 2) FROM (SELECT arrayJoin(?) AS v)",
        )
        .bind(rows.iter().map(|r| r.visitor_id).collect::<Vec<u64>>())
        .fetch_all()
        .await
        .unwrap();
    let first_shard: Vec<&EventRow> = rows
        .iter()
        .zip(&slots)
        .filter(|(_, slot)| **slot == 0)
        .map(|(row, _)| row)
        .collect();
    assert!(
        !first_shard.is_empty() && first_shard.len() < rows.len(),
        "{slots:?}"
    );
    let mut insert = cluster
        .node(1, 1)
        .client()
        .with_database("glimpse")
        .insert::<EventRow>("events_local")
        .await
        .unwrap();
    for row in &first_shard {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let partial = sink.stored_rows(BATCH_ID).await.expect("count");
    assert_eq!(partial, first_shard.len() as u64, "the partial insert");

    sink.write_batch(BATCH_ID, &rows)
        .await
        .expect("sending again");
    other.write_batch(BATCH_ID, &rows).await.expect("and again");
    let stored = sink.stored_rows(BATCH_ID).await.expect("count");
    assert_eq!(stored, rows.len() as u64, "a re-sent batch stored once");
    let on_first_shard = cluster
        .node(1, 1)
        .count("SELECT count() FROM glimpse.events_local WHERE site = 'resent.example'")
        .await;
    assert_eq!(
        on_first_shard,
        first_shard.len() as u64,
        "shard 1 kept its part once"
    );
}

/// A query service connected to a server of the other shard (and the other replica) counts
/// every page view and visitor, with a key created through the first server (the key tables
/// are replicated to every server).
async fn check_the_stats_api_counts_every_page_view(
    cluster: &TestCluster,
    config: &Config,
) -> StatsApi {
    let query_node = cluster.node(2, 2);
    let query_config = config_on(cluster, query_node);
    let url = config.clickhouse_url.clone().unwrap();
    let (key, _) = glimpse_query::auth::create_key(
        &glimpse_core::db::connect(config, &url),
        "glimpse",
        config,
        "example.com",
        "cluster test",
    )
    .await
    .expect("creating a key");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(glimpse_query::serve(
        query_config,
        listener,
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    wait_for_200(&http, &format!("{base}/ready"), WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let body: Value = loop {
        let response = http
            .get(format!(
                "{base}/api/v1/stats/aggregate?site_id=example.com&period=day\
                 &metrics=pageviews,visitors,visits"
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        // 401 until the key has reached the query service's server.
        if status == 200 || tokio::time::Instant::now() > deadline {
            assert_eq!(status, 200, "{body}");
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("aggregate: {body}");
    let results = &body["results"];
    assert_eq!(results["pageviews"]["value"], BEACONS as u64, "{body}");
    assert_eq!(results["visitors"]["value"], BEACONS as u64, "{body}");
    assert_eq!(results["visits"]["value"], BEACONS as u64, "{body}");
    StatsApi { base, key }
}

/// A query service on the cluster and a key for `example.com`.
struct StatsApi {
    base: String,
    key: String,
}

impl StatsApi {
    /// The aggregate page views, visitors and visits of `example.com` on UTC day `day`.
    async fn day(&self, day: &str) -> (u64, u64, u64) {
        let response = reqwest::Client::new()
            .get(format!(
                "{}/api/v1/stats/aggregate?site_id=example.com&period=custom\
                 &date={day},{day}&metrics=pageviews,visitors,visits",
                self.base
            ))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.unwrap();
        let value = |metric: &str| body["results"][metric]["value"].as_u64().unwrap();
        (value("pageviews"), value("visitors"), value("visits"))
    }
}

/// The query service's per-day rollup on the cluster (built through the `Distributed` tables,
/// a superseded build deleted on every shard): the stats API's figures for a rolled day are
/// the events', before and after the day changes and is built again.
async fn check_the_rollup_adds_up(cluster: &TestCluster, config: &Config, api: &StatsApi) {
    let now = glimpse_core::clock::unix_now();
    let noon = (now / 86_400 - 3) * 86_400 + 12 * 3600;
    let day = jiff::Timestamp::from_second(i64::from(noon))
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    // 10 visitors with 3 page views each, one visit each.
    let visit = |visitor_id: u64, pages: u32| {
        (0..pages).map(move |page| EventRow {
            site: "example.com".into(),
            timestamp: noon + page * 60,
            name: "pageview".into(),
            pathname: format!("/rolled/{page}"),
            visitor_id: 1_000_000 + visitor_id,
            session_id: 1_000_000 + visitor_id,
            visit_start: noon,
            visit_entry: u8::from(page == 0),
            visit_duration: if page == 0 { 0 } else { 60 },
            ..EventRow::default()
        })
    };
    let client = glimpse_core::db::connect(config, config.clickhouse_url.as_deref().unwrap());
    let insert_rows = |rows: Vec<EventRow>| {
        let client = client.clone();
        async move {
            let mut insert = client
                .with_database("glimpse")
                .insert::<EventRow>("events")
                .await
                .unwrap();
            for row in &rows {
                insert.write(row).await.unwrap();
            }
            insert.end().await.unwrap();
        }
    };
    insert_rows((0..10).flat_map(|v| visit(v, 3)).collect()).await;
    let cluster_name = config.clickhouse_cluster.as_ref();
    let refresh =
        || glimpse_query::rollup::refresh_on(&client, "glimpse", cluster_name, i64::from(now));
    let report = refresh().await.expect("rollup on the cluster");
    assert!(
        report
            .days_built
            .contains(&("example.com".to_string(), day.clone())),
        "{report:?}"
    );
    assert_eq!(api.day(&day).await, (30, 10, 10));

    // One more visit that day: the day is built again, the first build deleted everywhere.
    insert_rows(visit(10, 1).collect()).await;
    let report = refresh().await.expect("rollup on the cluster");
    assert!(
        report
            .days_built
            .contains(&("example.com".to_string(), day.clone())),
        "{report:?}"
    );
    let rolled = format!(
        "SELECT sum(pageviews) FROM glimpse.rollup_daily WHERE site = 'example.com' \
         AND property = '' AND day = toDate('{day}')"
    );
    let builds = format!(
        "SELECT uniqExact(version) FROM glimpse.rollup_daily_local WHERE site = 'example.com' \
         AND day = toDate('{day}')"
    );
    for node in &cluster.nodes {
        let deadline = tokio::time::Instant::now() + WAIT;
        while node.count(&builds).await > 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: old build left",
                node.name()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(cluster.nodes[0].count(&rolled).await, 31);
    assert_eq!(api.day(&day).await, (31, 11, 11));

    // Periods that mix rolled days with today's events (a `UNION ALL` of the rollup and the
    // events through the `Distributed` tables): the aggregate and breakdowns the dashboard
    // asks for. 18.16 refused these on the cluster (code 171) while one server answered.
    let today = jiff::Timestamp::from_second(i64::from(now))
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    let expected = cluster.nodes[0]
        .count(&format!(
            "SELECT count() FROM glimpse.events WHERE site = 'example.com' \
             AND name = 'pageview' AND toDate(timestamp) BETWEEN toDate('{day}') AND toDate('{today}')"
        ))
        .await;
    let get = |path: String| {
        let api_key = api.key.clone();
        let url = format!("{}{path}", api.base);
        async move {
            let response = reqwest::Client::new()
                .get(&url)
                .bearer_auth(api_key)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 200, "{url}: {body}");
            body
        }
    };
    let period = get(format!(
        "/api/v1/stats/aggregate?site_id=example.com&period=custom&date={day},{today}\
         &metrics=pageviews,visitors,visits,bounce_rate,visit_duration"
    ))
    .await;
    assert!(expected > 31, "today's beacons are in the period too");
    assert_eq!(
        period["results"]["pageviews"]["value"].as_u64(),
        Some(expected),
        "{period}"
    );
    for property in [
        "event:page",
        "visit:source",
        "visit:device",
        "visit:country",
    ] {
        let breakdown = get(format!(
            "/api/v1/stats/breakdown?site_id=example.com&period=custom&property={property}\
             &metrics=visitors,pageviews,bounce_rate&limit=1000&date={day},{today}"
        ))
        .await;
        let pageviews: u64 = breakdown["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["pageviews"].as_u64().unwrap())
            .sum();
        assert_eq!(
            pageviews, expected,
            "{property}: the rows' page views add up to the period's: {breakdown}"
        );
    }
}

/// The operator's erasure of a visitor (`glimpse erase`'s code) removes the visitor's rows from
/// both replicas of its shard, and nothing else.
async fn check_an_erasure_reaches_every_server(cluster: &TestCluster, config: &Config) {
    let client = glimpse_core::db::connect(config, config.clickhouse_url.as_deref().unwrap());
    let visitor: u64 = client
        .query("SELECT visitor_id FROM glimpse.events WHERE site = 'example.com' LIMIT 1")
        .fetch_one()
        .await
        .unwrap();
    let rows = glimpse_collector::admin::erase::visitor(
        &client,
        "glimpse",
        config.clickhouse_cluster.as_ref(),
        "example.com",
        visitor,
    )
    .await
    .expect("erasure on the cluster");
    assert_eq!(rows, 1);
    let left = format!(
        "SELECT count() FROM glimpse.events_local WHERE site = 'example.com' \
         AND visitor_id = {visitor}"
    );
    for node in &cluster.nodes {
        wait_for_count(node, &left, 0).await;
    }
    let total = "SELECT count() FROM glimpse.events WHERE site = 'example.com'";
    assert_eq!(cluster.nodes[0].count(total).await, BEACONS as u64 - 1);
}

/// Retention (the collector's daily job) drops expired partitions and deletes expired rows on
/// every shard and replica, and keeps what has not expired.
async fn check_retention_reaches_every_server(cluster: &TestCluster, config: &Config) {
    use glimpse_core::site::{Site, SiteConfig};
    let now = glimpse_core::clock::unix_now();
    let event = |site: &str, days_ago: u32, visitor_id: u64| EventRow {
        site: site.into(),
        timestamp: now - days_ago * 86_400,
        name: "pageview".into(),
        pathname: format!("/{days_ago}"),
        visitor_id,
        session_id: visitor_id,
        ..EventRow::default()
    };
    // `old.example` keeps the default 180 days, `long.example` a year: the month 200 days ago
    // stays (long.example's row) and loses old.example's rows; the month 400 days ago goes.
    let mut rows = Vec::new();
    for visitor in 1..=8 {
        rows.push(event("old.example", 400, visitor));
        rows.push(event("old.example", 200, visitor));
        rows.push(event("old.example", 0, visitor));
    }
    rows.push(event("long.example", 200, 99));
    let client = glimpse_core::db::connect(config, config.clickhouse_url.as_deref().unwrap());
    let mut insert = client
        .clone()
        .with_database("glimpse")
        .insert::<EventRow>("events")
        .await
        .unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let long = Site::parse(SiteConfig {
        retention_days: 365,
        ..SiteConfig::new("long.example")
    })
    .unwrap();
    let report = glimpse_collector::admin::retention::apply(
        &client,
        "glimpse",
        config.clickhouse_cluster.as_ref(),
        &[long],
        now,
    )
    .await
    .expect("retention on the cluster");
    println!("retention: {report:?}");
    assert_eq!(report.partitions_dropped.len(), 1, "{report:?}");
    // Each replica of each shard: the rows of its shard that are left.
    let kept = |site: &str| {
        format!("SELECT count() FROM glimpse.events_local WHERE site = '{site}' AND timestamp < now() - 86400")
    };
    for node in &cluster.nodes {
        wait_for_count(node, &kept("old.example"), 0).await;
    }
    let shard_sum = |sql: String| async move {
        let mut sum = 0;
        for shard in 1..=SHARDS {
            sum += cluster.node(shard, 1).count(&sql).await;
        }
        sum
    };
    assert_eq!(
        shard_sum(kept("long.example")).await,
        1,
        "long.example kept"
    );
    let fresh = "SELECT count() FROM glimpse.events_local WHERE site = 'old.example'".to_string();
    for replica in 1..=REPLICAS {
        let mut sum = 0;
        for shard in 1..=SHARDS {
            sum += cluster.node(shard, replica).count(&fresh).await;
        }
        assert_eq!(sum, 8, "replica {replica}: today's old.example rows kept");
    }
}

/// Deleting a site added at run time (the Sites API's and `glimpse site remove`'s code) erases
/// its rows from every shard and replica, and the registry's change reaches every server.
async fn check_a_deleted_sites_rows_go_from_every_server(cluster: &TestCluster, config: &Config) {
    const SITE: &str = "gone.example";
    let client = glimpse_core::db::connect(config, config.clickhouse_url.as_deref().unwrap());
    glimpse_query::auth::add_site(&client, "glimpse", config, SITE, "UTC")
        .await
        .expect("adding a site");
    let rows: Vec<EventRow> = (0..16u64)
        .map(|visitor_id| EventRow {
            site: SITE.into(),
            timestamp: glimpse_core::clock::unix_now(),
            name: "pageview".into(),
            visitor_id,
            session_id: visitor_id,
            ..EventRow::default()
        })
        .collect();
    let mut insert = client
        .clone()
        .with_database("glimpse")
        .insert::<EventRow>("events")
        .await
        .unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let erased = glimpse_query::auth::remove_site(&client, "glimpse", config, SITE)
        .await
        .expect("removing the site");
    assert_eq!(erased, rows.len() as u64);
    let left = format!("SELECT count() FROM glimpse.events_local WHERE site = '{SITE}'");
    let listed = format!(
        "SELECT toUInt64(argMax(deleted, version)) FROM glimpse.site_registry \
         WHERE domain = '{SITE}'"
    );
    for node in &cluster.nodes {
        wait_for_count(node, &left, 0).await;
        wait_for_count(node, &listed, 1).await;
    }
}

/// Current ClickHouse (26.x through chdb) parses every statement Glimpse runs on a cluster: the
/// migrations placed `ON CLUSTER` (modern flavor) and the `ALTER`s of erasure, retention and
/// the rollup. chdb cannot run a cluster (no ZooKeeper, no `remote_servers`), so they are
/// parsed (`EXPLAIN AST`), not run: that replicated and `Distributed` tables are created and
/// behave as on 18.16 is not covered on current ClickHouse.
#[test]
fn the_cluster_statements_parse_on_current_clickhouse() {
    let cluster = glimpse_core::config::ClusterName::parse(common::cluster::CLUSTER).unwrap();
    let mut statements =
        schema::migration_statements_on(schema::Flavor::Modern, "glimpse", Some(&cluster))
            .expect("every migration has a cluster form");
    for table in ["events", "rollup_daily", "site_registry"] {
        let alter = schema::cluster::alter_table("glimpse", table, Some(&cluster));
        statements.push(format!("{alter} DELETE WHERE site = 'example.com'"));
    }
    statements.push(format!(
        "{} DELETE WHERE toYYYYMM(timestamp) = 202401",
        schema::cluster::alter_table("glimpse", "events", Some(&cluster))
    ));
    assert!(statements
        .iter()
        .any(|s| s.contains("ENGINE = Distributed(")));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statements.json");
    std::fs::write(&path, serde_json::to_vec(&statements).unwrap()).unwrap();
    const PARSE: &str = r#"
import json, sys
import chdb
statements = json.load(open(sys.argv[1]))
for s in statements:
    try:
        chdb.query("EXPLAIN AST " + s, "TSV")
    except Exception as e:
        sys.exit(f"does not parse on current ClickHouse: {s}\n{e}")
print(f"{len(statements)} statements parse")
"#;
    let python = common::test_python();
    let output = std::process::Command::new(&python)
        .args(["-c", PARSE])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "{} (chdb is needed: run scripts/test.sh, which creates .venv with chdb-core and sets \
         GLIMPSE_TEST_PYTHON)\n{}{}",
        python.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{}", String::from_utf8_lossy(&output.stdout));
}
