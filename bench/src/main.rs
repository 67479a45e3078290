//! `glimpse-bench`: measures ingest against the physical limit of this machine.
//!
//! `glimpse-bench ingest --glimpse target/release/glimpse` runs, in one go: a bare hyper server
//! that answers `202` and does nothing (the ceiling), then `glimpse collector` with the spool on
//! and off against a real ClickHouse it starts, each driven by the same load generator; it
//! prints throughput, latency, CPU, memory, rows landed per second and the end-to-end lag, and
//! ratios against the bare server measured in the same run. `cluster-ingest` and
//! `query --cluster` compare one ClickHouse server with a 2-shard × 2-replica cluster in the
//! same run. Loopback only; every run is bounded in time.

mod cluster_ingest;
mod generate;
mod load;
mod process;
mod query;
mod sampled;
mod scale;
mod store;

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Parser)]
#[command(name = "glimpse-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A bare hyper 1.x server answering 202 to every POST /api/event (the baseline).
    Bare {
        #[arg(long, default_value = "127.0.0.1:8099")]
        addr: std::net::SocketAddr,
    },
    /// The full ingest benchmark.
    Ingest {
        /// The glimpse binary to measure (build it with --release).
        #[arg(long, default_value = "target/release/glimpse")]
        glimpse: PathBuf,
        /// Seconds of each maximum-throughput run.
        #[arg(long, default_value_t = 15)]
        duration: u64,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Distinct visitor addresses the load claims (X-Forwarded-For from 198.18.0.0/15,
        /// loopback trusted as the proxy): the collector holds about that many open visits.
        #[arg(long, default_value_t = 10_000)]
        clients: u32,
    },
    /// Two collectors into the loopback cluster (ZooKeeper, 2 shards × 2 replicas) against
    /// one collector into one server, the same load in the same run.
    ClusterIngest {
        /// The glimpse binary to measure (build it with --release).
        #[arg(long, default_value = "target/release/glimpse")]
        glimpse: PathBuf,
        /// Seconds of each run.
        #[arg(long, default_value_t = 15)]
        duration: u64,
        /// Keep-alive connections in total (split over the collectors).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Distinct visitor addresses in total (split over the collectors).
        #[arg(long, default_value_t = 10_000)]
        clients: u32,
    },
    /// The query benchmark: the dashboard's queries through the stats API at growing sizes.
    Query {
        /// Stored events at which to measure (cumulative).
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
        sizes: Vec<u64>,
        /// Runs of each query per size.
        #[arg(long, default_value_t = 20)]
        repeats: usize,
        /// Also time the same statements on current ClickHouse, in-process through chdb, with
        /// this Python (one that has `chdb-core`, e.g. `.venv/bin/python`).
        #[arg(long)]
        chdb: Option<PathBuf>,
        /// Time the queries without the rollup too (the baseline) only up to this size: at
        /// 100 M events each takes seconds.
        #[arg(long, default_value_t = u64::MAX)]
        baseline_max_size: u64,
        /// Time the statements on chdb only up to this size (chdb loads a copy of the events).
        #[arg(long, default_value_t = u64::MAX)]
        chdb_max_size: u64,
        /// Stop before the free space of the disk holding the temporary directory falls under
        /// this many GB (the events take about 25-40 bytes each, the chdb copy as much again).
        #[arg(long, default_value_t = 15)]
        min_free_gb: u64,
        /// The query service's `sampling_threshold_rows` (0: never sample).
        #[arg(long, default_value_t = glimpse_core::config::QueryConfig::default().sampling_threshold_rows)]
        sampling_threshold_rows: u64,
        /// Then the same on the loopback cluster (ZooKeeper, 2 shards × 2 replicas), and the
        /// two side by side.
        #[arg(long)]
        cluster: bool,
    },
    /// Print the SQL the stats API sends for each of the query benchmark's dashboard queries
    /// (to time or EXPLAIN them by hand).
    Sql {
        /// The moment "now" for the periods, in seconds since 1970 (default: now).
        #[arg(long)]
        now: Option<i64>,
        /// As with every day until two days before "now" rolled up.
        #[arg(long)]
        rolled: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Bare { addr } => runtime.block_on(bare(addr)),
        Command::Ingest {
            glimpse,
            duration,
            concurrency,
            clients,
        } => runtime.block_on(ingest(
            glimpse,
            Duration::from_secs(duration),
            concurrency,
            clients,
        )),
        Command::ClusterIngest {
            glimpse,
            duration,
            concurrency,
            clients,
        } => runtime.block_on(cluster_ingest::run(cluster_ingest::Options {
            glimpse,
            duration: Duration::from_secs(duration),
            concurrency,
            clients,
        })),
        Command::Query {
            sizes,
            repeats,
            chdb,
            baseline_max_size,
            chdb_max_size,
            min_free_gb,
            sampling_threshold_rows,
            cluster,
        } => runtime.block_on(query::run(query::Options {
            sizes: &sizes,
            repeats,
            chdb: chdb.as_deref(),
            baseline_max_size,
            chdb_max_size,
            min_free_bytes: min_free_gb * 1_000_000_000,
            sampling_threshold_rows,
            cluster,
        })),
        Command::Sql { now, rolled } => {
            let now = match now {
                Some(seconds) => jiff::Timestamp::from_second(seconds)?,
                None => jiff::Timestamp::now(),
            };
            let today = now.as_second().div_euclid(86_400);
            let rolled: Vec<i64> = if rolled {
                (today - 400..today - 1).collect()
            } else {
                Vec::new()
            };
            for (name, statements) in query::dashboard_statements(now, &rolled)? {
                println!("-- {name}");
                for statement in statements {
                    println!("{statement};");
                }
            }
            Ok(())
        }
    }
}

async fn bare(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    // Read the body as a real endpoint must, then answer like the collector.
                    let _ = request.into_body().collect().await;
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                    *response.status_mut() = hyper::StatusCode::ACCEPTED;
                    Ok::<_, Infallible>(response)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One measured configuration.
struct Measured {
    name: String,
    max: load::LoadResult,
    cpu_percent: f64,
    rss_peak_mib: f64,
    half: Option<load::LoadResult>,
    at_10k: Option<(f64, f64)>,
    landed_per_sec: Option<f64>,
    lag_secs: Option<f64>,
}

async fn ingest(
    glimpse: PathBuf,
    duration: Duration,
    concurrency: usize,
    clients: u32,
) -> anyhow::Result<()> {
    let glimpse = glimpse
        .canonicalize()
        .with_context(|| format!("{} (build it: cargo build --release)", glimpse.display()))?;
    let me = std::env::current_exe()?;
    let work = tempfile::tempdir()?;
    println!(
        "machine: {} cores, {}; load: {concurrency} keep-alive connections, {clients} visitor \
         addresses, {} s per max run",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        process::memory_description(),
        duration.as_secs()
    );
    let mut results = Vec::new();

    // 1. The ceiling: bare hyper.
    let addr = process::free_addr();
    let bare = process::Child::spawn(&me, &["bare", "--addr", &addr.to_string()], &[])?;
    process::wait_listening(addr).await?;
    let url = format!("http://{addr}/api/event");
    let cpu0 = bare.cpu_seconds();
    let max = load::run(&url, concurrency, duration, None, 0..clients).await;
    let cpu = (bare.cpu_seconds() - cpu0) / max.seconds * 100.0;
    let half = load::run(
        &url,
        concurrency,
        Duration::from_secs(10),
        Some(max.rate() / 2.0),
        0..clients,
    )
    .await;
    results.push(Measured {
        name: "bare hyper (202, no work)".into(),
        cpu_percent: cpu,
        rss_peak_mib: bare.rss_peak_mib(),
        max,
        half: Some(half),
        at_10k: None,
        landed_per_sec: None,
        lag_secs: None,
    });
    drop(bare);

    // 2. Glimpse, spool on and off, against a real ClickHouse.
    let clickhouse = glimpse_core::db::local::LocalClickHouse::start(
        &work.path().join("clickhouse"),
        "clickhouse-server",
    )
    .await
    .context("starting clickhouse-server")?;
    let ch = clickhouse.client();
    let runs = [
        (
            "glimpse, spool on, fsync always (default)",
            "true",
            "always",
        ),
        ("glimpse, spool on, fsync every 10 ms", "true", "interval"),
        ("glimpse, spool off (memory queue)", "false", "always"),
    ];
    for (name, spool, fsync) in runs {
        let addr = process::free_addr();
        let data = work.path().join(format!("glimpse-{spool}-{fsync}"));
        let child = process::Child::spawn(
            &glimpse,
            &["collector"],
            &[
                ("GLIMPSE_CLICKHOUSE_URL", &clickhouse.url_with_credentials()),
                ("GLIMPSE_COLLECTOR_ADDR", &addr.to_string()),
                ("GLIMPSE_METRICS_ADDR", "127.0.0.1:0"),
                ("GLIMPSE_SITES", "example.com"),
                ("GLIMPSE_DATA_DIR", &data.to_string_lossy()),
                ("GLIMPSE_SPOOL", spool),
                ("GLIMPSE_SPOOL_FSYNC", fsync),
                ("GLIMPSE_LOG", "warn"),
                // The load claims its visitors' addresses the way a reverse proxy would.
                ("GLIMPSE_TRUSTED_PROXIES", "127.0.0.1"),
            ],
        )?;
        process::wait_ready(addr).await?;
        let url = format!("http://{addr}/api/event");
        let before = count(&ch).await;
        let cpu0 = child.cpu_seconds();
        let max = load::run(&url, concurrency, duration, None, 0..clients).await;
        let cpu = (child.cpu_seconds() - cpu0) / max.seconds * 100.0;
        let load_end = Instant::now();
        // Rows landed and lag: until ClickHouse has every accepted event of this run.
        let target = before + max.accepted;
        let mut lag = None;
        while load_end.elapsed() < Duration::from_secs(60) {
            if count(&ch).await >= target {
                lag = Some(load_end.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let landed = lag.map(|l| max.accepted as f64 / (max.seconds + l));
        let half = load::run(
            &url,
            concurrency,
            Duration::from_secs(10),
            Some(max.rate() / 2.0),
            0..clients,
        )
        .await;
        let rate_10k = load::run(
            &url,
            concurrency,
            Duration::from_secs(10),
            Some(10_000.0),
            0..clients,
        )
        .await;
        let at_10k = Some((rate_10k.rate(), child.rss_now_mib()));
        results.push(Measured {
            name: name.into(),
            cpu_percent: cpu,
            rss_peak_mib: child.rss_peak_mib(),
            max,
            half: Some(half),
            at_10k,
            landed_per_sec: landed,
            lag_secs: lag,
        });
        child.terminate().await;
    }
    clickhouse.stop().await;
    print_table(&results);
    Ok(())
}

async fn count(ch: &clickhouse::Client) -> u64 {
    ch.query("SELECT count() FROM glimpse.events")
        .fetch_one::<u64>()
        .await
        .unwrap_or(0)
}

fn print_table(results: &[Measured]) {
    let base = results[0].max.rate();
    println!();
    println!("| run | req/s | ratio vs bare | p50 ms | p99 ms | p99.9 ms | CPU % | peak RSS MiB | p50 / p99 ms at 50 % load | RSS MiB at 10k/s (rate reached) | rows landed/s | lag after load s |");
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in results {
        let half = r
            .half
            .as_ref()
            .map(|h| format!("{:.2} / {:.2}", h.ms(50.0), h.ms(99.0)))
            .unwrap_or_else(|| "-".into());
        let at_10k = r
            .at_10k
            .map(|(rate, rss)| format!("{rss:.1} ({rate:.0}/s)"))
            .unwrap_or_else(|| "-".into());
        let landed = r
            .landed_per_sec
            .map(|l| format!("{l:.0}"))
            .unwrap_or_else(|| "-".into());
        let lag = r
            .lag_secs
            .map(|l| format!("{l:.2}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {half} | {at_10k} | {landed} | {lag} |",
            r.name,
            r.max.rate(),
            r.max.rate() / base,
            r.max.ms(50.0),
            r.max.ms(99.0),
            r.max.ms(99.9),
            r.cpu_percent,
            r.rss_peak_mib,
        );
        if r.max.errors > 0 || r.max.accepted < r.max.requests {
            println!(
                "|   ↳ {} requests, {} answered 202, {} transport errors | | | | | | | | | | | |",
                r.max.requests, r.max.accepted, r.max.errors
            );
        }
    }
}
