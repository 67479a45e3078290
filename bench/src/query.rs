//! The query benchmark: realistic events (`generate`: power-law pages and sources, many
//! visitors and visits, 90 days, 3 sites) written straight into ClickHouse in bounded chunks,
//! then every dashboard query and a funnel timed through the stats API, p50/p95 over repeated
//! runs, at growing data sizes (the scaling curve), with the cost of loading, storing and
//! keeping up the rollup beside them (`scale`). With `--cluster`, the same again on the
//! loopback cluster (2 shards × 2 replicas, `store`) after one server, in the same run, and
//! the two side by side.

use std::time::{Duration, Instant};

use glimpse_core::config::Config;
use glimpse_core::schema::EventRow;
use glimpse_core::site::Site;

use crate::generate::{Generator, SITES, SOURCES};
use crate::scale::{self, Memory, UpkeepFigures, CHUNK_ROWS};
use crate::store::Store;

pub async fn insert(client: &clickhouse::Client, rows: &[EventRow]) -> anyhow::Result<()> {
    let client = client.clone().with_database("glimpse");
    for chunk in rows.chunks(CHUNK_ROWS) {
        let mut insert = client.insert::<EventRow>("events").await?;
        for row in chunk {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    Ok(())
}

/// (p50, p95) ms of each dashboard query.
type Timings = Vec<(f64, f64)>;

/// Results at one data size.
struct SizeResult {
    events: u64,
    /// Seconds generating and inserting this size's new events (`new_events`).
    new_events: u64,
    generate_secs: f64,
    insert_secs: f64,
    upkeep: UpkeepFigures,
    /// Bytes on disk of the events and of the rollup.
    events_bytes: u64,
    rollup_bytes: u64,
    /// ClickHouse's memory after the inserts and at the end of the size's measurements.
    memory_loaded: Memory,
    memory_end: Memory,
    /// Load averages at the start and the end of the size.
    load: (String, String),
    /// Through the API with no rollup (every question reads the events; skipped above
    /// `--baseline-max-size`), then with it.
    events_only: Option<Timings>,
    with_rollup: Timings,
    /// ClickHouse counting the period's rows, straight.
    floor: (f64, f64),
    /// The same statements on current ClickHouse (chdb): version, events only, with rollup.
    chdb: Option<(String, Timings, Timings)>,
}

/// The dashboard's queries, as stats API paths (site and key added per call).
const QUERIES: &[(&str, &str)] = &[
    ("aggregate + compare", "aggregate?period=30d&metrics=visitors,visits,pageviews,bounce_rate,visit_duration&compare=previous_period"),
    ("timeseries 30d", "timeseries?period=30d&metrics=visitors,pageviews"),
    // The dashboard compares by default: the chart's comparison line and a breakdown's
    // change column (its second step reads the page's keys in the previous period).
    ("timeseries 30d + compare", "timeseries?period=30d&metrics=visitors&comparison=previous_period"),
    ("breakdown source + compare", "breakdown?period=30d&property=visit:source&metrics=visitors&limit=10&comparison=previous_period"),
    ("breakdown page", "breakdown?period=30d&property=event:page&metrics=visitors,pageviews&limit=10"),
    ("breakdown entry page", "breakdown?period=30d&property=visit:entry_page&metrics=visitors,bounce_rate&limit=10"),
    ("breakdown exit page", "breakdown?period=30d&property=visit:exit_page&metrics=visitors&limit=10"),
    ("breakdown source", "breakdown?period=30d&property=visit:source&metrics=visitors,visits&limit=10"),
    ("breakdown country", "breakdown?period=30d&property=visit:country&metrics=visitors&limit=10"),
    ("breakdown device", "breakdown?period=30d&property=visit:device&metrics=visitors&limit=10"),
    ("breakdown browser", "breakdown?period=30d&property=visit:browser&metrics=visitors&limit=10"),
    ("filtered: country DE, pages", "breakdown?period=30d&property=event:page&metrics=visitors&filters=visit:country%3D%3DDE&limit=10"),
];

/// The same questions through Stats API v2 (`POST /api/v2/query`), timed in the same run: a
/// v2 body goes through the same plan, so the difference is the answer's shape.
const V2_QUERIES: &[(&str, &str)] = &[
    (
        "v2 aggregate + compare",
        r#"{"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "date_range": "30d", "include": {"comparisons": {"mode": "previous_period"}}}"#,
    ),
    (
        "v2 timeseries 30d",
        r#"{"metrics": ["visitors", "pageviews"], "date_range": "30d", "dimensions": ["time:day"]}"#,
    ),
    (
        "v2 timeseries 30d + compare",
        r#"{"metrics": ["visitors"], "date_range": "30d", "dimensions": ["time:day"], "include": {"comparisons": {"mode": "previous_period"}}}"#,
    ),
    (
        "v2 breakdown source + compare",
        r#"{"metrics": ["visitors"], "date_range": "30d", "dimensions": ["visit:source"], "pagination": {"limit": 10}, "include": {"comparisons": {"mode": "previous_period"}}}"#,
    ),
    (
        "v2 breakdown page",
        r#"{"metrics": ["visitors", "pageviews"], "date_range": "30d", "dimensions": ["event:page"], "pagination": {"limit": 10}}"#,
    ),
    (
        "v2 breakdown entry page",
        r#"{"metrics": ["visitors", "bounce_rate"], "date_range": "30d", "dimensions": ["visit:entry_page"], "pagination": {"limit": 10}}"#,
    ),
    (
        "v2 breakdown exit page",
        r#"{"metrics": ["visitors"], "date_range": "30d", "dimensions": ["visit:exit_page"], "pagination": {"limit": 10}}"#,
    ),
    (
        "v2 breakdown source",
        r#"{"metrics": ["visitors", "visits"], "date_range": "30d", "dimensions": ["visit:source"], "pagination": {"limit": 10}}"#,
    ),
    (
        "v2 breakdown country",
        r#"{"metrics": ["visitors"], "date_range": "30d", "dimensions": ["visit:country"], "pagination": {"limit": 10}}"#,
    ),
    (
        "v2 breakdown device",
        r#"{"metrics": ["visitors"], "date_range": "30d", "dimensions": ["visit:device"], "pagination": {"limit": 10}}"#,
    ),
    (
        "v2 breakdown browser",
        r#"{"metrics": ["visitors"], "date_range": "30d", "dimensions": ["visit:browser"], "pagination": {"limit": 10}}"#,
    ),
    (
        "v2 filtered: country DE, pages",
        r#"{"metrics": ["visitors"], "date_range": "30d", "dimensions": ["event:page"], "filters": [["is", "visit:country", ["DE"]]], "pagination": {"limit": 10}}"#,
    ),
];

/// A 4-step funnel over 30 days (`POST /api/v2/funnel`): pages of the generated power law
/// (one by its pattern) and the generated custom event, counted in order within a visit. It
/// reads the events (the rollup does not answer funnels).
const FUNNEL: (&str, &str) = (
    "v2 funnel, 4 steps, 30d",
    r#"{"date_range": "30d", "steps": [{"page": "/page/0"}, {"page": "/page/1*"}, {"event": "Signup"}, {"page": "/page/2"}]}"#,
);

/// Every timed query's name: v1's, then v2's, then the funnel.
fn names() -> impl Iterator<Item = &'static str> {
    QUERIES
        .iter()
        .chain(V2_QUERIES)
        .chain([&FUNNEL])
        .map(|(name, _)| *name)
}

/// A v2 body for the largest site.
fn v2_body(body: &str) -> anyhow::Result<serde_json::Value> {
    let mut body: serde_json::Value = serde_json::from_str(body)?;
    body["site_id"] = serde_json::json!("example.com");
    Ok(body)
}

/// What `glimpse-bench query` measures and how.
pub struct Options<'a> {
    /// Stored events at which to measure (cumulative).
    pub sizes: &'a [u64],
    pub repeats: usize,
    /// A Python with chdb, to time the statements on current ClickHouse too.
    pub chdb: Option<&'a std::path::Path>,
    /// Up to which size to time the queries without the rollup too (the baseline).
    pub baseline_max_size: u64,
    /// Up to which size to time the statements on chdb too.
    pub chdb_max_size: u64,
    /// Stop before the free disk space falls under this many bytes.
    pub min_free_bytes: u64,
    /// The query service's `sampling_threshold_rows`.
    pub sampling_threshold_rows: u64,
    /// Measure on the loopback cluster too, after one server (chdb: one server's data only).
    pub cluster: bool,
}

pub async fn run(options: Options<'_>) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    let stores: &[bool] = if options.cluster {
        &[false, true]
    } else {
        &[false]
    };
    for &cluster in stores {
        runs.push(run_on(cluster, &options).await?);
    }
    if let [(_, single), (_, cluster)] = &runs[..] {
        print_comparison(single, cluster);
    }
    Ok(())
}

/// Every size on one server, or on the cluster: the store's name and its results.
async fn run_on(
    cluster: bool,
    options: &Options<'_>,
) -> anyhow::Result<(&'static str, Vec<SizeResult>)> {
    let &Options {
        sizes,
        repeats,
        chdb,
        baseline_max_size,
        chdb_max_size,
        min_free_bytes,
        sampling_threshold_rows,
        cluster: _,
    } = options;
    let work = tempfile::tempdir()?;
    let store = Store::start(cluster, &work.path().join("clickhouse")).await?;
    let client = store.client();
    let on_cluster = store.cluster();
    glimpse_core::schema::migrate_on(&client, "glimpse", on_cluster.as_ref()).await?;
    let config = Config {
        sites: SITES.iter().map(|s| Site::new(*s)).collect(),
        query: glimpse_core::config::QueryConfig {
            // Built below, after each size is loaded.
            rollup_interval_secs: 0,
            sampling_threshold_rows,
            ..Default::default()
        },
        ..store.config()
    };
    let (key, _) =
        glimpse_query::auth::create_key(&client, "glimpse", &config, "*", "bench").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(glimpse_query::serve(
        config,
        listener,
        std::future::pending::<()>(),
    ));
    println!(
        "{}: machine: {} cores, {}; load average {} at the start",
        store.name(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        crate::process::memory_description(),
        scale::load_average()
    );

    let now = glimpse_core::clock::unix_now();
    let mut generator = Generator::new(now);
    let mut stored = 0u64;
    let mut table: Vec<SizeResult> = Vec::new();
    for &size in sizes {
        let load_start = scale::load_average();
        let baseline = size <= baseline_max_size;
        let new_events = size.saturating_sub(stored);
        // Generated and inserted a chunk at a time: memory is a chunk, whatever the size.
        let (mut generate_secs, mut insert_secs) = (0.0, 0.0);
        let mut rows = Vec::with_capacity(CHUNK_ROWS + 8);
        let mut remaining = new_events;
        while remaining > 0 {
            let free = scale::free_bytes(work.path())?;
            anyhow::ensure!(
                free >= min_free_bytes,
                "stopped at {} events: {} GB free on the disk, under the {} GB floor",
                stored + new_events - remaining,
                free / 1_000_000_000,
                min_free_bytes / 1_000_000_000
            );
            rows.clear();
            let started = Instant::now();
            remaining -= generator.chunk(CHUNK_ROWS, remaining, &mut rows);
            generate_secs += started.elapsed().as_secs_f64();
            let started = Instant::now();
            insert(&client, &rows).await?;
            insert_secs += started.elapsed().as_secs_f64();
        }
        drop(rows);
        println!(
            "{size} events: {new_events} new ones generated in {generate_secs:.1} s, inserted in \
             {insert_secs:.1} s ({:.0} events/s)",
            new_events as f64 / insert_secs
        );
        stored = size;
        store.optimize_events().await;
        let memory_loaded = scale::memory_of(&store.pids());

        // The baseline of the same run: no rollup, every question reads the events.
        for table in ["rollup_daily", "rollup_days"] {
            store.truncate(table).await?;
        }
        let events_only = if baseline {
            Some(time_api(&origin, &key, repeats).await?)
        } else {
            None
        };
        // The rollup as a starting query service builds it (every day whose visits have
        // ended), then its upkeep.
        let upkeep =
            scale::measure_upkeep(&client, on_cluster.as_ref(), &mut generator, now).await?;
        println!(
            "{size} events: rollup of {} site days built in {:.1} s; upkeep: no-op {:.2} s \
             ({} days read), full-fingerprint no-op {:.2} s, one day changed {:.2} s ({} days \
             read, {} rebuilt)",
            upkeep.days_built,
            upkeep.build_secs,
            upkeep.noop_secs,
            upkeep.noop_days_checked,
            upkeep.full_noop_secs,
            upkeep.one_day_secs,
            upkeep.one_day_checked,
            upkeep.one_day_built
        );
        let with_rollup = time_api(&origin, &key, repeats).await?;
        // The questions the service answers from a sample at this size (over its
        // `sampling_threshold_rows`, by default 10 M events in the period): sampled against
        // exact, time and error.
        let sampled = crate::sampled::measure(&origin, &key, QUERIES, repeats).await?;
        crate::sampled::print(size, &sampled);
        // The floor, measured in the same run: ClickHouse counting the period's rows of the
        // site, straight (no API), the least a question over the events must do.
        let mut samples = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t = Instant::now();
            client
                .query(
                    "SELECT count() FROM glimpse.events WHERE site = 'example.com' \
                     AND timestamp >= now() - INTERVAL 30 DAY",
                )
                .fetch_one::<u64>()
                .await?;
            samples.push(t.elapsed());
        }
        let floor = percentiles(&mut samples);
        let events_bytes = store.table_bytes("events").await?;
        let rollup_bytes =
            store.table_bytes("rollup_daily").await? + store.table_bytes("rollup_days").await?;
        println!(
            "{size} events: {events_bytes} bytes of events on disk ({:.1} per event), \
             {rollup_bytes} of rollup",
            events_bytes as f64 / size as f64
        );
        let chdb = match chdb {
            Some(python) if size <= chdb_max_size && !cluster => {
                let measured =
                    time_on_chdb(python, &client, work.path(), now, repeats, baseline).await?;
                println!(
                    "{size} events on ClickHouse {} (chdb): measured",
                    measured.0
                );
                Some(measured)
            }
            _ => None,
        };
        table.push(SizeResult {
            events: size,
            new_events,
            generate_secs,
            insert_secs,
            upkeep,
            events_bytes,
            rollup_bytes,
            memory_loaded,
            memory_end: scale::memory_of(&store.pids()),
            load: (load_start, scale::load_average()),
            events_only,
            with_rollup,
            floor,
            chdb,
        });
        // After each size, so that a long run's first sizes are on record if a later one fails.
        print_report(store.name(), &table);
    }
    server.abort();
    let name = store.name();
    store.stop().await;
    Ok((name, table))
}

fn print_report(store: &str, table: &[SizeResult]) {
    println!();
    println!(
        "{store}, ClickHouse 18.16 through the stats API, p50 / p95 ms (events only → with the \
         rollup):"
    );
    print_table(table, |r| Some((r.events_only.as_ref(), &r.with_rollup)));
    let floors: Vec<String> = table
        .iter()
        .map(|r| format!("{}: {:.0} / {:.0}", human(r.events), r.floor.0, r.floor.1))
        .collect();
    println!(
        "floor (count() of the period's rows, straight to ClickHouse): {}",
        floors.join("; ")
    );
    println!();
    println!(
        "{store}: loading, storing (one copy) and keeping up the rollup (RSS summed over the \
         ClickHouse servers):"
    );
    println!();
    println!(
        "| events | new events: generated s / inserted s (events/s) | disk bytes per event \
         (rollup MiB) | ClickHouse RSS MiB after insert / end (peak) \
         | rollup built s (site-days) | upkeep no-op s (days read) | full-fingerprint no-op s \
         | one day changed s (days read / rebuilt) | load average start → end |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in table {
        let u = &r.upkeep;
        println!(
            "| {} | {} : {:.1} / {:.1} ({:.0}) | {:.1} ({:.1}) | {:.0} / {:.0} ({:.0}) \
             | {:.1} ({}) | {:.2} ({}) | {:.2} | {:.2} ({} / {}) | {} → {} |",
            human(r.events),
            human(r.new_events),
            r.generate_secs,
            r.insert_secs,
            r.new_events as f64 / r.insert_secs,
            r.events_bytes as f64 / r.events as f64,
            r.rollup_bytes as f64 / 1_048_576.0,
            r.memory_loaded.rss_mib,
            r.memory_end.rss_mib,
            r.memory_end.peak_rss_mib,
            u.build_secs,
            u.days_built,
            u.noop_secs,
            u.noop_days_checked,
            u.full_noop_secs,
            u.one_day_secs,
            u.one_day_checked,
            u.one_day_built,
            r.load.0,
            r.load.1
        );
    }
    if let Some((version, _, _)) = table.iter().find_map(|r| r.chdb.as_ref()) {
        println!();
        println!(
            "The same statements on ClickHouse {version}, in-process (chdb), same data and cores; \
             a request's statements one after another, no HTTP (events only → with the rollup):"
        );
        print_table(table, |r| {
            r.chdb
                .as_ref()
                .map(|(_, a, b)| ((!a.is_empty()).then_some(a), b))
        });
    }
}

/// One server and the cluster side by side at each size measured on both: p50 / p95 ms over
/// the events only (where both were timed) and with the rollup, and the p95 ratio cluster ÷
/// one server.
fn print_comparison(single: &[SizeResult], cluster: &[SizeResult]) {
    let cell = |(p50, p95): (f64, f64)| format!("{p50:.0} / {p95:.0}");
    let ratio = |one: (f64, f64), two: (f64, f64)| format!("{:.2}", two.1 / one.1);
    for (one, two) in single.iter().zip(cluster) {
        println!();
        println!(
            "{} events, p50 / p95 ms: one server beside the cluster (2 shards × 2 replicas), \
             same run; ratio = cluster p95 ÷ one server's p95. Load average: one server {} → {}, \
             cluster {} → {}",
            human(one.events),
            one.load.0,
            one.load.1,
            two.load.0,
            two.load.1
        );
        let baseline = one.events_only.as_ref().zip(two.events_only.as_ref());
        let mut header = "| query |".to_string();
        if baseline.is_some() {
            header.push_str(" 1 server, events only | cluster, events only | ratio |");
        }
        header.push_str(" 1 server, with rollup | cluster, with rollup | ratio |");
        println!("{header}");
        println!(
            "| --- |{}",
            " ---: |".repeat(header.matches('|').count() - 2)
        );
        for (i, name) in names().enumerate() {
            let mut row = format!("| {name} |");
            if let Some((a, b)) = baseline {
                row.push_str(&format!(
                    " {} | {} | {} |",
                    cell(a[i]),
                    cell(b[i]),
                    ratio(a[i], b[i])
                ));
            }
            let (a, b) = (one.with_rollup[i], two.with_rollup[i]);
            row.push_str(&format!(" {} | {} | {} |", cell(a), cell(b), ratio(a, b)));
            println!("{row}");
        }
        println!(
            "floor (count() of the period's rows, straight): one server {}, cluster {}, ratio {}",
            cell(one.floor),
            cell(two.floor),
            ratio(one.floor, two.floor)
        );
    }
}

/// Times every dashboard query through the API, v1's then v2's, then the funnel: (p50, p95) ms
/// each. A query answered other than `200` is timed no further: its figures are NaN and the
/// answer is printed (on the cluster some fail, and the others are still worth timing).
async fn time_api(origin: &str, key: &str, repeats: usize) -> anyhow::Result<Timings> {
    let v1 = QUERIES.iter().map(|(name, path)| {
        let url = format!("{origin}/api/v1/stats/{path}&site_id=example.com");
        anyhow::Ok((*name, url, None))
    });
    let v2 = V2_QUERIES.iter().map(|(name, body)| {
        let body = serde_json::to_vec(&v2_body(body)?)?;
        anyhow::Ok((*name, format!("{origin}/api/v2/query"), Some(body)))
    });
    let funnel = std::iter::once(FUNNEL).map(|(name, body)| {
        let body = serde_json::to_vec(&v2_body(body)?)?;
        anyhow::Ok((name, format!("{origin}/api/v2/funnel"), Some(body)))
    });
    let mut timings = Vec::new();
    for request in v1.chain(v2).chain(funnel) {
        let (name, url, body) = request?;
        let mut samples = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t = Instant::now();
            let status = http_request(&url, key, body.as_deref()).await?;
            if status != 200 {
                println!("{name}: {url} answered {status}; not timed");
                samples.clear();
                break;
            }
            samples.push(t.elapsed());
        }
        timings.push(if samples.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            percentiles(&mut samples)
        });
    }
    Ok(timings)
}

/// A Markdown table: a row per query, per size "events only → with rollup" (p50 / p95; the
/// rollup's alone without a baseline), and the p95 speed-up at the largest size.
fn print_table(
    table: &[SizeResult],
    pick: impl Fn(&SizeResult) -> Option<(Option<&Timings>, &Timings)>,
) {
    let sizes: Vec<(&SizeResult, (Option<&Timings>, &Timings))> = table
        .iter()
        .filter_map(|r| pick(r).map(|t| (r, t)))
        .collect();
    let header: Vec<String> = sizes
        .iter()
        .map(|(r, _)| format!("{} events", human(r.events)))
        .collect();
    println!("| query | {} | p95 speed-up |", header.join(" | "));
    println!("| --- |{} ---: |", " ---: |".repeat(sizes.len()));
    for (i, name) in names().enumerate() {
        let cells: Vec<String> = sizes
            .iter()
            .map(|(_, (plain, rolled))| match plain {
                Some(plain) => format!(
                    "{:.0} / {:.0} → {:.0} / {:.0}",
                    plain[i].0, plain[i].1, rolled[i].0, rolled[i].1
                ),
                None => format!("{:.0} / {:.0}", rolled[i].0, rolled[i].1),
            })
            .collect();
        let speedup = sizes
            .last()
            .and_then(|(_, (plain, rolled))| plain.map(|plain| plain[i].1 / rolled[i].1))
            .map(|s| format!("{s:.1}×"))
            .unwrap_or_else(|| "-".into());
        println!("| {name} | {} | {speedup} |", cells.join(" | "));
    }
}

/// Times the dashboard's statements on current ClickHouse through chdb
/// (`bench/chdb_queries.py`), over the events and rollup stored so far, exported from the
/// 18.16 server (gzip-compressed: a 100 M-event export would take tens of GB raw): the server
/// version and (p50, p95) ms per query, over the events only (empty without `baseline`) and
/// with the rollup.
async fn time_on_chdb(
    python: &std::path::Path,
    client: &clickhouse::Client,
    work: &std::path::Path,
    now: u32,
    repeats: usize,
    baseline: bool,
) -> anyhow::Result<(String, Timings, Timings)> {
    use anyhow::Context;
    let dir = work.join("chdb");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for table in ["events", "rollup_daily", "rollup_days"] {
        let mut export = client
            .query(&format!("SELECT * FROM glimpse.{table}"))
            .fetch_bytes("Native")?;
        let file = std::fs::File::create(dir.join(format!("{table}.native.gz")))?;
        let mut file = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        while let Some(chunk) = export.next().await? {
            std::io::Write::write_all(&mut file, &chunk)?;
        }
        file.finish()?;
    }
    let today = i64::from(now) / 86_400;
    let rolled =
        glimpse_query::rollup::rolled_days(client, "glimpse", SITES[0], today - 400, today).await?;
    anyhow::ensure!(!rolled.is_empty(), "no rolled days to time on chdb");

    let schema =
        glimpse_core::schema::migration_statements(glimpse_core::schema::Flavor::Modern, "glimpse");
    std::fs::write(dir.join("schema.json"), serde_json::to_vec(&schema)?)?;
    let now = jiff::Timestamp::from_second(i64::from(now))?;
    // Each query twice: over the events only (with a baseline), then with the rollup.
    let events_only = if baseline {
        dashboard_statements(now, &[])?
    } else {
        Vec::new()
    };
    let queries: Vec<_> = events_only
        .into_iter()
        .chain(dashboard_statements(now, &rolled)?)
        .map(|(name, statements)| serde_json::json!({ "name": name, "statements": statements }))
        .collect();
    std::fs::write(dir.join("queries.json"), serde_json::to_vec(&queries)?)?;

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chdb_queries.py");
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .arg(&dir)
        .arg(repeats.to_string())
        .output()
        .await
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    let mut version = String::new();
    let mut figures = Vec::new();
    for line in String::from_utf8(output.stdout)?.lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if let Some(v) = value["version"].as_str() {
            version = v.to_string();
        } else {
            figures.push((
                value["p50_ms"].as_f64().unwrap_or(f64::NAN),
                value["p95_ms"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    let count = names().count();
    let expected = if baseline { 2 * count } else { count };
    anyhow::ensure!(
        figures.len() == expected,
        "chdb answered {} queries",
        figures.len()
    );
    let with_rollup = figures.split_off(expected - count);
    Ok((version, figures, with_rollup))
}

/// The exact statements the stats API sends for each dashboard query (largest site, UTC),
/// v1's, v2's, then the funnel's. A breakdown's comparison is a second step on the page's keys: here the
/// generated sources, a page of them.
pub fn dashboard_statements(
    now: jiff::Timestamp,
    rolled: &[i64],
) -> anyhow::Result<Vec<(&'static str, Vec<String>)>> {
    use anyhow::Context;
    use glimpse_query::plan::Request;
    let site = glimpse_core::site::Site::new("example.com");
    let page_keys: Vec<String> = SOURCES
        .iter()
        .map(|s| if s.is_empty() { "Direct / None" } else { s }.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // The request's plan, as the handlers build it, with `rolled` as its lookup's answer.
    let statements = |name: &str, request: Result<Request, glimpse_query::error::ApiError>| {
        let request = request.map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let mut texts = request
            .stats_plan("glimpse", 0, rolled)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
            .texts();
        if let Some(compared) = request.breakdown_comparison("glimpse", 0, rolled, &page_keys) {
            texts.push(compared.stats.final_text());
        }
        anyhow::Ok(texts)
    };
    let mut queries = Vec::new();
    for (name, path) in QUERIES {
        let (endpoint, query) = path.split_once('?').context("query path")?;
        let endpoint = match endpoint {
            "aggregate" => glimpse_query::params::Endpoint::Aggregate,
            "timeseries" => glimpse_query::params::Endpoint::Timeseries,
            _ => glimpse_query::params::Endpoint::Breakdown,
        };
        let mut params: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        params.insert("site_id".into(), "example.com".into());
        let request = Request::new(endpoint, &params, site.clone(), now);
        queries.push((*name, statements(name, request)?));
    }
    for (name, body) in V2_QUERIES {
        let body = v2_body(body)?;
        let request = glimpse_query::v2::parse(&body)
            .and_then(|query| glimpse_query::v2::translate(&query, site.clone(), now));
        queries.push((*name, statements(name, request)?));
    }
    let body = v2_body(FUNNEL.1)?;
    let request = glimpse_query::funnel::parse(&body, &site, None, now)
        .map_err(|e| anyhow::anyhow!("{}: {e}", FUNNEL.0))?;
    let funnel = glimpse_query::funnel::statement("glimpse", &site, &request).final_text();
    queries.push((FUNNEL.0, vec![funnel]));
    Ok(queries)
}

fn human(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{} M", n / 1_000_000)
    } else {
        format!("{} k", n / 1000)
    }
}

fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.95))
}

/// A GET, or with `body` a JSON POST; the answer's status.
async fn http_request(url: &str, key: &str, body: Option<&[u8]>) -> anyhow::Result<u16> {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = hyper::Request::builder()
        .uri(url)
        .header("authorization", format!("Bearer {key}"));
    let request = match body {
        Some(body) => request
            .method("POST")
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::copy_from_slice(body)))?,
        None => request.method("GET").body(Full::default())?,
    };
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}
