//! `glimpse-bench cluster-ingest`: ingest through two `glimpse collector` processes into the
//! loopback cluster (2 shards × 2 replicas of ClickHouse 18.16 and ZooKeeper, `store`) against
//! one collector into one server, measured in the same run with the same load: the same
//! keep-alive connections and visitor addresses in total, split evenly over the collectors
//! (disjoint addresses, as a load balancer hashing on the client address would send them).
//! Everything runs on this machine's cores, the load generator included: the figures say what
//! this machine does, not what the same processes would do on machines of their own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::load::{self, LoadResult};
use crate::process::{self, Child};
use crate::scale;
use crate::store::Store;

/// Both runs' collectors share their salts through ClickHouse on the cluster (`salt_key`);
/// one server gets it too, so that the two runs differ only in where events go. A benchmark's
/// key, not a secret.
const SALT_KEY: &str = "glimpse-bench cluster-ingest salt key (not a secret)";
/// How long to wait for the accepted events to land after a load.
const LAND_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Options {
    /// The glimpse binary (a release build).
    pub glimpse: PathBuf,
    /// Seconds of each maximum-throughput run.
    pub duration: Duration,
    /// Keep-alive connections in total.
    pub concurrency: usize,
    /// Distinct visitor addresses in total.
    pub clients: u32,
}

/// One configuration's figures.
struct Figures {
    store: &'static str,
    collectors: usize,
    servers: usize,
    load: LoadResult,
    /// CPU % (of one core) over the load: the collectors together, the ClickHouse servers
    /// together, this process (the load generator).
    collectors_cpu: f64,
    clickhouse_cpu: f64,
    generator_cpu: f64,
    collectors_rss_peak_mib: f64,
    landed_per_sec: Option<f64>,
    lag_secs: Option<f64>,
    load_average: (String, String),
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let glimpse = options.glimpse.canonicalize().with_context(|| {
        format!(
            "{} (build it: cargo build --release)",
            options.glimpse.display()
        )
    })?;
    println!(
        "machine: {} cores, {}; load: {} keep-alive connections and {} visitor addresses in \
         total, {} s per run; load average {} at the start",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        process::memory_description(),
        options.concurrency,
        options.clients,
        options.duration.as_secs(),
        scale::load_average()
    );
    let work = tempfile::tempdir()?;
    let mut results = Vec::new();
    for (cluster, collectors) in [(false, 1), (true, 2)] {
        let figures = measure(&glimpse, &options, work.path(), cluster, collectors).await?;
        println!(
            "{}: {:.0} req/s through {collectors} collector(s), load average {} → {}",
            figures.store,
            figures.load.rate(),
            figures.load_average.0,
            figures.load_average.1
        );
        results.push(figures);
    }
    print_table(&results);
    Ok(())
}

async fn measure(
    glimpse: &Path,
    options: &Options,
    work: &Path,
    cluster: bool,
    collectors: usize,
) -> anyhow::Result<Figures> {
    let load_start = scale::load_average();
    let store = Store::start(cluster, &work.join("clickhouse")).await?;
    let client = store.client();
    // Before the collectors: two starting at once would both create the schema on the cluster.
    glimpse_core::schema::migrate_on(&client, "glimpse", store.cluster().as_ref())
        .await
        .context("migrations")?;
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for i in 0..collectors {
        let addr = process::free_addr();
        let data = work.join(format!("{}-collector-{i}", store.name().replace(' ', "-")));
        let (clickhouse_url, collector_addr) =
            (store.collector_url(i as u32 + 1), addr.to_string());
        let mut env = vec![
            ("GLIMPSE_CLICKHOUSE_URL", clickhouse_url.as_str()),
            ("GLIMPSE_COLLECTOR_ADDR", collector_addr.as_str()),
            ("GLIMPSE_METRICS_ADDR", "127.0.0.1:0"),
            ("GLIMPSE_SITES", "example.com"),
            (
                "GLIMPSE_DATA_DIR",
                data.to_str().context("a UTF-8 temp path")?,
            ),
            ("GLIMPSE_SALT_KEY", SALT_KEY),
            ("GLIMPSE_LOG", "warn"),
            // The load claims its visitors' addresses the way a reverse proxy would.
            ("GLIMPSE_TRUSTED_PROXIES", "127.0.0.1"),
        ];
        if cluster {
            env.push(("GLIMPSE_CLICKHOUSE_CLUSTER", glimpse_localcluster::CLUSTER));
        }
        children.push(Child::spawn(glimpse, &["collector"], &env)?);
        urls.push((addr, format!("http://{addr}/api/event")));
    }
    for (addr, _) in &urls {
        process::wait_ready(*addr).await?;
    }

    let before = count(&client).await;
    let cpu = |pids: &[u32]| pids.iter().map(|&p| process::cpu_seconds(p)).sum::<f64>();
    let collector_pids: Vec<u32> = children.iter().map(Child::pid).collect();
    let clickhouse_pids = store.pids();
    let me = [std::process::id()];
    let cpu0 = (cpu(&collector_pids), cpu(&clickhouse_pids), cpu(&me));
    let per_collector = (options.concurrency / collectors).max(1);
    let clients_each = options.clients / collectors as u32;
    let loads: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(i, (_, url))| {
            let url = url.clone();
            let clients = clients_each * i as u32..clients_each * (i as u32 + 1);
            let duration = options.duration;
            tokio::spawn(
                async move { load::run(&url, per_collector, duration, None, clients).await },
            )
        })
        .collect();
    let mut total: Option<LoadResult> = None;
    for load in loads {
        let one = load.await.context("a load task")?;
        total = Some(match total {
            None => one,
            Some(mut sum) => {
                sum.requests += one.requests;
                sum.accepted += one.accepted;
                sum.errors += one.errors;
                sum.seconds = sum.seconds.max(one.seconds);
                sum.latency.add(&one.latency)?;
                sum
            }
        });
    }
    let load = total.context("no load ran")?;
    let percent = |now: f64, then: f64| (now - then) / load.seconds * 100.0;
    let collectors_cpu = percent(cpu(&collector_pids), cpu0.0);
    let clickhouse_cpu = percent(cpu(&clickhouse_pids), cpu0.1);
    let generator_cpu = percent(cpu(&me), cpu0.2);

    // Rows landed and lag: until ClickHouse has every accepted event of the run.
    let load_end = Instant::now();
    let target = before + load.accepted;
    let mut lag_secs = None;
    while load_end.elapsed() < LAND_TIMEOUT {
        if count(&client).await >= target {
            lag_secs = Some(load_end.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let landed_per_sec = lag_secs.map(|lag| load.accepted as f64 / (load.seconds + lag));
    let collectors_rss_peak_mib = children.iter().map(Child::rss_peak_mib).sum();
    for child in children {
        child.terminate().await;
    }
    let figures = Figures {
        store: store.name(),
        collectors,
        servers: clickhouse_pids.len(),
        load,
        collectors_cpu,
        clickhouse_cpu,
        generator_cpu,
        collectors_rss_peak_mib,
        landed_per_sec,
        lag_secs,
        load_average: (load_start, scale::load_average()),
    };
    store.stop().await;
    Ok(figures)
}

/// Rows in `glimpse.events` (on the cluster through the `Distributed` table, one replica of
/// each shard); 0 while it cannot be read.
async fn count(client: &clickhouse::Client) -> u64 {
    client
        .query("SELECT count() FROM glimpse.events")
        .fetch_one::<u64>()
        .await
        .unwrap_or(0)
}

fn print_table(results: &[Figures]) {
    let or_dash = |v: Option<f64>, decimals: usize| {
        v.map(|v| format!("{v:.decimals$}"))
            .unwrap_or_else(|| "-".into())
    };
    println!();
    println!(
        "| run | req/s (202) | p50 ms | p99 ms | p99.9 ms | collectors CPU % | ClickHouse CPU % \
         | load generator CPU % | collectors peak RSS MiB | rows landed/s | lag after load s \
         | load average start → end |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in results {
        println!(
            "| {} collector(s) → {} ({} ClickHouse server(s)) | {:.0} | {:.2} | {:.2} | {:.2} \
             | {:.0} | {:.0} | {:.0} | {:.1} | {} | {} | {} → {} |",
            r.collectors,
            r.store,
            r.servers,
            r.load.accepted as f64 / r.load.seconds,
            r.load.ms(50.0),
            r.load.ms(99.0),
            r.load.ms(99.9),
            r.collectors_cpu,
            r.clickhouse_cpu,
            r.generator_cpu,
            r.collectors_rss_peak_mib,
            or_dash(r.landed_per_sec, 0),
            or_dash(r.lag_secs, 2),
            r.load_average.0,
            r.load_average.1
        );
        if r.load.errors > 0 || r.load.accepted < r.load.requests {
            println!(
                "|   ↳ {} requests, {} answered 202, {} transport errors | | | | | | | | | | | |",
                r.load.requests, r.load.accepted, r.load.errors
            );
        }
    }
    if let [single, cluster] = results {
        let ratio = |a: f64, b: f64| format!("{:.2}", b / a);
        let landed = match (single.landed_per_sec, cluster.landed_per_sec) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => "-".into(),
        };
        println!();
        println!(
            "cluster ÷ one server: req/s {}, rows landed/s {landed}, p50 {}, p99 {}",
            ratio(
                single.load.accepted as f64 / single.load.seconds,
                cluster.load.accepted as f64 / cluster.load.seconds
            ),
            ratio(single.load.ms(50.0), cluster.load.ms(50.0)),
            ratio(single.load.ms(99.0), cluster.load.ms(99.0)),
        );
    }
}
