//! The two outages of the README's failure table that failover cannot route around, on the
//! real cluster (`common::cluster`: ZooKeeper and 2 shards × 2 replicas of ClickHouse 18.16),
//! with two `glimpse collector` processes (separate data directories, one shared salt
//! directory) whose lists start on shard 1, and a `glimpse query` process on shard 1:
//!
//! 1. **Both replicas of shard 2 killed** mid-load. A `Distributed` insert (with
//!    `insert_distributed_sync`) then fails for the whole batch, even when shard 1 stored its
//!    part: the collectors keep answering `202` and keep the batches in their spools (nothing
//!    waits in a server's queue of pending distributed sends), the stats API answers `503`
//!    with a short reason (never a count missing shard 2), and once the shard is back the
//!    spools drain.
//! 2. **ZooKeeper killed** mid-load. Every replicated table turns read-only, so every insert
//!    fails: the collectors keep answering `202` and spool, `/ready` stays `200` (another
//!    collector would fare no better) and says the spool is filling, the metrics count the
//!    failed inserts, and reads (the stats API) still answer. Once ZooKeeper is back the
//!    spools drain.
//!
//! Afterwards every accepted page view is stored exactly once: counted per page on each
//! server's own `events_local`, with the replicas of each shard in agreement, and the stats
//! API counts them all.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::browser_client;
use common::cluster::{local_pages, url_list, ClusterNode, TestCluster};
use common::process::{Glimpse, Services};
use serde_json::Value;

/// Page views sent through each collector in each part of the test.
const PER_PART: usize = 300;
/// Concurrent senders per collector.
const SENDERS: usize = 8;
/// How long each outage lasts once its part has been sent.
const OUTAGE: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(60);

fn page(collector: usize, i: usize) -> String {
    format!("/c{collector}/{i}")
}

/// Statuses seen and pages accepted with `202`, over the whole test.
#[derive(Default)]
struct Sent {
    accepted: Vec<String>,
    statuses: BTreeMap<u16, usize>,
}

impl Sent {
    fn add(&mut self, other: Sent) {
        self.accepted.extend(other.accepted);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
    }

    fn accepted_by(&self, collector: usize) -> usize {
        let prefix = format!("/c{collector}/");
        self.accepted
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .count()
    }
}

/// Sends part `part` of every collector's page views at once, each page view from its own
/// address (its own visitor).
async fn send_part(bases: &[String], part: usize) -> Sent {
    let http = Arc::new(browser_client());
    let mut tasks = Vec::new();
    for (c, base) in bases.iter().enumerate() {
        let collector = c + 1;
        for worker in 0..SENDERS {
            let (http, base) = (http.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let mut sent = Sent::default();
                let range = part * PER_PART..(part + 1) * PER_PART;
                for i in range.skip(worker).step_by(SENDERS) {
                    let path = page(collector, i);
                    let body = format!(
                        r#"{{"n":"pageview","u":"https://example.com{path}","d":"example.com"}}"#
                    );
                    let ip = format!("198.{}.{}.{}", 50 + collector, i / 250, i % 250 + 1);
                    let status = http
                        .post(format!("{base}/api/event"))
                        .header("content-type", "text/plain")
                        .header("x-forwarded-for", ip)
                        .body(body)
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    if status == 202 {
                        sent.accepted.push(path);
                    }
                    *sent.statuses.entry(status).or_default() += 1;
                }
                sent
            }));
        }
    }
    let mut sent = Sent::default();
    for task in tasks {
        sent.add(task.await.unwrap());
    }
    sent
}

/// A service's answer: status and JSON body.
async fn get_json(url: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(30));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// The stats API's answer for today's page views of `example.com`.
async fn stats(query_base: &str, key: &str) -> (u16, Value) {
    get_json(
        &format!(
            "{query_base}/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=pageviews"
        ),
        Some(key),
    )
    .await
}

fn pageviews(answer: &(u16, Value)) -> Option<u64> {
    match answer {
        (200, body) => body["results"]["pageviews"]["value"].as_u64(),
        _ => None,
    }
}

/// What the collectors' metrics say about shipping.
async fn shipping(collectors: &[Glimpse]) -> String {
    let mut out = Vec::new();
    for c in collectors {
        let m = |name: &'static str| async move { c.metric(name).await.unwrap_or(-1.0) };
        out.push(format!(
            "{}: rows_written {} insert_errors {} spool_segments_pending {} spool_bytes {} \
             clickhouse_up {}",
            c.name,
            m("glimpse_rows_written_total").await,
            m("glimpse_insert_errors_total").await,
            m("glimpse_spool_segments_pending").await,
            m("glimpse_spool_bytes").await,
            m("glimpse_clickhouse_up").await,
        ));
    }
    out.join("\n")
}

/// Waits until `process` answers `/ready` with `200`; fails with its log.
async fn wait_until_ready(process: &Glimpse, base: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get_json(&format!("{base}/ready"), None).await;
        if status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not ready within {WAIT:?}: {status} {body}\n{}",
            process.name,
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until some insert of `collector` has failed since `errors_before`.
async fn wait_for_insert_errors(collector: &Glimpse, errors_before: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let errors = collector
            .metric("glimpse_insert_errors_total")
            .await
            .unwrap_or(0.0);
        if errors > errors_before {
            return errors;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: no insert failed during the outage:\n{}",
            collector.name,
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every collector has written every row it accepted and its spool is empty;
/// returns how long that took.
async fn wait_until_drained(collectors: &[Glimpse], sent: &Sent) -> Duration {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + WAIT;
    for (c, collector) in collectors.iter().enumerate() {
        let want = sent.accepted_by(c + 1) as f64;
        loop {
            let written = collector.metric("glimpse_rows_written_total").await;
            let pending = collector.metric("glimpse_spool_segments_pending").await;
            if written == Some(want) && pending == Some(0.0) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} wrote {written:?} of {want} rows ({pending:?} segments pending):\n{}",
                collector.name,
                collector.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    started.elapsed()
}

/// Files waiting in a server's queue of pending `Distributed` sends (`<table>/<shard>/*.bin`).
fn pending_distributed_sends(node: &ClusterNode) -> Vec<String> {
    let dir = node.server.dir().join("data/data/glimpse");
    // The check means nothing if the tables are elsewhere.
    assert!(
        dir.join("events").is_dir(),
        "no {}",
        dir.join("events").display()
    );
    walkdir::WalkDir::new(&dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        // A replicated table's parts hold `.bin` column files too, under `<table>/<part>/`;
        // pending sends are under a directory named after the shard's replicas (`user@host:port`).
        .filter(|e| {
            e.path()
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d.to_string_lossy().contains('@'))
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Every accepted page stored exactly once: once both replicas of each shard hold the same
/// pages, each accepted page is on exactly one shard, once, and nothing else is stored.
async fn assert_stored_exactly_once(cluster: &TestCluster, accepted: &[String]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let (shard_1, shard_2) = loop {
        let pages = [
            local_pages(cluster.node(1, 1)).await,
            local_pages(cluster.node(1, 2)).await,
            local_pages(cluster.node(2, 1)).await,
            local_pages(cluster.node(2, 2)).await,
        ];
        let missing = accepted
            .iter()
            .filter(|p| !pages[0].contains_key(*p) && !pages[2].contains_key(*p))
            .count();
        let replicas_agree = pages[0] == pages[1] && pages[2] == pages[3];
        if missing == 0 && replicas_agree {
            let [shard_1, _, shard_2, _] = pages;
            break (shard_1, shard_2);
        }
        let sizes: Vec<u64> = pages.iter().map(|p| p.values().sum()).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} accepted page views missing; rows per server (1/1, 1/2, 2/1, \
             2/2) {sizes:?}, replicas agree: {replicas_agree}\n{}",
            accepted.len(),
            cluster.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let in_both: Vec<&String> = shard_1
        .keys()
        .filter(|p| shard_2.contains_key(*p))
        .collect();
    assert!(in_both.is_empty(), "pages on both shards: {in_both:?}");
    let counts = [shard_1.len(), shard_2.len()];
    let mut stored = shard_1;
    stored.extend(shard_2);
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let accepted_set: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(accepted_set.len(), accepted.len(), "a page was sent twice");
    let extra: Vec<_> = stored
        .keys()
        .filter(|p| !accepted_set.contains(p))
        .collect();
    assert!(extra.is_empty(), "stored but never accepted: {extra:?}");
    println!(
        "stored exactly once: {} page views, {counts:?} per shard, replicas agree",
        stored.len()
    );
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "a shard is empty: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_or_zookeeper_down_keeps_every_accepted_page_view_once() {
    let started = Instant::now();
    let mut cluster = TestCluster::start().await;
    let config = cluster.config();
    let url = config.clickhouse_url.clone().unwrap();
    let client = glimpse_core::db::connect(&config, &url);
    glimpse_core::schema::migrate_on(&client, "glimpse", config.clickhouse_cluster.as_ref())
        .await
        .unwrap_or_else(|e| panic!("migrations: {e:?}\n{}", cluster.log_tails()));
    let (key, _) =
        glimpse_query::auth::create_key(&client, "glimpse", &config, "example.com", "outages")
            .await
            .expect("creating a key");

    // Both collectors enter the cluster on shard 1 (its two replicas), so shard 2's outage
    // is one their `Distributed` inserts must cross, not one failover avoids.
    let (n11, n12) = (cluster.node(1, 1), cluster.node(1, 2));
    let work = tempfile::tempdir().unwrap();
    let Services {
        collectors,
        bases,
        query,
        query_base,
    } = Services::start(
        work.path(),
        [url_list(&[n11, n12]), url_list(&[n12, n11])],
        url_list(&[n11, n12]),
    );
    for (process, base) in collectors.iter().zip(&bases).chain([(&query, &query_base)]) {
        wait_until_ready(process, base).await;
    }

    let mut sent = Sent::default();
    sent.add(send_part(&bases, 0).await);
    wait_until_drained(&collectors, &sent).await;
    println!(
        "all up: {} accepted, stats API {:?}",
        sent.accepted.len(),
        stats(&query_base, &key).await
    );

    // 1. Both replicas of shard 2 killed a moment into part 1.
    let errors_before = collectors[0]
        .metric("glimpse_insert_errors_total")
        .await
        .unwrap_or(0.0);
    let during = tokio::spawn({
        let bases = bases.clone();
        async move { send_part(&bases, 1).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_21 = cluster.kill(2, 1).await;
    let killed_22 = cluster.kill(2, 2).await;
    let outage = Instant::now();
    let part = during.await.unwrap();
    println!("shard 2 down: part 1 statuses {:?}", part.statuses);
    assert_eq!(
        part.statuses.get(&202),
        Some(&(2 * PER_PART)),
        "collectors refused beacons with shard 2 down: {:?}",
        part.statuses
    );
    sent.add(part);
    // Part 1 may have been shipped before the kill (its sending is quick when the machine is
    // idle): part 4 is sent wholly during the outage, so collector 1 has rows it cannot insert.
    let part = send_part(&bases, 4).await;
    assert_eq!(
        part.statuses.get(&202),
        Some(&(2 * PER_PART)),
        "collectors refused beacons with shard 2 down: {:?}",
        part.statuses
    );
    sent.add(part);
    wait_for_insert_errors(&collectors[0], errors_before).await;
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    let answer = stats(&query_base, &key).await;
    println!("shard 2 down: stats API {answer:?}");
    assert_eq!(
        answer.0, 503,
        "the stats API must refuse (not count without shard 2): {answer:?}"
    );
    assert!(
        answer.1["error"]
            .as_str()
            .is_some_and(|e| e.contains("shard")),
        "the 503 should say a shard is unreachable: {answer:?}"
    );
    let ready = get_json(&format!("{}/ready", bases[0]), None).await;
    println!("shard 2 down: collector /ready {ready:?}");
    assert_eq!(
        ready.0, 200,
        "a collector with room in its spool stays ready"
    );
    println!("shard 2 down: {}", shipping(&collectors).await);
    let written = collectors[0]
        .metric("glimpse_rows_written_total")
        .await
        .unwrap_or(0.0);
    assert!(
        written < sent.accepted_by(1) as f64,
        "collector 1 reports every row written with shard 2 down ({written})"
    );
    for node in [cluster.node(1, 1), cluster.node(1, 2)] {
        let pending = pending_distributed_sends(node);
        assert!(
            pending.is_empty(),
            "{} queued distributed sends (a 202 resting on them): {pending:?}",
            node.name()
        );
    }
    cluster.start_again(killed_21).await;
    cluster.start_again(killed_22).await;
    let back = Instant::now();
    let drained = wait_until_drained(&collectors, &sent).await;
    println!(
        "shard 2 back after {:.1} s down; spools drained {:.1} s after its restart",
        (back - outage).as_secs_f64(),
        drained.as_secs_f64()
    );

    // 2. ZooKeeper killed a moment into part 2.
    let errors_before = collectors[0]
        .metric("glimpse_insert_errors_total")
        .await
        .unwrap_or(0.0);
    let stored_before = pageviews(&stats(&query_base, &key).await);
    let during = tokio::spawn({
        let bases = bases.clone();
        async move { send_part(&bases, 2).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.stop_zookeeper();
    let outage = Instant::now();
    let part = during.await.unwrap();
    println!("ZooKeeper down: part 2 statuses {:?}", part.statuses);
    assert_eq!(
        part.statuses.get(&202),
        Some(&(2 * PER_PART)),
        "collectors refused beacons with ZooKeeper down: {:?}",
        part.statuses
    );
    sent.add(part);
    // As above: part 5 wholly during the outage.
    let part = send_part(&bases, 5).await;
    assert_eq!(
        part.statuses.get(&202),
        Some(&(2 * PER_PART)),
        "collectors refused beacons with ZooKeeper down: {:?}",
        part.statuses
    );
    sent.add(part);
    wait_for_insert_errors(&collectors[0], errors_before).await;
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    let answer = stats(&query_base, &key).await;
    println!(
        "ZooKeeper down: stats API {answer:?} ({stored_before:?} before, {} accepted)",
        sent.accepted.len()
    );
    // Reads answer. Not necessarily `stored_before` or more: a replica restarted in the first
    // outage may still lack parts it could not fetch before ZooKeeper went (README).
    let counted = pageviews(&answer);
    assert!(
        counted.is_some_and(|n| n > 0 && n <= sent.accepted.len() as u64),
        "reads should still answer with ZooKeeper down: {answer:?}"
    );
    let ready = get_json(&format!("{}/ready", bases[0]), None).await;
    println!("ZooKeeper down: collector /ready {ready:?}");
    assert_eq!(
        ready.0, 200,
        "a collector with room in its spool stays ready"
    );
    println!("ZooKeeper down: {}", shipping(&collectors).await);
    let pending = collectors[0]
        .metric("glimpse_spool_segments_pending")
        .await
        .unwrap_or(0.0);
    assert!(pending > 0.0, "collector 1's spool should hold the backlog");
    cluster.start_zookeeper().await;
    let back = Instant::now();
    let drained = wait_until_drained(&collectors, &sent).await;
    println!(
        "ZooKeeper back after {:.1} s down; spools drained {:.1} s after its restart",
        (back - outage).as_secs_f64(),
        drained.as_secs_f64()
    );

    // All up again: a last part, then the check.
    let part = send_part(&bases, 3).await;
    assert_eq!(part.statuses.get(&202), Some(&(2 * PER_PART)));
    sent.add(part);
    let mut logs = Vec::new();
    for collector in collectors {
        logs.push((collector.name, collector.stop().await));
    }
    println!(
        "statuses: {:?}, {} accepted",
        sent.statuses,
        sent.accepted.len()
    );
    assert_eq!(sent.accepted.len(), 6 * 2 * PER_PART, "{:?}", sent.statuses);
    assert_stored_exactly_once(&cluster, &sent.accepted).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = stats(&query_base, &key).await;
        if pageviews(&answer) == Some(sent.accepted.len() as u64) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats API after the outages: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let query_log = query.stop().await;
    for (name, log) in &logs {
        // The ClickHouse error codes the retried shipments met, and how often.
        let mut codes = BTreeMap::<String, usize>::new();
        for line in log.lines().filter(|l| l.contains("batch not shipped yet")) {
            let code = line.split("Code: ").nth(1).map_or("no code", |rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap_or("")
            });
            *codes.entry(code.to_string()).or_default() += 1;
        }
        let set_aside = log.matches("dead-letter").count();
        println!(
            "{name}: retried shipments by error code {codes:?}, {set_aside} dead-letter lines"
        );
        assert_eq!(set_aside, 0, "{name} set a batch aside:\n{log}");
    }
    let refusals = query_log.matches("stats query failed").count();
    println!("query service: {refusals} stats queries failed (logged with their request id)");
    println!("test took {:.1} s", started.elapsed().as_secs_f64());
}
