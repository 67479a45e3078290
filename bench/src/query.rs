//! The query benchmark: realistic events (power-law pages and sources, many visitors and
//! visits, 90 days, 3 sites) written straight into ClickHouse in large batches, then every
//! dashboard query timed through the stats API, p50/p95 over repeated runs, at growing data
//! sizes (the scaling curve).

use std::time::{Duration, Instant};

use glimpse_core::config::Config;
use glimpse_core::schema::EventRow;
use glimpse_core::site::Site;

const SITES: [&str; 3] = ["example.com", "shop.example", "blog.example"];
const DAYS: u32 = 90;

/// A deterministic generator (xorshift): the same data every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A power-law pick in 0..n: low indices much more likely (Zipf-like).
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) - 1.0) as usize % n
    }
}

const SOURCES: [&str; 12] = [
    "",
    "Google",
    "",
    "DuckDuckGo",
    "Hacker News",
    "Reddit",
    "GitHub",
    "Bing",
    "X (Twitter)",
    "newsletter",
    "LinkedIn",
    "Facebook",
];
const COUNTRIES: [&str; 10] = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "NL", "CA", "SE"];
const BROWSERS: [&str; 5] = ["Chrome", "Safari", "Firefox", "Edge", "Samsung Internet"];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];

/// Visits whose events are written, `count` events in total, ending now.
fn generate(rng: &mut Rng, count: u64, now: u32, out: &mut Vec<EventRow>) {
    let start = now - DAYS * 86_400;
    let mut written = 0;
    while written < count {
        let site = SITES[rng.zipf(SITES.len())];
        let person = rng.next() % 2_000_000;
        let session = rng.next();
        let mut t = start + (rng.next() % u64::from(DAYS * 86_400)) as u32;
        // As the collector assigns ids: one per person and day of the visit's start (the salt
        // rotates at midnight UTC; a visit keeps its first day's id).
        let visitor = (person ^ (u64::from(t / 86_400) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let pages = 1 + rng.zipf(8);
        let source = SOURCES[rng.zipf(SOURCES.len())];
        let country = COUNTRIES[rng.zipf(COUNTRIES.len())];
        let browser = BROWSERS[rng.zipf(BROWSERS.len())];
        let device = DEVICES[rng.zipf(DEVICES.len())];
        let visit_rows = out.len();
        for p in 0..pages {
            let page = rng.zipf(500);
            out.push(EventRow {
                site: site.into(),
                timestamp: t.min(now - 1),
                name: if p > 0 && rng.next().is_multiple_of(25) {
                    "Signup"
                } else {
                    "pageview"
                }
                .into(),
                hostname: site.into(),
                pathname: format!("/page/{page}"),
                referrer_source: if p == 0 { source } else { "" }.into(),
                visitor_id: visitor,
                session_id: session,
                browser: browser.into(),
                browser_version: "131".into(),
                os: "Linux".into(),
                device: device.into(),
                country: country.into(),
                screen_width: 1280,
                interactive: 1,
                ..EventRow::default()
            });
            t += 5 + (rng.next() % 120) as u32;
            written += 1;
            if written >= count {
                break;
            }
        }
        // The visit columns, as the collector stamps them.
        glimpse_collector::ingest::sessions::stamp_visits(&mut out[visit_rows..]);
    }
}

async fn insert(client: &clickhouse::Client, rows: &[EventRow]) -> anyhow::Result<()> {
    let client = client.clone().with_database("glimpse");
    for chunk in rows.chunks(500_000) {
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
    insert_secs: f64,
    rollup_secs: f64,
    /// Through the API with no rollup (every question reads the events), then with it.
    events_only: Timings,
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

/// Every timed query's name: v1's, then v2's.
fn names() -> impl Iterator<Item = &'static str> {
    QUERIES.iter().chain(V2_QUERIES).map(|(name, _)| *name)
}

/// A v2 body for the largest site.
fn v2_body(body: &str) -> anyhow::Result<serde_json::Value> {
    let mut body: serde_json::Value = serde_json::from_str(body)?;
    body["site_id"] = serde_json::json!("example.com");
    Ok(body)
}

pub async fn run(
    sizes: &[u64],
    repeats: usize,
    chdb: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let clickhouse = glimpse_core::db::local::LocalClickHouse::start(
        &work.path().join("clickhouse"),
        "clickhouse-server",
    )
    .await?;
    let client = clickhouse.client();
    glimpse_core::schema::migrate(&client, "glimpse").await?;
    let config = Config {
        clickhouse_url: Some(clickhouse.url().to_string()),
        clickhouse_password: clickhouse.password().into(),
        sites: SITES.iter().map(|s| Site::new(*s)).collect(),
        query: glimpse_core::config::QueryConfig {
            // Built below, after each size is loaded.
            rollup_interval_secs: 0,
            ..Default::default()
        },
        ..Config::default()
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

    let now = glimpse_core::clock::unix_now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut stored = 0u64;
    let mut table: Vec<SizeResult> = Vec::new();
    for &size in sizes {
        let mut rows = Vec::with_capacity((size - stored) as usize);
        generate(&mut rng, size - stored, now, &mut rows);
        let started = Instant::now();
        insert(&client, &rows).await?;
        let insert_secs = started.elapsed().as_secs_f64();
        println!(
            "{size} events: inserted in {insert_secs:.1} s ({:.0} ns/event)",
            insert_secs * 1e9 / (size - stored) as f64
        );
        stored = size;
        drop(rows);
        let _ = client
            .query("OPTIMIZE TABLE glimpse.events")
            .execute()
            .await;

        // The baseline of the same run: no rollup, every question reads the events.
        for table in ["rollup_daily", "rollup_days"] {
            client
                .query(&format!("TRUNCATE TABLE glimpse.{table}"))
                .execute()
                .await?;
        }
        let events_only = time_api(&origin, &key, repeats).await?;
        // The rollup as the query service keeps it: every day whose visits have ended.
        let started = Instant::now();
        let report = glimpse_query::rollup::refresh(&client, "glimpse", i64::from(now)).await?;
        let rollup_secs = started.elapsed().as_secs_f64();
        println!(
            "{size} events: rollup of {} site days built in {rollup_secs:.1} s",
            report.days_built.len()
        );
        let with_rollup = time_api(&origin, &key, repeats).await?;
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
        let chdb = match chdb {
            Some(python) => {
                let measured = time_on_chdb(python, &client, work.path(), now, repeats).await?;
                println!(
                    "{size} events on ClickHouse {} (chdb): measured",
                    measured.0
                );
                Some(measured)
            }
            None => None,
        };
        table.push(SizeResult {
            events: size,
            insert_secs,
            rollup_secs,
            events_only,
            with_rollup,
            floor,
            chdb,
        });
    }
    server.abort();
    clickhouse.stop().await;

    println!();
    println!(
        "ClickHouse 18.16 through the stats API, p50 / p95 ms (events only → with the rollup):"
    );
    print_table(&table, |r| Some((&r.events_only, &r.with_rollup)));
    let floors: Vec<String> = table
        .iter()
        .map(|r| format!("{}: {:.0} / {:.0}", human(r.events), r.floor.0, r.floor.1))
        .collect();
    println!(
        "floor (count() of the period's rows, straight to ClickHouse): {}",
        floors.join("; ")
    );
    let builds: Vec<String> = table
        .iter()
        .map(|r| format!("{}: {:.1} s", human(r.events), r.rollup_secs))
        .collect();
    println!("rollup built from nothing: {}", builds.join("; "));
    let inserts: Vec<String> = table
        .iter()
        .map(|r| format!("{}: {:.1} s", human(r.events), r.insert_secs))
        .collect();
    println!(
        "events inserted (each size's new rows): {}",
        inserts.join("; ")
    );
    if let Some((version, _, _)) = table.iter().find_map(|r| r.chdb.as_ref()) {
        println!();
        println!(
            "The same statements on ClickHouse {version}, in-process (chdb), same data and cores; \
             a request's statements one after another, no HTTP (events only → with the rollup):"
        );
        print_table(&table, |r| r.chdb.as_ref().map(|(_, a, b)| (a, b)));
    }
    Ok(())
}

/// Times every dashboard query through the API, v1's then v2's: (p50, p95) ms each.
async fn time_api(origin: &str, key: &str, repeats: usize) -> anyhow::Result<Timings> {
    let mut timings = Vec::new();
    for (_, path) in QUERIES {
        let mut samples = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let url = format!("{origin}/api/v1/stats/{path}&site_id=example.com");
            let t = Instant::now();
            let status = http_request(&url, key, None).await?;
            samples.push(t.elapsed());
            anyhow::ensure!(status == 200, "{url} answered {status}");
        }
        timings.push(percentiles(&mut samples));
    }
    let url = format!("{origin}/api/v2/query");
    for (name, body) in V2_QUERIES {
        let body = serde_json::to_vec(&v2_body(body)?)?;
        let mut samples = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t = Instant::now();
            let status = http_request(&url, key, Some(&body)).await?;
            samples.push(t.elapsed());
            anyhow::ensure!(status == 200, "{name} answered {status}");
        }
        timings.push(percentiles(&mut samples));
    }
    Ok(timings)
}

/// A Markdown table: a row per query, per size "events only → with rollup" (p50 / p95), and
/// the p95 speed-up at the largest size.
fn print_table(table: &[SizeResult], pick: impl Fn(&SizeResult) -> Option<(&Timings, &Timings)>) {
    let sizes: Vec<(&SizeResult, (&Timings, &Timings))> = table
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
            .map(|(_, (plain, rolled))| {
                format!(
                    "{:.0} / {:.0} → {:.0} / {:.0}",
                    plain[i].0, plain[i].1, rolled[i].0, rolled[i].1
                )
            })
            .collect();
        let speedup = sizes
            .last()
            .map(|(_, (plain, rolled))| plain[i].1 / rolled[i].1)
            .unwrap_or(f64::NAN);
        println!("| {name} | {} | {speedup:.1}× |", cells.join(" | "));
    }
}

/// Times the dashboard's statements on current ClickHouse through chdb
/// (`bench/chdb_queries.py`), over the events and rollup stored so far, exported from the
/// 18.16 server: the server version and (p50, p95) ms per query, over the events only and with
/// the rollup.
async fn time_on_chdb(
    python: &std::path::Path,
    client: &clickhouse::Client,
    work: &std::path::Path,
    now: u32,
    repeats: usize,
) -> anyhow::Result<(String, Timings, Timings)> {
    use anyhow::Context;
    let dir = work.join("chdb");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for table in ["events", "rollup_daily", "rollup_days"] {
        let mut export = client
            .query(&format!("SELECT * FROM glimpse.{table}"))
            .fetch_bytes("Native")?;
        let mut file = tokio::fs::File::create(dir.join(format!("{table}.native"))).await?;
        while let Some(chunk) = export.next().await? {
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
    }
    let today = i64::from(now) / 86_400;
    let rolled =
        glimpse_query::rollup::rolled_days(client, "glimpse", SITES[0], today - 400, today).await?;
    anyhow::ensure!(!rolled.is_empty(), "no rolled days to time on chdb");

    let schema =
        glimpse_core::schema::migration_statements(glimpse_core::schema::Flavor::Modern, "glimpse");
    std::fs::write(dir.join("schema.json"), serde_json::to_vec(&schema)?)?;
    let now = jiff::Timestamp::from_second(i64::from(now))?;
    // Each query twice: over the events only, then with the rollup.
    let queries: Vec<_> = dashboard_statements(now, &[])?
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
    anyhow::ensure!(
        figures.len() == 2 * count,
        "chdb answered {} queries",
        figures.len()
    );
    let with_rollup = figures.split_off(count);
    Ok((version, figures, with_rollup))
}

/// The exact statements the stats API sends for each dashboard query (largest site, UTC),
/// v1's then v2's. A breakdown's comparison is a second step on the page's keys: here the
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
