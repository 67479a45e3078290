//! What the query benchmark reports besides query times, per size: the cost of loading the
//! events, of keeping the rollup up to date, of storing them (disk, ClickHouse's memory), and
//! what else the machine was doing (its load average, shared with other work).

use std::time::Instant;

use glimpse_core::config::ClusterName;
use glimpse_query::rollup::{RefreshReport, Upkeep};

use crate::generate::Generator;

/// Rows per `INSERT` (and per generated chunk): the benchmark's memory is this many rows,
/// whatever the size (about 0.8 KB each before they are sent).
pub const CHUNK_ROWS: usize = 500_000;

/// The free space of the filesystem holding `path`, in bytes.
pub fn free_bytes(path: &std::path::Path) -> anyhow::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// ClickHouse's memory: resident now and at its peak so far (MiB, from /proc).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

pub fn memory(pid: Option<u32>) -> Memory {
    let status = pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .unwrap_or_default();
    let mib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(f64::NAN)
    };
    Memory {
        rss_mib: mib("VmRSS:"),
        peak_rss_mib: mib("VmHWM:"),
    }
}

/// The memory of several ClickHouse servers (a cluster's), summed; the peaks are each server's
/// own, so their sum is an upper bound of the peak of the sum.
pub fn memory_of(pids: &[u32]) -> Memory {
    pids.iter()
        .map(|&pid| memory(Some(pid)))
        .fold(Memory::default(), |sum, m| Memory {
            rss_mib: sum.rss_mib + m.rss_mib,
            peak_rss_mib: sum.peak_rss_mib + m.peak_rss_mib,
        })
}

/// Bytes on disk of a table's active parts (`system.parts`; older servers call the column
/// `bytes`).
pub async fn table_bytes(client: &clickhouse::Client, table: &str) -> anyhow::Result<u64> {
    let mut last = None;
    for column in ["bytes_on_disk", "bytes"] {
        match client
            .query(&format!(
                "SELECT toUInt64(sum({column})) FROM system.parts \
                 WHERE database = 'glimpse' AND table = ? AND active"
            ))
            .bind(table)
            .fetch_one::<u64>()
            .await
        {
            Ok(bytes) => return Ok(bytes),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no bytes column")))
}

/// The rollup's upkeep at one size, as a running query service does it.
#[derive(Debug, Clone, Default)]
pub struct UpkeepFigures {
    /// The first refresh: every event read, every settled day built.
    pub build_secs: f64,
    pub days_built: usize,
    /// A refresh right after, nothing changed.
    pub noop_secs: f64,
    pub noop_days_checked: usize,
    /// A refresh without part marks, nothing changed: every event's fingerprint read (what
    /// each refresh cost before the marks, and what a restarted service's first one costs).
    pub full_noop_secs: f64,
    /// A refresh after a few late visits landed on one settled day.
    pub one_day_secs: f64,
    pub one_day_checked: usize,
    pub one_day_built: usize,
    pub late_rows: u64,
}

/// Builds the rollup with a fresh [`Upkeep`] (the first refresh of a service), then times a
/// no-op refresh, a full-fingerprint one, and one after late visits on one day 10 days ago;
/// on one server or, with `cluster`, as a query service in cluster mode does it.
pub async fn measure_upkeep(
    client: &clickhouse::Client,
    cluster: Option<&ClusterName>,
    generator: &mut Generator,
    now: u32,
) -> anyhow::Result<UpkeepFigures> {
    let mut upkeep = Upkeep::default();
    let mut figures = UpkeepFigures::default();
    let timed = |started: Instant| started.elapsed().as_secs_f64();

    let started = Instant::now();
    let built = upkeep
        .refresh_on(client, "glimpse", cluster, i64::from(now))
        .await?;
    figures.build_secs = timed(started);
    figures.days_built = built.days_built.len();
    anyhow::ensure!(
        built.read_all,
        "a new upkeep's first refresh reads every event"
    );

    let started = Instant::now();
    let noop: RefreshReport = upkeep
        .refresh_on(client, "glimpse", cluster, i64::from(now))
        .await?;
    figures.noop_secs = timed(started);
    figures.noop_days_checked = noop.days_checked;
    anyhow::ensure!(
        noop.days_built.is_empty(),
        "a refresh with nothing changed rebuilt {:?}",
        noop.days_built
    );

    let started = Instant::now();
    let full =
        glimpse_query::rollup::refresh_on(client, "glimpse", cluster, i64::from(now)).await?;
    figures.full_noop_secs = timed(started);
    anyhow::ensure!(full.days_built.is_empty(), "{:?}", full.days_built);

    // Late visits on one settled day (noon, 10 days ago), landing as one insert.
    let day_start = (now / 86_400 - 10) * 86_400;
    let mut late = Vec::new();
    for i in 0..20 {
        figures.late_rows += generator.late_visit(day_start + 43_200 + i * 60, &mut late);
    }
    crate::query::insert(client, &late).await?;
    let started = Instant::now();
    let one_day = upkeep
        .refresh_on(client, "glimpse", cluster, i64::from(now))
        .await?;
    figures.one_day_secs = timed(started);
    figures.one_day_checked = one_day.days_checked;
    figures.one_day_built = one_day.days_built.len();
    anyhow::ensure!(
        one_day.days_built.len() == 1,
        "late visits on one day rebuilt {:?}",
        one_day.days_built
    );
    Ok(figures)
}
