//! Stateless collectors on a real ClickHouse cluster (`common::cluster`: ZooKeeper and four
//! ClickHouse 18.16 servers, 2 shards × 2 replicas): with `salt_key`, collectors with separate
//! data directories agree on the daily salts through the replicated `visitor_salts` table.
//! Two collectors proposing at once agree; two in-process collectors on different servers give
//! one visitor one id and write no salt to their data directories; the salt is nowhere in
//! clear on the cluster's disks; a salt older than 48 h is dropped from every server by the
//! collectors' own upkeep, and its files are gone from every server's disk soon after.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{ClusterNode, NodeCount, TestCluster};
use common::{browser_client, wait_for_200, FIREFOX};
use glimpse_collector::ingest::pseudonym::{self, Clock, SaltStore};
use glimpse_collector::ingest::shared_salts::SharedSalts;
use glimpse_core::config::Secret;
use glimpse_core::schema;
use glimpse_core::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SALT_KEY: &str = "a test salt key of at least 32 characters";
const WAIT: Duration = Duration::from_secs(60);
/// Drop, replication, then `old_parts_lifetime` (30 s) and the cleanup period (10–15 s) of
/// migration 20: the files of a dropped salt are gone well within this.
const FILES_GONE_WITHIN: Duration = Duration::from_secs(120);

/// A collector's configuration on `node`, with its own data directory and the shared key.
fn collector_config(cluster: &TestCluster, node: &ClusterNode, data_dir: PathBuf) -> Config {
    let base = cluster.config();
    Config {
        clickhouse_url: Some(node.server.url().to_string()),
        data_dir,
        trusted_proxies: glimpse_core::proxies::ProxyNets::parse(&["127.0.0.1".into()]).unwrap(),
        collector: glimpse_core::config::CollectorConfig {
            salt_key: Some(Secret::from(SALT_KEY)),
            ..base.collector.clone()
        },
        ..base
    }
}

fn shared_on(cluster: &TestCluster, node: &ClusterNode, settle: Duration) -> SharedSalts {
    let config = collector_config(cluster, node, cluster.dir().join("unused"));
    let client = glimpse_core::db::connect(&config, node.server.url());
    SharedSalts::new(client, "glimpse", SALT_KEY, settle)
}

fn today() -> pseudonym::Day {
    pseudonym::day_of(u64::from(glimpse_core::clock::unix_now()))
}

/// A fixed wall clock, so that the collectors' upkeep runs "now" without waiting for midnight.
struct FixedClock(u64);

impl Clock for FixedClock {
    fn unix_now(&self) -> u64 {
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_share_salts_through_the_cluster_and_expired_salts_leave_every_server() {
    let cluster = TestCluster::start().await;
    let config = collector_config(&cluster, &cluster.nodes[0], cluster.dir().join("setup"));
    let client = glimpse_core::db::connect(&config, config.clickhouse_url.as_deref().unwrap());
    schema::migrate_on(&client, "glimpse", config.clickhouse_cluster.as_ref())
        .await
        .unwrap_or_else(|e| panic!("migrations: {e:?}\n{}", cluster.log_tails()));
    for node in &cluster.nodes {
        let engine = node
            .client()
            .query("SELECT engine FROM system.tables WHERE database = 'glimpse' AND name = 'visitor_salts'")
            .fetch_one::<String>()
            .await
            .unwrap();
        assert_eq!(engine, "ReplicatedMergeTree", "{}", node.name());
    }

    two_collectors_proposing_at_once_agree(&cluster).await;
    let salt = collectors_with_separate_data_dirs_give_a_visitor_one_id(&cluster).await;
    the_salt_is_nowhere_in_clear_on_the_cluster(&cluster, &salt);
    an_expired_salt_leaves_every_server(&cluster).await;
}

/// Pairs of collectors on different shards agree on days nobody has a salt for yet, at once.
async fn two_collectors_proposing_at_once_agree(cluster: &TestCluster) {
    let a = shared_on(cluster, cluster.node(1, 1), Duration::from_secs(2));
    let b = shared_on(cluster, cluster.node(2, 2), Duration::from_secs(2));
    let mut raced = 0;
    for day in today() + 10..today() + 14 {
        let (sa, sb) = tokio::join!(a.agree(day), b.agree(day));
        let (sa, sb) = (sa.unwrap(), sb.unwrap());
        assert_eq!(*sa, *sb, "day {day}: the collectors chose different salts");
        let proposals = cluster
            .node(1, 2)
            .count(&format!(
                "SELECT count() FROM glimpse.visitor_salts WHERE day = {day}"
            ))
            .await;
        assert!((1..=2).contains(&proposals), "day {day}: {proposals}");
        raced += usize::from(proposals == 2);
    }
    println!("days on which both collectors proposed a salt: {raced} of 4");
    assert!(raced > 0, "the collectors never actually raced");
}

/// Two in-process collectors, each with its own data directory and connected to a server of
/// its own shard, receive a page view from the same visitor: one visitor id. Returns today's
/// salt as the collectors' key unseals it, for the disk search.
async fn collectors_with_separate_data_dirs_give_a_visitor_one_id(
    cluster: &TestCluster,
) -> Vec<u8> {
    let dirs = [
        cluster.dir().join("collector-a"),
        cluster.dir().join("collector-b"),
    ];
    let nodes = [cluster.node(1, 1), cluster.node(2, 1)];
    let http = browser_client();
    let mut servers = Vec::new();
    let mut bases = Vec::new();
    // Started at once: whichever proposes today's salt, both must end on the same one.
    for (dir, node) in dirs.iter().zip(nodes) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = collector_config(cluster, node, dir.clone());
        servers.push((
            stop,
            tokio::spawn(glimpse_collector::serve(config, listener, async {
                let _ = stopped.await;
            })),
        ));
    }
    for base in &bases {
        wait_for_200(&http, &format!("{base}/ready"), WAIT).await;
    }
    for (i, base) in bases.iter().enumerate() {
        let status = http
            .post(format!("{base}/api/event"))
            .header("content-type", "text/plain")
            .header("x-forwarded-for", "203.0.113.77")
            .header("user-agent", FIREFOX)
            .body(format!(
                r#"{{"n":"pageview","u":"https://example.com/from-{i}","d":"example.com"}}"#
            ))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 202);
    }
    for (stop, server) in servers {
        let _ = stop.send(());
        server.await.unwrap().expect("collector");
    }
    let node = cluster.node(1, 2);
    let deadline = Instant::now() + WAIT;
    while node
        .count("SELECT count() FROM glimpse.events WHERE pathname LIKE '/from-%'")
        .await
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the two page views never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids = node
        .count("SELECT uniqExact(visitor_id) FROM glimpse.events WHERE pathname LIKE '/from-%'")
        .await;
    assert_eq!(ids, 1, "one visitor through two collectors got {ids} ids");
    // No salt in either data directory: the cluster holds them.
    for dir in &dirs {
        let files = files_under(dir);
        assert!(
            !files
                .iter()
                .any(|f| f.extension().is_some_and(|e| e == "salt")),
            "{files:?}"
        );
    }
    let today_salt = shared_on(cluster, cluster.node(2, 2), Duration::ZERO)
        .agree(today())
        .await
        .unwrap();
    today_salt.to_vec()
}

/// Neither the raw salt nor its hex form is in any file of the cluster: servers' data, logs,
/// ZooKeeper's data, the collectors' directories.
fn the_salt_is_nowhere_in_clear_on_the_cluster(cluster: &TestCluster, salt: &[u8]) {
    let hex: String = salt.iter().map(|b| format!("{b:02x}")).collect();
    let found = files_containing(cluster.dir(), &[salt, hex.as_bytes()]);
    assert!(found.is_empty(), "today's salt in clear in {found:?}");
}

/// A salt of four days ago and one of three days ago are proposed (their sealed rows reach
/// every server's disk); one minute of a collector's upkeep drops them from every server, and
/// their files are gone from every server's disk within [`FILES_GONE_WITHIN`]. Yesterday's and
/// today's stay.
async fn an_expired_salt_leaves_every_server(cluster: &TestCluster) {
    let today = today();
    let old_days = [today - 4, today - 3];
    let proposer = shared_on(cluster, cluster.node(1, 1), Duration::from_millis(500));
    proposer.agree(today - 1).await.unwrap();
    let mut sealed = Vec::new();
    for day in old_days {
        proposer.agree(day).await.unwrap();
        let text = cluster
            .node(1, 1)
            .client()
            .query("SELECT sealed FROM glimpse.visitor_salts WHERE day = ?")
            .bind(day)
            .fetch_one::<String>()
            .await
            .unwrap();
        sealed.push(text);
    }
    let old = format!("day IN ({}, {})", old_days[0], old_days[1]);
    for node in &cluster.nodes {
        wait_for(
            node,
            &format!("SELECT count() FROM glimpse.visitor_salts WHERE {old}"),
            2,
        )
        .await;
    }
    // The search finds the sealed rows while they exist, on every server.
    // In pieces: LZ4 may encode a repeat inside the text as a back-reference.
    let needles: Vec<&[u8]> = sealed
        .iter()
        .flat_map(|s| s.as_bytes().chunks(16))
        .collect();
    for node in &cluster.nodes {
        let found = files_containing(node.server.dir(), &needles);
        assert!(
            !found.is_empty(),
            "sealed salts not found on {}",
            node.name()
        );
    }

    // A collector's upkeep, as its timer runs it, on a server of the other shard.
    let now = u64::from(glimpse_core::clock::unix_now());
    let shared = Arc::new(shared_on(
        cluster,
        cluster.node(2, 2),
        Duration::from_millis(500),
    ));
    let store = Arc::new(SaltStore::open_shared(shared, today, WAIT).await);
    let stop = CancellationToken::new();
    let upkeep = tokio::spawn(pseudonym::rotate_daily(
        store,
        Arc::new(FixedClock(now)),
        stop.clone(),
    ));
    let dropped_at = Instant::now();
    for node in &cluster.nodes {
        wait_for(
            node,
            &format!("SELECT count() FROM glimpse.visitor_salts WHERE {old}"),
            0,
        )
        .await;
        let kept = node
            .count(&format!(
                "SELECT uniqExact(day) FROM glimpse.visitor_salts WHERE day IN ({}, {today})",
                today - 1
            ))
            .await;
        assert_eq!(kept, 2, "yesterday's and today's salts on {}", node.name());
    }
    println!(
        "expired salts gone from every server's tables {:?} after the upkeep started",
        dropped_at.elapsed()
    );
    stop.cancel();
    upkeep.await.unwrap();

    loop {
        let found: Vec<PathBuf> = cluster
            .nodes
            .iter()
            .flat_map(|node| files_containing(node.server.dir(), &needles))
            .chain(files_containing(&cluster.dir().join("zookeeper"), &needles))
            .collect();
        if found.is_empty() {
            break;
        }
        assert!(
            dropped_at.elapsed() < FILES_GONE_WITHIN,
            "expired sealed salts still on disk after {:?}: {found:?}",
            dropped_at.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!(
        "expired salts' files gone from every server's disk {:?} after the drop started",
        dropped_at.elapsed()
    );
}

async fn wait_for(node: &ClusterNode, sql: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = node.count(sql).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} on {}: {got}, want {want}",
            node.name()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .collect()
}

/// The files below `dir` that contain any of `needles`.
fn files_containing(dir: &Path, needles: &[&[u8]]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            // A file may vanish between the listing and the read (a merge, a cleanup).
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == *n))
        })
        .collect()
}
