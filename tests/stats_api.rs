//! The stats API end to end against a real ClickHouse: a deterministic fixture (three sites,
//! one in Europe/Berlin across its 2026-03-29 DST change; visitors with several visits over
//! eight days; page views, custom events with properties, engagement reports) is inserted
//! directly, the query service runs in-process, and every answer is compared with numbers the
//! test computes from the fixture in plain Rust.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use common::TestClickHouse;
use glimpse_collector::ingest::sessions::stamp_visits;
use glimpse_core::schema::EventRow;
use glimpse_core::site::{Site, SiteConfig};
use glimpse_core::Config;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SITE: &str = "example.com";
const BERLIN: &str = "berlin.example";
const OTHER: &str = "other.org";
const SHARE_TOKEN: &str = "share-me-0123456789";

// ---------------------------------------------------------------------------------------------
// Fixture

/// A small deterministic generator (64-bit LCG), so the fixture is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn utc_seconds(date: &str, hour: i64, minute: i64) -> i64 {
    let d: Date = date.parse().unwrap();
    d.to_zoned(TimeZone::UTC).unwrap().timestamp().as_second() + hour * 3600 + minute * 60
}

fn fixture() -> Vec<EventRow> {
    let mut rng = Lcg(2026);
    let pages = ["/", "/pricing", "/blog/a", "/blog/b", "/docs"];
    // (referrer_source, referrer, utm_source, utm_medium, utm_campaign)
    let sources = [
        ("", "", "", "", ""),
        ("Google", "google.com/", "", "", ""),
        ("Hacker News", "news.ycombinator.com/item", "", "", ""),
        ("newsletter", "", "newsletter", "email", "spring"),
    ];
    let places = [
        ("DE", "DE-BE", "Berlin"),
        ("FR", "FR-IDF", "Paris"),
        ("US", "US-CA", "San Francisco"),
        ("", "", ""),
    ];
    let devices = [
        ("desktop", "Firefox", "128", "GNU/Linux", ""),
        ("mobile", "Chrome", "131", "Android", "15"),
        ("tablet", "Safari", "17", "iOS", "17.1"),
    ];
    let mut rows = Vec::new();
    let mut session_id = 1000u64;
    for (site, visitors, days) in [(SITE, 40u64, 8u64), (BERLIN, 15, 3), (OTHER, 5, 8)] {
        for v in 0..visitors {
            let person = (site.len() as u64) * 1_000_000 + v * 7919 + 1;
            let place = places[rng.next(places.len() as u64) as usize];
            let device = devices[rng.next(devices.len() as u64) as usize];
            for _ in 0..1 + rng.next(3) {
                session_id += 1;
                // example.com and other.org: 2026-03-24..31; berlin.example: 28..30 UTC.
                let first_day = if site == BERLIN { 28 } else { 24 };
                let day = first_day + rng.next(days);
                // As the collector assigns them: one id per person and day of the visit's
                // start (the salt rotates at midnight UTC; a visit keeps its first day's id).
                let visitor_id = person * 100 + day;
                let mut ts = utc_seconds(&format!("2026-03-{day:02}"), 0, 0)
                    + rng.next(24) as i64 * 3600
                    + rng.next(60) as i64 * 60;
                let source = sources[rng.next(sources.len() as u64) as usize];
                let mut page = pages[rng.next(pages.len() as u64) as usize];
                for i in 0..1 + rng.next(5) {
                    let mut row = EventRow {
                        site: site.into(),
                        timestamp: ts as u32,
                        name: "pageview".into(),
                        hostname: site.into(),
                        pathname: page.into(),
                        visitor_id,
                        session_id,
                        browser: device.1.into(),
                        browser_version: device.2.into(),
                        os: device.3.into(),
                        os_version: device.4.into(),
                        device: device.0.into(),
                        country: place.0.into(),
                        region: place.1.into(),
                        city: place.2.into(),
                        interactive: 1,
                        ..EventRow::default()
                    };
                    if i == 0 {
                        row.referrer_source = source.0.into();
                        row.referrer = source.1.into();
                        row.utm_source = source.2.into();
                        row.utm_medium = source.3.into();
                        row.utm_campaign = source.4.into();
                    }
                    match rng.next(6) {
                        0 if i > 0 => {
                            row.name = "Signup".into();
                            let plan = if rng.next(2) == 0 { "pro" } else { "free" };
                            row.prop_keys = vec!["plan".into()];
                            row.prop_values = vec![plan.into()];
                        }
                        1 if i > 0 => {
                            row.name = "Download".into();
                            row.interactive = 0;
                        }
                        _ => page = pages[rng.next(pages.len() as u64) as usize],
                    }
                    if row.name == "pageview" {
                        row.pathname = page.into();
                    }
                    let is_pageview = row.name == "pageview";
                    rows.push(row.clone());
                    ts += 10 + rng.next(400) as i64;
                    if is_pageview && rng.next(2) == 0 {
                        rows.push(EventRow {
                            name: "engagement".into(),
                            timestamp: ts as u32,
                            scroll_depth: rng.next(101) as u8,
                            engagement_ms: 1000 + rng.next(60_000) as u32,
                            prop_keys: vec![],
                            prop_values: vec![],
                            referrer_source: String::new(),
                            referrer: String::new(),
                            utm_source: String::new(),
                            utm_medium: String::new(),
                            utm_campaign: String::new(),
                            ..row
                        });
                        ts += 10 + rng.next(100) as i64;
                    }
                }
            }
        }
    }
    // Two visits across midnight UTC, one past the end of March: their events count on the day
    // they happen, the visits on the day they started.
    for (n, day, next) in [
        (1u64, "2026-03-27", "2026-03-28"),
        (2, "2026-03-31", "2026-04-01"),
    ] {
        session_id += 1;
        let start_day: u64 = day[8..].parse().unwrap();
        for (i, ts) in [
            utc_seconds(day, 23, 50),
            utc_seconds(day, 23, 58),
            utc_seconds(next, 0, 5),
        ]
        .into_iter()
        .enumerate()
        {
            rows.push(EventRow {
                site: SITE.into(),
                timestamp: ts as u32,
                name: "pageview".into(),
                hostname: SITE.into(),
                pathname: pages[i].into(),
                visitor_id: (90_000_000 + n) * 100 + start_day,
                session_id,
                browser: "Firefox".into(),
                browser_version: "128".into(),
                os: "GNU/Linux".into(),
                device: "desktop".into(),
                interactive: 1,
                ..EventRow::default()
            });
        }
    }
    // The visit columns, as the collector stamps them on rows it receives.
    stamp_visits(&mut rows);
    rows
}

// ---------------------------------------------------------------------------------------------
// Expected numbers, computed from the fixture in plain Rust

/// A visit, from all its events (of any period): properties, start and figures computed
/// directly from the events, not from the visit columns the collector stamps.
struct Visit<'a> {
    visitor: u64,
    props: HashMap<&'static str, String>,
    /// The first event's time (engagement reports excluded).
    start: i64,
    pageviews: u64,
    bounce: bool,
    duration: i64,
    /// Every row of the visit, engagement reports included.
    rows: Vec<&'a EventRow>,
}

fn or_none(s: &str, none: &str) -> String {
    if s.is_empty() {
        none.into()
    } else {
        s.into()
    }
}

fn visits<'a>(events: &[&'a EventRow]) -> HashMap<u64, Visit<'a>> {
    let mut by_session: BTreeMap<u64, Vec<&EventRow>> = BTreeMap::new();
    for e in events {
        by_session.entry(e.session_id).or_default().push(e);
    }
    by_session
        .into_iter()
        .map(|(id, mut rows)| {
            rows.sort_by_key(|e| e.timestamp);
            let evs: Vec<&EventRow> = rows
                .iter()
                .copied()
                .filter(|e| e.name != "engagement")
                .collect();
            let first = evs[0];
            let pvs: Vec<&&EventRow> = evs.iter().filter(|e| e.name == "pageview").collect();
            let mut props = HashMap::new();
            props.insert("entry_page", or_none(&first.pathname, "(none)"));
            props.insert(
                "exit_page",
                or_none(pvs.last().map_or("", |e| &e.pathname), "(none)"),
            );
            props.insert("source", or_none(&first.referrer_source, "Direct / None"));
            props.insert("referrer", or_none(&first.referrer, "Direct / None"));
            for (name, value) in [
                ("utm_source", &first.utm_source),
                ("utm_medium", &first.utm_medium),
                ("utm_campaign", &first.utm_campaign),
                ("utm_term", &first.utm_term),
                ("utm_content", &first.utm_content),
                ("country", &first.country),
                ("region", &first.region),
                ("city", &first.city),
                ("device", &first.device),
                ("browser", &first.browser),
                ("browser_version", &first.browser_version),
                ("os", &first.os),
                ("os_version", &first.os_version),
            ] {
                props.insert(name, or_none(value, "(none)"));
            }
            let interactive_events = evs
                .iter()
                .filter(|e| e.name != "pageview" && e.interactive == 1)
                .count();
            let visit = Visit {
                visitor: first.visitor_id,
                props,
                start: first.timestamp as i64,
                pageviews: pvs.len() as u64,
                bounce: pvs.len() <= 1 && interactive_events == 0,
                duration: evs.last().unwrap().timestamp as i64 - first.timestamp as i64,
                rows,
            };
            (id, visit)
        })
        .collect()
}

/// The goals configured for `SITE`: overlapping on purpose (`/blog/a` reaches two).
const GOALS: [&str; 4] = ["Signup", "Visit /pricing", "Visit /blog/*", "Visit /*"];

/// The goals an event reached, in configuration order.
fn goals_of(e: &EventRow) -> Vec<String> {
    GOALS
        .iter()
        .filter(|goal| match goal.strip_prefix("Visit ") {
            Some(pattern) => {
                e.name == "pageview"
                    && match pattern.strip_suffix('*') {
                        Some(prefix) => e.pathname.starts_with(prefix),
                        None => e.pathname == pattern,
                    }
            }
            None => e.name == **goal,
        })
        .map(|g| g.to_string())
        .collect()
}

/// The values an event has for a property: one, or for `event:goal` each goal it reached.
fn event_values(e: &EventRow, property: &str) -> Vec<String> {
    if property == "event:goal" {
        goals_of(e)
    } else {
        vec![event_value(e, property)]
    }
}

fn event_value(e: &EventRow, property: &str) -> String {
    match property {
        "event:page" => e.pathname.clone(),
        "event:name" => e.name.clone(),
        "event:hostname" => e.hostname.clone(),
        p => {
            let key = p.strip_prefix("event:props:").expect("event property");
            e.prop_keys
                .iter()
                .position(|k| k == key)
                .map_or("(none)".into(), |i| e.prop_values[i].clone())
        }
    }
}

#[derive(Clone)]
struct Filter {
    property: &'static str,
    op: &'static str,
    values: Vec<&'static str>,
}

impl Filter {
    fn new(property: &'static str, op: &'static str, values: &[&'static str]) -> Self {
        Self {
            property,
            op,
            values: values.to_vec(),
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self.op {
            "==" => self.values.contains(&value),
            "!=" => !self.values.contains(&value),
            "~" => self.values.iter().any(|v| value.contains(v)),
            _ => unreachable!(),
        }
    }

    fn query(filters: &[Filter]) -> String {
        filters
            .iter()
            .map(|f| format!("{}{}{}", f.property, f.op, f.values.join("|")))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// How expected rows are grouped.
enum Key<'a> {
    Total,
    Bucket(&'a dyn Fn(u32) -> String),
    Property(&'a str),
}

#[derive(Default, Debug, Clone)]
struct Sums {
    visitors: HashSet<u64>,
    visits: u64,
    pageviews: u64,
    events: u64,
    visit_pageviews: u64,
    bounces: u64,
    duration: i64,
    engaged_pages: u64,
    engaged_ms: u64,
    scroll_sum: u64,
}

impl Sums {
    fn metric(&self, metric: &str) -> Value {
        let ratio = |a: f64, b: u64| if b == 0 { 0.0 } else { a / b as f64 };
        match metric {
            "visitors" => json!(self.visitors.len()),
            "visits" => json!(self.visits),
            "pageviews" => json!(self.pageviews),
            "events" => json!(self.events),
            "views_per_visit" => {
                json!((ratio(self.visit_pageviews as f64, self.visits) * 100.0).round() / 100.0)
            }
            "bounce_rate" => {
                json!((ratio(self.bounces as f64, self.visits) * 100.0).round() as u64)
            }
            "visit_duration" => json!(ratio(self.duration as f64, self.visits).round() as u64),
            "time_on_page" => {
                json!((ratio(self.engaged_ms as f64, self.engaged_pages) / 1000.0).round() as u64)
            }
            "scroll_depth" => {
                json!(ratio(self.scroll_sum as f64, self.engaged_pages).round() as u64)
            }
            m => panic!("unknown metric {m}"),
        }
    }
}

const ALL_METRICS: &str = "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events,time_on_page,scroll_depth";

/// Per key: event figures from the period's events (visitors, page views, events, engagement
/// reports), and visit figures from the visits that started in the period (visits, their page
/// views, bounces, durations). Visit filters select visits (and so their events); event
/// filters select events, and visits that have a matching event. The exit page is known per
/// visit, so its breakdown and filter take the period's visits.
fn expected(
    fixture: &[EventRow],
    site: &str,
    (start, end): (i64, i64),
    filters: &[Filter],
    key: Key,
    min_group_size: usize,
) -> BTreeMap<String, Sums> {
    let site_rows: Vec<&EventRow> = fixture.iter().filter(|e| e.site == site).collect();
    let visits = visits(&site_rows);
    let in_period = |v: &Visit| (start..end).contains(&v.start);
    let visit_ok = |v: &Visit| {
        filters
            .iter()
            .all(|f| match f.property.strip_prefix("visit:") {
                Some("exit_page") => in_period(v) && f.matches(&v.props["exit_page"]),
                Some(p) => f.matches(&v.props[p]),
                None => true,
            })
    };
    let event_ok = |e: &EventRow| {
        filters.iter().all(|f| {
            if f.property.starts_with("visit:") {
                return true;
            }
            if f.property == "event:name" && e.name == "engagement" {
                return true;
            }
            if f.property == "event:goal" {
                let reached = goals_of(e);
                return match f.op {
                    "!=" => !reached.iter().any(|g| f.values.contains(&g.as_str())),
                    _ => reached.iter().any(|g| f.matches(g)),
                };
            }
            f.matches(&event_value(e, f.property))
        })
    };
    let event_filtered = filters.iter().any(|f| !f.property.starts_with("visit:"));
    let matching =
        |v: &Visit| !event_filtered || v.rows.iter().any(|e| e.name != "engagement" && event_ok(e));
    let exit_breakdown = matches!(key, Key::Property("visit:exit_page"));

    // Event figures.
    let mut event_sums: BTreeMap<String, Sums> = BTreeMap::new();
    if !exit_breakdown {
        for e in &site_rows {
            let visit = &visits[&e.session_id];
            if !(start..end).contains(&(e.timestamp as i64)) || !event_ok(e) || !visit_ok(visit) {
                continue;
            }
            let keys = match &key {
                Key::Total => vec![String::new()],
                Key::Bucket(f) => vec![f(e.timestamp)],
                Key::Property(p) => match p.strip_prefix("visit:") {
                    Some(vp) => vec![visit.props[vp].clone()],
                    None => event_values(e, p),
                },
            };
            for k in keys {
                let sums = event_sums.entry(k).or_default();
                if e.name == "engagement" {
                    sums.engaged_pages += 1;
                    sums.engaged_ms += e.engagement_ms as u64;
                    sums.scroll_sum += e.scroll_depth as u64;
                } else {
                    sums.visitors.insert(e.visitor_id);
                    sums.events += 1;
                    sums.pageviews += u64::from(e.name == "pageview");
                }
            }
        }
        // Keys with only engagement reports have no event figures.
        event_sums.retain(|_, s| s.events > 0);
    }

    // Visit figures, and every figure of the exit page breakdown.
    let mut out = event_sums;
    for visit in visits.values() {
        if !in_period(visit) || !visit_ok(visit) {
            continue;
        }
        let keys: BTreeSet<String> = match &key {
            Key::Total => [String::new()].into(),
            Key::Bucket(f) => [f(visit.start as u32)].into(),
            Key::Property(p) => match p.strip_prefix("visit:") {
                Some(vp) => [visit.props[vp].clone()].into(),
                None => visit
                    .rows
                    .iter()
                    .filter(|e| e.name != "engagement" && event_ok(e))
                    .flat_map(|e| event_values(e, p))
                    .collect(),
            },
        };
        if keys.is_empty() || !matching(visit) {
            continue;
        }
        for k in keys {
            let sums = out.entry(k).or_default();
            sums.visits += 1;
            sums.visit_pageviews += visit.pageviews;
            sums.bounces += u64::from(visit.bounce);
            sums.duration += visit.duration;
            if exit_breakdown {
                sums.visitors.insert(visit.visitor);
                sums.pageviews += visit.pageviews;
                for e in &visit.rows {
                    if e.name == "engagement" {
                        sums.engaged_pages += 1;
                        sums.engaged_ms += e.engagement_ms as u64;
                        sums.scroll_sum += e.scroll_depth as u64;
                    } else {
                        sums.events += 1;
                    }
                }
            }
        }
    }

    if min_group_size == 0 {
        return out;
    }
    let mut merged: BTreeMap<String, Sums> = BTreeMap::new();
    for (k, sums) in out {
        let k = if sums.visitors.len() >= min_group_size {
            k
        } else {
            "(other)".to_string()
        };
        let m = merged.entry(k).or_default();
        m.visitors.extend(sums.visitors);
        m.visits += sums.visits;
        m.pageviews += sums.pageviews;
        m.events += sums.events;
        m.visit_pageviews += sums.visit_pageviews;
        m.bounces += sums.bounces;
        m.duration += sums.duration;
        m.engaged_pages += sums.engaged_pages;
        m.engaged_ms += sums.engaged_ms;
        m.scroll_sum += sums.scroll_sum;
    }
    merged
}

/// Breakdown order: visitors descending, then the key.
fn sorted(rows: &BTreeMap<String, Sums>) -> Vec<(&String, &Sums)> {
    let mut rows: Vec<_> = rows.iter().collect();
    rows.sort_by(|a, b| {
        b.1.visitors
            .len()
            .cmp(&a.1.visitors.len())
            .then(a.0.cmp(b.0))
    });
    rows
}

fn local_label(tz: &str, format: &str) -> impl Fn(u32) -> String {
    let tz = TimeZone::get(tz).unwrap();
    let format = format.to_string();
    move |ts| {
        jiff::Timestamp::from_second(ts as i64)
            .unwrap()
            .to_zoned(tz.clone())
            .strftime(&format)
            .to_string()
    }
}

fn day_range(tz: &str, first: &str, last: &str) -> (i64, i64) {
    let tz = TimeZone::get(tz).unwrap();
    let first: Date = first.parse().unwrap();
    let last: Date = last.parse().unwrap();
    let start = first.to_zoned(tz.clone()).unwrap().timestamp().as_second();
    let end = last
        .tomorrow()
        .unwrap()
        .to_zoned(tz)
        .unwrap()
        .timestamp()
        .as_second();
    (start, end)
}

// ---------------------------------------------------------------------------------------------
// The service

struct Service {
    ch: TestClickHouse,
    base: String,
    /// With `min_group_size = 3`.
    k_base: String,
    http: reqwest::Client,
    key: String,
    berlin_key: String,
    operator_key: String,
    fixture: Vec<EventRow>,
    stop: CancellationToken,
}

fn config(ch: &TestClickHouse, min_group_size: u64) -> Config {
    let site = |domain: &str, tz: &str| SiteConfig {
        timezone: tz.into(),
        ..SiteConfig::new(domain)
    };
    Config {
        sites: vec![
            Site::parse(SiteConfig {
                share_token: Some(SHARE_TOKEN.into()),
                goals: GOALS.map(String::from).to_vec(),
                ..site(SITE, "UTC")
            })
            .unwrap(),
            Site::parse(site(BERLIN, "Europe/Berlin")).unwrap(),
            Site::parse(site(OTHER, "UTC")).unwrap(),
        ],
        min_group_size,
        ..ch.config()
    }
}

async fn start() -> Service {
    let ch = TestClickHouse::start().await;
    glimpse_core::schema::migrate(&ch.client, "glimpse")
        .await
        .expect("migrate");
    let fixture = fixture();
    let mut insert = ch
        .client
        .clone()
        .with_database("glimpse")
        .insert::<EventRow>("events")
        .await
        .expect("insert");
    for row in &fixture {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    let stop = CancellationToken::new();
    let mut bases = Vec::new();
    for k in [0, 3] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(glimpse_query::serve(
            config(&ch, k),
            listener,
            stop.clone().cancelled_owned(),
        ));
    }
    let cfg = config(&ch, 0);
    let key = |site: &'static str| {
        let (client, cfg) = (ch.client.clone(), cfg.clone());
        async move {
            glimpse_query::auth::create_key(&client, "glimpse", &cfg, site, "test")
                .await
                .unwrap()
                .0
        }
    };
    let (k1, k2, k3) = (key(SITE).await, key(BERLIN).await, key("*").await);
    let http = reqwest::Client::new();
    common::wait_for_200(
        &http,
        &format!("{}/ready", bases[0]),
        Duration::from_secs(30),
    )
    .await;
    println!(
        "fixture: {} events, {} visits",
        fixture.len(),
        fixture
            .iter()
            .map(|e| e.session_id)
            .collect::<HashSet<_>>()
            .len()
    );
    Service {
        ch,
        base: bases[0].clone(),
        k_base: bases[1].clone(),
        http,
        key: k1,
        berlin_key: k2,
        operator_key: k3,
        fixture,
        stop,
    }
}

impl Service {
    async fn get_with(
        &self,
        base: &str,
        key: Option<&str>,
        path: &str,
        params: &[(&str, &str)],
    ) -> (u16, String) {
        let url = reqwest::Url::parse_with_params(&format!("{base}{path}"), params).unwrap();
        let mut request = self.http.get(url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("request");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn json(&self, path: &str, params: &[(&str, &str)]) -> Value {
        self.json_at(&self.base, &self.key, path, params).await
    }

    async fn json_at(&self, base: &str, key: &str, path: &str, params: &[(&str, &str)]) -> Value {
        let (status, body) = self.get_with(base, Some(key), path, params).await;
        assert_eq!(status, 200, "{path} {params:?}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

fn check_row(what: &str, actual: &Value, expected: &Sums, metrics: &str) {
    for m in metrics.split(',') {
        assert_eq!(
            actual[m],
            expected.metric(m),
            "{what}: metric {m}: got {actual}, expected sums {expected:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (one server and fixture for all, run in order)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_api_answers_match_the_fixture() {
    let s = start().await;
    aggregates(&s).await;
    timeseries(&s).await;
    dst_day_hourly_in_berlin(&s).await;
    breakdowns(&s).await;
    filters(&s).await;
    comparison(&s).await;
    csv(&s).await;
    k_suppression(&s).await;
    pagination_and_sort(&s).await;
    goals(&s).await;
    realtime_and_filtered_traffic(&s).await;
    auth_errors(&s).await;
    injection_attempts(&s).await;
    rollup(&s).await;
    every_generated_statement_runs(&s).await;
    s.stop.cancel();
}

const WEEK: [(&str, &str); 2] = [("period", "custom"), ("date", "2026-03-24,2026-03-31")];

async fn aggregates(s: &Service) {
    type Case<'a> = (&'a [(&'a str, &'a str)], (&'a str, &'a str));
    let cases: [Case; 4] = [
        (&WEEK, ("2026-03-24", "2026-03-31")),
        (
            &[("period", "day"), ("date", "2026-03-27")],
            ("2026-03-27", "2026-03-27"),
        ),
        (
            &[("period", "7d"), ("date", "2026-03-31")],
            ("2026-03-25", "2026-03-31"),
        ),
        (
            &[("period", "month"), ("date", "2026-03-10")],
            ("2026-03-01", "2026-03-31"),
        ),
    ];
    for (params, (first, last)) in cases {
        let mut q = vec![("site_id", SITE), ("metrics", ALL_METRICS)];
        q.extend_from_slice(params);
        let got = s.json("/api/v1/stats/aggregate", &q).await;
        let want = expected(
            &s.fixture,
            SITE,
            day_range("UTC", first, last),
            &[],
            Key::Total,
            0,
        );
        let want = want.get("").expect("events in range");
        for m in ALL_METRICS.split(',') {
            assert_eq!(got["results"][m]["value"], want.metric(m), "{params:?} {m}");
        }
        println!("aggregate {params:?}: {}", got["results"]);
    }
}

async fn timeseries(s: &Service) {
    let range = day_range("UTC", "2026-03-24", "2026-03-31");
    for (interval, format) in [
        ("date", "%Y-%m-%d"),
        ("week", "monday"),
        ("month", "%Y-%m-01"),
    ] {
        let monday = |ts: u32| {
            let d = jiff::Timestamp::from_second(ts as i64)
                .unwrap()
                .to_zoned(TimeZone::UTC)
                .date();
            let back = d.weekday().to_monday_zero_offset() as i64;
            d.checked_sub(jiff::Span::new().days(back))
                .unwrap()
                .to_string()
        };
        let plain = local_label("UTC", format);
        let label: &dyn Fn(u32) -> String = if format == "monday" { &monday } else { &plain };
        let mut q = vec![
            ("site_id", SITE),
            ("metrics", ALL_METRICS),
            ("interval", interval),
        ];
        q.extend_from_slice(&WEEK);
        let got = s.json("/api/v1/stats/timeseries", &q).await;
        let want = expected(&s.fixture, SITE, range, &[], Key::Bucket(label), 0);
        let results = got["results"].as_array().unwrap();
        let expected_buckets = match interval {
            "date" => 8,
            "week" => 2, // Monday 23rd and Monday 30th
            _ => 1,
        };
        assert_eq!(results.len(), expected_buckets, "{interval}: {got}");
        for row in results {
            let date = row["date"].as_str().unwrap();
            let sums = want
                .get(date)
                .unwrap_or_else(|| panic!("{interval}: bucket {date} not expected"));
            check_row(&format!("{interval} {date}"), row, sums, ALL_METRICS);
        }
        println!("timeseries interval={interval}: {} buckets", results.len());
    }
    // Hours of one UTC day: 24 buckets, empty ones zero.
    let got = s
        .json(
            "/api/v1/stats/timeseries",
            &[
                ("site_id", SITE),
                ("period", "day"),
                ("date", "2026-03-26"),
                ("interval", "hour"),
                ("metrics", "visitors,pageviews"),
            ],
        )
        .await;
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), 24);
    let label = local_label("UTC", "%Y-%m-%d %H:00:00");
    let want = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-26", "2026-03-26"),
        &[],
        Key::Bucket(&label),
        0,
    );
    for row in results {
        match want.get(row["date"].as_str().unwrap()) {
            Some(sums) => check_row("hour", row, sums, "visitors,pageviews"),
            None => assert_eq!(
                (row["visitors"].as_u64(), row["pageviews"].as_u64()),
                (Some(0), Some(0))
            ),
        }
    }
}

async fn dst_day_hourly_in_berlin(s: &Service) {
    let got = s
        .json_at(
            &s.base,
            &s.berlin_key,
            "/api/v1/stats/timeseries",
            &[
                ("site_id", BERLIN),
                ("period", "day"),
                ("date", "2026-03-29"),
                ("interval", "hour"),
                ("metrics", ALL_METRICS),
            ],
        )
        .await;
    let results = got["results"].as_array().unwrap();
    let labels: Vec<&str> = results
        .iter()
        .map(|r| r["date"].as_str().unwrap())
        .collect();
    // Clocks jump from 02:00 to 03:00: 23 hours, no 02:00 bucket.
    assert_eq!(labels.len(), 23, "{labels:?}");
    assert_eq!(labels[0], "2026-03-29 00:00:00");
    assert_eq!(labels[1], "2026-03-29 01:00:00");
    assert_eq!(labels[2], "2026-03-29 03:00:00");
    assert_eq!(labels[22], "2026-03-29 23:00:00");
    let label = local_label("Europe/Berlin", "%Y-%m-%d %H:00:00");
    let range = day_range("Europe/Berlin", "2026-03-29", "2026-03-29");
    assert_eq!(range.1 - range.0, 23 * 3600);
    let want = expected(&s.fixture, BERLIN, range, &[], Key::Bucket(&label), 0);
    let mut nonzero = 0;
    for row in results {
        let date = row["date"].as_str().unwrap();
        match want.get(date) {
            Some(sums) => {
                nonzero += 1;
                check_row(&format!("Berlin {date}"), row, sums, ALL_METRICS)
            }
            None => assert_eq!(row["visitors"], 0, "{date}"),
        }
    }
    assert_eq!(nonzero, want.len(), "every expected bucket is a label");
    assert!(
        nonzero >= 5,
        "the fixture should put traffic on the DST day: {nonzero}"
    );
    // The day in Berlin is not the UTC day: its daily total differs from the UTC reading.
    let day = s
        .json_at(
            &s.base,
            &s.berlin_key,
            "/api/v1/stats/aggregate",
            &[
                ("site_id", BERLIN),
                ("period", "day"),
                ("date", "2026-03-29"),
                ("metrics", "visitors,pageviews"),
            ],
        )
        .await;
    let want = expected(&s.fixture, BERLIN, range, &[], Key::Total, 0);
    check_row(
        "Berlin day",
        &json!({"visitors": day["results"]["visitors"]["value"], "pageviews": day["results"]["pageviews"]["value"]}),
        &want[""],
        "visitors,pageviews",
    );
    println!(
        "DST day Europe/Berlin 2026-03-29: 23 hourly buckets, {nonzero} with traffic; day {}",
        day["results"]
    );
}

const PROPERTIES: [&str; 21] = [
    "event:page",
    "event:name",
    "event:hostname",
    "event:props:plan",
    "visit:entry_page",
    "visit:exit_page",
    "visit:source",
    "visit:referrer",
    "visit:utm_source",
    "visit:utm_medium",
    "visit:utm_campaign",
    "visit:utm_term",
    "visit:utm_content",
    "visit:country",
    "visit:region",
    "visit:city",
    "visit:device",
    "visit:browser",
    "visit:browser_version",
    "visit:os",
    "visit:os_version",
];

fn result_key(property: &str) -> &str {
    property.rsplit(':').next().unwrap()
}

async fn check_breakdown(s: &Service, property: &str, filters: &[Filter], metrics: &str) -> usize {
    let range = day_range("UTC", "2026-03-24", "2026-03-31");
    let filter_text = Filter::query(filters);
    let mut q = vec![
        ("site_id", SITE),
        ("property", property),
        ("metrics", metrics),
        ("limit", "1000"),
    ];
    q.extend_from_slice(&WEEK);
    if !filters.is_empty() {
        q.push(("filters", &filter_text));
    }
    let got = s.json("/api/v1/stats/breakdown", &q).await;
    let want = expected(&s.fixture, SITE, range, filters, Key::Property(property), 0);
    check_breakdown_rows(&filter_text, &got, &want, property, metrics)
}

/// A breakdown's rows are the expected keys, in order, each with the expected `metrics`;
/// returns how many.
fn check_breakdown_rows(
    what: &str,
    got: &Value,
    want: &BTreeMap<String, Sums>,
    property: &str,
    metrics: &str,
) -> usize {
    let want = sorted(want);
    let results = got["results"].as_array().unwrap();
    let keys: Vec<&str> = results
        .iter()
        .map(|r| r[result_key(property)].as_str().unwrap())
        .collect();
    let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, want_keys, "{property} {what}");
    for (row, (k, sums)) in results.iter().zip(&want) {
        check_row(&format!("{property}={k} {what}"), row, sums, metrics);
    }
    results.len()
}

async fn breakdowns(s: &Service) {
    for property in PROPERTIES {
        let metrics = if property == "event:name" {
            "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events"
        } else {
            ALL_METRICS
        };
        let n = check_breakdown(s, property, &[], metrics).await;
        // Without visit metrics the statement reads no visits: the same event figures.
        check_breakdown(s, property, &[], "visitors,pageviews,events").await;
        // Visit metrics without engagement ones: the reports are left out of the scan.
        check_breakdown(
            s,
            property,
            &[],
            "visitors,visits,bounce_rate,visit_duration,views_per_visit",
        )
        .await;
        println!("breakdown {property}: {n} rows, all metrics equal");
    }
}

async fn filters(s: &Service) {
    let cases = [
        vec![Filter::new("event:page", "==", &["/pricing", "/docs"])],
        vec![Filter::new("event:page", "!=", &["/"])],
        vec![Filter::new("event:page", "~", &["blog"])],
        vec![Filter::new("event:name", "==", &["Signup"])],
        vec![Filter::new("event:props:plan", "==", &["pro"])],
        vec![Filter::new("visit:country", "==", &["DE", "FR"])],
        vec![Filter::new("visit:source", "!=", &["Direct / None"])],
        vec![Filter::new("visit:source", "~", &["oo", "news"])],
        vec![
            Filter::new("visit:device", "==", &["mobile"]),
            Filter::new("event:page", "~", &["/blog/"]),
        ],
        vec![
            Filter::new("visit:entry_page", "==", &["/"]),
            Filter::new("visit:browser", "!=", &["Safari"]),
        ],
        vec![Filter::new("visit:exit_page", "==", &["/docs", "/pricing"])],
        vec![
            Filter::new("visit:exit_page", "!=", &["/"]),
            Filter::new("event:name", "==", &["Signup"]),
        ],
    ];
    for filters in cases {
        for property in [
            "event:page",
            "visit:source",
            "visit:country",
            "visit:exit_page",
        ] {
            check_breakdown(s, property, &filters, ALL_METRICS).await;
        }
        // And the aggregate under the same filters.
        let text = Filter::query(&filters);
        let mut q = vec![
            ("site_id", SITE),
            ("metrics", ALL_METRICS),
            ("filters", text.as_str()),
        ];
        q.extend_from_slice(&WEEK);
        let got = s.json("/api/v1/stats/aggregate", &q).await;
        let want = expected(
            &s.fixture,
            SITE,
            day_range("UTC", "2026-03-24", "2026-03-31"),
            &filters,
            Key::Total,
            0,
        );
        let empty = Sums::default();
        let want = want.get("").unwrap_or(&empty);
        for m in ALL_METRICS.split(',') {
            assert_eq!(got["results"][m]["value"], want.metric(m), "{text} {m}");
        }
        println!(
            "filters {text}: visitors {} pageviews {}",
            got["results"]["visitors"]["value"], got["results"]["pageviews"]["value"]
        );
    }
}

async fn comparison(s: &Service) {
    let got = s
        .json(
            "/api/v1/stats/aggregate",
            &[
                ("site_id", SITE),
                ("period", "custom"),
                ("date", "2026-03-28,2026-03-31"),
                ("metrics", ALL_METRICS),
                ("compare", "previous_period"),
            ],
        )
        .await;
    let now = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-28", "2026-03-31"),
        &[],
        Key::Total,
        0,
    );
    let before = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-27"),
        &[],
        Key::Total,
        0,
    );
    for m in ALL_METRICS.split(',') {
        let (a, b) = (now[""].metric(m), before[""].metric(m));
        let r = &got["results"][m];
        assert_eq!(r["value"], a, "{m}");
        assert_eq!(r["comparison_value"], b, "{m}");
        let (af, bf) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        let change = if m == "bounce_rate" {
            (af - bf).round() as i64
        } else if bf == 0.0 {
            if af > 0.0 {
                100
            } else {
                0
            }
        } else {
            ((af - bf) / bf * 100.0).round() as i64
        };
        assert_eq!(r["change"], json!(change), "{m}");
    }
    println!("compare previous_period: {}", got["results"]["visitors"]);
}

async fn csv(s: &Service) {
    let mut q = vec![
        ("site_id", SITE),
        ("property", "visit:country"),
        ("metrics", "visitors,bounce_rate"),
        ("format", "csv"),
    ];
    q.extend_from_slice(&WEEK);
    let (status, body) = s
        .get_with(&s.base, Some(&s.key), "/api/v1/stats/breakdown", &q)
        .await;
    assert_eq!(status, 200, "{body}");
    let want = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-31"),
        &[],
        Key::Property("visit:country"),
        0,
    );
    let mut text = String::from("country,visitors,bounce_rate\r\n");
    for (k, sums) in sorted(&want) {
        text += &format!(
            "{k},{},{}\r\n",
            sums.metric("visitors"),
            sums.metric("bounce_rate")
        );
    }
    assert_eq!(body, text);

    let mut q = vec![
        ("site_id", SITE),
        ("metrics", "pageviews,views_per_visit"),
        ("format", "csv"),
    ];
    q.extend_from_slice(&WEEK);
    let (status, body) = s
        .get_with(&s.base, Some(&s.key), "/api/v1/stats/timeseries", &q)
        .await;
    assert_eq!(status, 200, "{body}");
    let label = local_label("UTC", "%Y-%m-%d");
    let want = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-31"),
        &[],
        Key::Bucket(&label),
        0,
    );
    let lines: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "date,pageviews,views_per_visit");
    assert_eq!(lines.len(), 9);
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        let sums = &want[cells[0]];
        assert_eq!(cells[1], sums.metric("pageviews").to_string());
        assert_eq!(cells[2], sums.metric("views_per_visit").to_string());
    }
    println!("csv: breakdown and timeseries bodies equal the expected text");
}

async fn k_suppression(s: &Service) {
    let (mut merged, mut kept) = (0, 0);
    // One day has few visitors per group (mostly merged), the week many (mostly kept).
    for (property, (first, last)) in [
        ("visit:city", ("2026-03-27", "2026-03-27")),
        ("event:page", ("2026-03-27", "2026-03-27")),
        ("visit:browser_version", ("2026-03-26", "2026-03-27")),
        ("event:props:plan", ("2026-03-24", "2026-03-31")),
        ("visit:utm_campaign", ("2026-03-24", "2026-03-31")),
        ("visit:city", ("2026-03-24", "2026-03-31")),
    ] {
        let date = format!("{first},{last}");
        let mut q = vec![
            ("site_id", SITE),
            ("property", property),
            ("metrics", "visitors,visits,pageviews"),
            ("limit", "1000"),
        ];
        q.extend_from_slice(&[("period", "custom"), ("date", &date)]);
        let got = s
            .json_at(&s.k_base, &s.key, "/api/v1/stats/breakdown", &q)
            .await;
        let want = expected(
            &s.fixture,
            SITE,
            day_range("UTC", first, last),
            &[],
            Key::Property(property),
            3,
        );
        let want = sorted(&want);
        let results = got["results"].as_array().unwrap();
        let keys: Vec<&str> = results
            .iter()
            .map(|r| r[result_key(property)].as_str().unwrap())
            .collect();
        let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, want_keys, "k=3 {property}");
        for (row, (k, sums)) in results.iter().zip(&want) {
            check_row(
                &format!("k=3 {property}={k}"),
                row,
                sums,
                "visitors,visits,pageviews",
            );
            if k.as_str() != "(other)" {
                assert!(sums.visitors.len() >= 3);
                kept += 1;
            } else {
                merged += 1;
            }
        }
        println!("k=3 {property} {date}: {keys:?}");
    }
    assert!(
        merged > 0 && kept > 0,
        "the fixture should exercise both: {merged} {kept}"
    );
}

/// Goals: the `event:goal` breakdown (a page view can reach two), goal filters, and
/// conversion rates against the visitors of the same filters without the goal.
async fn goals(s: &Service) {
    let range = day_range("UTC", "2026-03-24", "2026-03-31");
    let metrics = "visitors,events,visits,bounce_rate,conversion_rate";
    let rate = |visitors: usize, total: usize| {
        json!((visitors as f64 / total as f64 * 1000.0).round() / 10.0)
    };
    for filters in [
        vec![],
        vec![Filter::new("visit:country", "==", &["DE", "FR"])],
        vec![Filter::new("event:goal", "!=", &["Visit /*"])],
        vec![Filter::new("event:goal", "~", &["Sign", "blog"])],
    ] {
        let text = Filter::query(&filters);
        let mut q = vec![
            ("site_id", SITE),
            ("property", "event:goal"),
            ("metrics", metrics),
        ];
        q.extend_from_slice(&WEEK);
        if !filters.is_empty() {
            q.push(("filters", &text));
        }
        let got = s.json("/api/v1/stats/breakdown", &q).await;
        let want = expected(
            &s.fixture,
            SITE,
            range,
            &filters,
            Key::Property("event:goal"),
            0,
        );
        let others: Vec<Filter> = filters
            .iter()
            .filter(|f| f.property != "event:goal")
            .cloned()
            .collect();
        let total = expected(&s.fixture, SITE, range, &others, Key::Total, 0)[""]
            .visitors
            .len();
        let want = sorted(&want);
        let results = got["results"].as_array().unwrap();
        let keys: Vec<&str> = results
            .iter()
            .map(|r| r["goal"].as_str().unwrap())
            .collect();
        let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, want_keys, "goals {text}");
        if filters.is_empty() {
            assert_eq!(want_keys.len(), GOALS.len(), "every goal was reached");
        }
        for (row, (k, sums)) in results.iter().zip(&want) {
            check_row(
                &format!("goal {k} {text}"),
                row,
                sums,
                "visitors,events,visits,bounce_rate",
            );
            assert_eq!(
                row["conversion_rate"],
                rate(sums.visitors.len(), total),
                "goal {k} {text}"
            );
        }
        println!("goals {text}: {results:?}");
    }

    // A goal filter on the aggregate, with the comparison's own denominator.
    let mut q = vec![
        ("site_id", SITE),
        ("metrics", "visitors,events,conversion_rate"),
        ("filters", "event:goal==Signup|Visit /pricing"),
    ];
    q.extend_from_slice(&WEEK);
    let got = s.json("/api/v1/stats/aggregate", &q).await;
    let filters = [Filter::new(
        "event:goal",
        "==",
        &["Signup", "Visit /pricing"],
    )];
    let want = expected(&s.fixture, SITE, range, &filters, Key::Total, 0);
    let total = expected(&s.fixture, SITE, range, &[], Key::Total, 0)[""]
        .visitors
        .len();
    let converted = want[""].visitors.len();
    assert!(converted > 0 && converted < total, "{converted} of {total}");
    assert_eq!(got["results"]["visitors"]["value"], json!(converted));
    assert_eq!(got["results"]["events"]["value"], json!(want[""].events));
    assert_eq!(
        got["results"]["conversion_rate"]["value"],
        rate(converted, total)
    );

    // Mistakes are 400s that say what is wrong.
    for (params, says) in [
        (
            vec![("metrics", "visitors,conversion_rate")],
            "conversion_rate needs property=event:goal or an event:goal filter",
        ),
        (
            vec![("filters", "event:goal==Sign up")],
            "\"Sign up\" is not one of the site's goals (Signup, Visit /pricing, Visit /blog/*, Visit /*)",
        ),
    ] {
        let mut q = vec![("site_id", SITE)];
        q.extend(params);
        let (status, body) = s
            .get_with(&s.base, Some(&s.key), "/api/v1/stats/aggregate", &q)
            .await;
        assert_eq!(status, 400, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].as_str().unwrap().contains(says), "{body}");
    }
}

async fn pagination_and_sort(s: &Service) {
    let range = day_range("UTC", "2026-03-24", "2026-03-31");
    let want = expected(&s.fixture, SITE, range, &[], Key::Property("event:page"), 0);
    let mut by_pageviews: Vec<_> = want.iter().collect();
    by_pageviews.sort_by(|a, b| a.1.pageviews.cmp(&b.1.pageviews).then(a.0.cmp(b.0)));
    let mut pages = Vec::new();
    for page in ["1", "2", "3"] {
        let mut q = vec![
            ("site_id", SITE),
            ("property", "event:page"),
            ("metrics", "visitors,pageviews"),
            ("sort", "pageviews:asc"),
            ("limit", "2"),
            ("page", page),
        ];
        q.extend_from_slice(&WEEK);
        let got = s.json("/api/v1/stats/breakdown", &q).await;
        for row in got["results"].as_array().unwrap() {
            pages.push(row["page"].as_str().unwrap().to_string());
        }
    }
    let want_keys: Vec<String> = by_pageviews.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(pages, want_keys);
    let mut q = vec![
        ("site_id", SITE),
        ("property", "event:page"),
        ("sort", "page:desc"),
    ];
    q.extend_from_slice(&WEEK);
    let got = s.json("/api/v1/stats/breakdown", &q).await;
    let keys: Vec<&str> = got["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["page"].as_str().unwrap())
        .collect();
    let mut want_desc: Vec<&str> = want.keys().map(String::as_str).collect();
    want_desc.reverse();
    assert_eq!(keys, want_desc);
    println!("pagination (limit 2, pages 1-3, sort pageviews:asc) and sort page:desc: ok");
}

async fn realtime_and_filtered_traffic(s: &Service) {
    let now = jiff::Timestamp::now().as_second() as u32;
    let client = s.ch.client.clone().with_database("glimpse");
    let mut insert = client.insert::<EventRow>("events").await.unwrap();
    for (v, ago) in [(1u64, 30u32), (2, 90), (2, 100), (3, 200), (4, 900)] {
        insert
            .write(&EventRow {
                site: OTHER.into(),
                timestamp: now - ago,
                name: "pageview".into(),
                pathname: "/".into(),
                visitor_id: 9_000 + v,
                session_id: 9_000 + v,
                ..EventRow::default()
            })
            .await
            .unwrap();
    }
    insert.end().await.unwrap();
    let got = s
        .json_at(
            &s.base,
            &s.operator_key,
            "/api/v1/stats/realtime/visitors",
            &[("site_id", OTHER)],
        )
        .await;
    assert_eq!(got, json!(3), "visitors of the last 5 minutes");

    s.ch.client
        .query(
            "INSERT INTO glimpse.dropped_events (site, date, reason, count) VALUES \
             ('example.com', '2026-03-25', 'bot', 5), ('example.com', '2026-03-25', 'bot', 2), \
             ('example.com', '2026-03-26', 'opt_out', 4), ('example.com', '2026-04-02', 'bot', 100), \
             ('other.org', '2026-03-25', 'spam', 9)",
        )
        .execute()
        .await
        .unwrap();
    let mut q = vec![("site_id", SITE)];
    q.extend_from_slice(&WEEK);
    let got = s.json("/api/v1/stats/filtered", &q).await;
    assert_eq!(
        got,
        json!({"results": [{"reason": "bot", "count": 7}, {"reason": "opt_out", "count": 4}], "total": 11})
    );
    println!("realtime visitors 3; filtered traffic {got}");
}

async fn auth_errors(s: &Service) {
    let path = "/api/v1/stats/aggregate";
    let site = [("site_id", SITE)];
    let status = |r: (u16, String)| r.0;
    assert_eq!(
        status(s.get_with(&s.base, None, path, &site).await),
        401,
        "no key"
    );
    assert_eq!(
        status(s.get_with(&s.base, Some("glimpse_00"), path, &site).await),
        401,
        "wrong key"
    );
    assert_eq!(
        status(s.get_with(&s.base, Some("' OR 1=1 --"), path, &site).await),
        401,
        "junk key"
    );
    assert_eq!(
        status(s.get_with(&s.base, Some(&s.berlin_key), path, &site).await),
        403,
        "other site's key"
    );
    assert_eq!(
        status(
            s.get_with(&s.base, Some(&s.key), path, &[("site_id", "nope.example")])
                .await
        ),
        404,
        "unknown site"
    );
    assert_eq!(
        status(s.get_with(&s.base, Some(&s.key), path, &[]).await),
        400,
        "no site_id"
    );
    assert_eq!(
        status(
            s.get_with(&s.base, Some(&s.operator_key), path, &[("site_id", BERLIN)])
                .await
        ),
        200,
        "operator key"
    );
    // Share link: read-only access to its own site only.
    assert_eq!(
        status(
            s.get_with(
                &s.base,
                None,
                path,
                &[("site_id", SITE), ("auth", SHARE_TOKEN)]
            )
            .await
        ),
        200
    );
    assert_eq!(
        status(
            s.get_with(
                &s.base,
                None,
                path,
                &[("site_id", BERLIN), ("auth", SHARE_TOKEN)]
            )
            .await
        ),
        401
    );
    assert_eq!(
        status(
            s.get_with(
                &s.base,
                None,
                path,
                &[("site_id", SITE), ("auth", "share-me-0123456780")]
            )
            .await
        ),
        401
    );
    // A revoked key stops working at once.
    let cfg = config(&s.ch, 0);
    let (key, id) = glimpse_query::auth::create_key(&s.ch.client, "glimpse", &cfg, SITE, "tmp")
        .await
        .unwrap();
    assert_eq!(
        status(s.get_with(&s.base, Some(&key), path, &site).await),
        200
    );
    assert_eq!(
        glimpse_query::auth::revoke_key(&s.ch.client, "glimpse", &id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        status(s.get_with(&s.base, Some(&key), path, &site).await),
        401,
        "revoked"
    );
    let listed = glimpse_query::auth::list_keys(&s.ch.client, "glimpse")
        .await
        .unwrap();
    assert!(listed.iter().any(|k| k.key_id == id && k.revoked == 1));
    assert!(
        glimpse_query::auth::create_key(&s.ch.client, "glimpse", &cfg, "nope.example", "x")
            .await
            .is_err()
    );
    // Keys are stored hashed only.
    let stored: Vec<String> =
        s.ch.client
            .query("SELECT key_hash FROM glimpse.api_keys")
            .fetch_all()
            .await
            .unwrap();
    assert!(!stored
        .iter()
        .any(|h| h == &s.key || h.starts_with("glimpse_")));
    println!("auth: 401 missing/wrong/revoked, 403 other site, 404 unknown site, share link ok");
}

async fn injection_attempts(s: &Service) {
    let tables = "SELECT toUInt64(count()) FROM system.tables WHERE database = 'glimpse'";
    let before = (
        s.ch.count("SELECT count() FROM glimpse.events").await,
        s.ch.count(tables).await,
    );
    let attacks = [
        "' OR '1'='1",
        "x'); DROP TABLE glimpse.events; --",
        "1; DROP TABLE glimpse.events",
        "\\' UNION SELECT * FROM system.tables --",
        "`events`",
        "') OR 1=1 OR ('",
        "?",
        "%27%20OR%201%3D1",
        "\0",
        "event:page==x') OR 1=1 --",
        "visit:source~'; DROP DATABASE glimpse; --",
    ];
    let endpoints = [
        "/api/v1/stats/aggregate",
        "/api/v1/stats/timeseries",
        "/api/v1/stats/breakdown",
    ];
    let params = [
        "site_id", "period", "date", "interval", "metrics", "property", "filters", "compare",
        "limit", "page", "sort", "format",
    ];
    let mut tried = 0;
    for endpoint in endpoints {
        for param in params {
            for attack in attacks {
                let mut q: Vec<(&str, String)> = vec![
                    ("site_id", SITE.into()),
                    ("period", "custom".into()),
                    ("date", "2026-03-24,2026-03-31".into()),
                ];
                if endpoint.ends_with("breakdown") {
                    q.push(("property", "event:page".into()));
                }
                q.retain(|(k, _)| *k != param);
                q.push((param, attack.to_string()));
                // Attacks inside otherwise valid filters and property names, too.
                let variants: Vec<Vec<(&str, String)>> = if param == "filters" {
                    vec![
                        q.clone(),
                        replace(&q, "filters", format!("event:page=={attack}")),
                        replace(&q, "filters", format!("visit:source~{attack}")),
                        replace(&q, "filters", format!("event:props:{attack}!={attack}")),
                    ]
                } else if param == "property" {
                    vec![
                        q.clone(),
                        replace(&q, "property", format!("event:props:{attack}")),
                    ]
                } else {
                    vec![q]
                };
                for q in variants {
                    let pairs: Vec<(&str, &str)> =
                        q.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let (status, body) = s.get_with(&s.base, Some(&s.key), endpoint, &pairs).await;
                    tried += 1;
                    match status {
                        400 => {
                            let v: Value = serde_json::from_str(&body).unwrap();
                            assert!(v["error"].is_string(), "{body}");
                        }
                        200 => assert_no_data(endpoint, &pairs, &body),
                        404 if param == "site_id" => {}
                        other => panic!("{endpoint} {pairs:?}: status {other}: {body}"),
                    }
                }
            }
        }
    }
    let after = (
        s.ch.count("SELECT count() FROM glimpse.events").await,
        s.ch.count(tables).await,
    );
    assert_eq!(before, after, "the database changed");
    println!(
        "injection: {tried} requests, each 400 or an empty answer; database unchanged {after:?}"
    );
}

fn replace(
    q: &[(&'static str, String)],
    key: &'static str,
    value: String,
) -> Vec<(&'static str, String)> {
    q.iter()
        .map(|(k, v)| {
            if *k == key {
                (*k, value.clone())
            } else {
                (*k, v.clone())
            }
        })
        .collect()
}

/// A 200 to an attack must not carry data the attack selected: breakdown rows only with the
/// attack text as their value (a custom property named so), timeseries/aggregate numbers only
/// when no parameter other than a harmless one changed.
fn assert_no_data(endpoint: &str, pairs: &[(&str, &str)], body: &str) {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{endpoint} {pairs:?}: {body}"));
    let filters = pairs.iter().find(|(k, _)| *k == "filters").map(|(_, v)| *v);
    let property = pairs
        .iter()
        .find(|(k, _)| *k == "property")
        .map(|(_, v)| *v);
    if let Some(f) = filters.filter(|f| !f.trim().is_empty()) {
        // A filter on a value that does not exist selects nothing (a `!=` filter selects all).
        if !f.contains("!=") {
            let results = &v["results"];
            let zero = match results {
                Value::Array(rows) => rows.iter().all(|r| r["visitors"] == 0),
                Value::Object(m) => m.values().all(|m| m["value"] == 0),
                _ => false,
            };
            assert!(zero, "{endpoint} {pairs:?}: {body}");
        }
    }
    if let Some(p) = property.filter(|p| p.starts_with("event:props:")) {
        for row in v["results"].as_array().unwrap() {
            let name = &p["event:props:".len()..];
            assert_eq!(row[name], "(none)", "{pairs:?}: {body}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The per-day rollup

/// The metrics the rollup answers (all but the engagement ones).
const ROLLUP_METRICS: &str =
    "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events";

/// Aggregate and every rolled breakdown of `site` over `params` (a period covering the local
/// days `first..=last`), checked against the fixture; returns the rows compared.
async fn check_rolled_questions(
    s: &Service,
    (site, key, tz): (&str, &str, &str),
    params: &[(&str, &str)],
    (first, last): (&str, &str),
    previous: Option<(&str, &str)>,
) -> usize {
    let range = day_range(tz, first, last);
    let mut q = vec![("site_id", site), ("metrics", ROLLUP_METRICS)];
    q.extend_from_slice(params);
    if previous.is_some() {
        q.push(("compare", "previous_period"));
    }
    let got = s.json_at(&s.base, key, "/api/v1/stats/aggregate", &q).await;
    let want = expected(&s.fixture, site, range, &[], Key::Total, 0);
    let want = want.get("").expect("events in range");
    for m in ROLLUP_METRICS.split(',') {
        assert_eq!(
            got["results"][m]["value"],
            want.metric(m),
            "{site} {params:?} {m}"
        );
    }
    if let Some((first, last)) = previous {
        let range = day_range(tz, first, last);
        let before = expected(&s.fixture, site, range, &[], Key::Total, 0);
        let before = before.get("").cloned().unwrap_or_default();
        for m in ROLLUP_METRICS.split(',') {
            assert_eq!(
                got["results"][m]["comparison_value"],
                before.metric(m),
                "{site} {params:?} {m} (previous period)"
            );
        }
    }
    let mut compared = 1;
    let properties = PROPERTIES
        .iter()
        .filter(|p| **p == "event:page" || p.starts_with("visit:"));
    for property in properties {
        let metrics = if *property == "event:page" {
            "visitors,pageviews,events"
        } else {
            ROLLUP_METRICS
        };
        let mut q = vec![
            ("site_id", site),
            ("property", property),
            ("metrics", metrics),
            ("limit", "1000"),
        ];
        q.extend_from_slice(params);
        let got = s.json_at(&s.base, key, "/api/v1/stats/breakdown", &q).await;
        let want = expected(&s.fixture, site, range, &[], Key::Property(property), 0);
        compared += check_breakdown_rows(
            &format!("{site} {params:?}"),
            &got,
            &want,
            property,
            metrics,
        );
    }
    compared
}

/// The rollup, built for the fixture's days, answers with exactly the figures of the events
/// (UTC periods, and Berlin periods whose edges cut UTC days, over the DST change); the API
/// does read it (a late row of a rolled day shows only after the next refresh, which rebuilds
/// that day); a day whose events are gone loses its figures.
async fn rollup(s: &Service) {
    use glimpse_query::rollup::refresh;
    let now = jiff::Timestamp::now().as_second();
    let report = refresh(&s.ch.client, "glimpse", now).await.unwrap();
    let visit_days: BTreeSet<(String, String)> = s
        .fixture
        .iter()
        .filter(|e| e.name != "engagement")
        .map(|e| {
            let day = jiff::Timestamp::from_second(i64::from(e.visit_start))
                .unwrap()
                .to_zoned(TimeZone::UTC)
                .date();
            (e.site.clone(), day.to_string())
        })
        .collect();
    let built: BTreeSet<(String, String)> = report.days_built.iter().cloned().collect();
    assert_eq!(built, visit_days, "every day with visits is rolled up");
    assert!(report.days_removed.is_empty());
    let again = refresh(&s.ch.client, "glimpse", now).await.unwrap();
    assert!(
        again.days_built.is_empty() && again.days_removed.is_empty(),
        "nothing changed, nothing to do: {again:?}"
    );
    println!("rollup: {} site days built", built.len());

    let utc = (SITE, s.key.as_str(), "UTC");
    let berlin = (BERLIN, s.berlin_key.as_str(), "Europe/Berlin");
    // (site, period, its local days, the comparison's local days)
    type Case<'a> = (
        (&'a str, &'a str, &'a str),
        &'a str,
        (&'a str, &'a str),
        Option<(&'a str, &'a str)>,
    );
    let cases: [Case; 5] = [
        (
            utc,
            "2026-03-24,2026-03-31",
            ("2026-03-24", "2026-03-31"),
            None,
        ),
        (utc, "month", ("2026-03-01", "2026-03-31"), None),
        (
            utc,
            "2026-03-28,2026-03-31",
            ("2026-03-28", "2026-03-31"),
            Some(("2026-03-24", "2026-03-27")),
        ),
        (
            berlin,
            "2026-03-28,2026-03-31",
            ("2026-03-28", "2026-03-31"),
            None,
        ),
        (
            berlin,
            "2026-03-25,2026-03-31",
            ("2026-03-25", "2026-03-31"),
            Some(("2026-03-18", "2026-03-24")),
        ),
    ];
    let mut compared = 0;
    for (site, period, days, previous) in cases {
        let params: Vec<(&str, &str)> = if period == "month" {
            vec![("period", "month"), ("date", "2026-03-10")]
        } else {
            vec![("period", "custom"), ("date", period)]
        };
        compared += check_rolled_questions(s, site, &params, days, previous).await;
    }
    println!("rollup: {compared} aggregate and breakdown rows equal the fixture's");
    rollup_answers_the_same_on_current_clickhouse(s, &visit_days).await;

    // A late visit on a rolled day (a collector's spool replayed after an outage).
    let visitors = |body: Value| body["results"]["visitors"]["value"].as_u64().unwrap();
    let week: Vec<(&str, &str)> = [("site_id", SITE), ("metrics", "visitors")]
        .into_iter()
        .chain(WEEK)
        .collect();
    let before = visitors(s.json("/api/v1/stats/aggregate", &week).await);
    let mut late = vec![EventRow {
        site: SITE.into(),
        timestamp: utc_seconds("2026-03-26", 12, 0) as u32,
        name: "pageview".into(),
        hostname: SITE.into(),
        pathname: "/late".into(),
        visitor_id: 777_777,
        session_id: 777_777,
        ..EventRow::default()
    }];
    stamp_visits(&mut late);
    let mut insert =
        s.ch.client
            .clone()
            .with_database("glimpse")
            .insert::<EventRow>("events")
            .await
            .unwrap();
    insert.write(&late[0]).await.unwrap();
    insert.end().await.unwrap();
    assert_eq!(
        visitors(s.json("/api/v1/stats/aggregate", &week).await),
        before,
        "a rolled day is read from the rollup until it is rebuilt"
    );
    let report = refresh(&s.ch.client, "glimpse", now).await.unwrap();
    assert_eq!(
        report.days_built,
        vec![(SITE.to_string(), "2026-03-26".to_string())]
    );
    assert_eq!(
        visitors(s.json("/api/v1/stats/aggregate", &week).await),
        before + 1
    );

    // Its erasure: the day is rebuilt without it.
    delete_events(s, "visitor_id = 777777").await;
    let rebuilt = refresh(&s.ch.client, "glimpse", now).await.unwrap();
    assert_eq!(rebuilt.days_built, report.days_built);
    assert_eq!(
        visitors(s.json("/api/v1/stats/aggregate", &week).await),
        before
    );

    // Two query services refreshing at once (both rebuild every day: the listing is gone)
    // write two complete builds; readers take one, so the figures do not double.
    s.ch.client
        .query("TRUNCATE TABLE glimpse.rollup_days")
        .execute()
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        refresh(&s.ch.client, "glimpse", now),
        refresh(&s.ch.client, "glimpse", now)
    );
    assert_eq!(a.unwrap().days_built.len(), built.len());
    assert_eq!(b.unwrap().days_built.len(), built.len());
    let after = check_rolled_questions(s, utc, &WEEK, ("2026-03-24", "2026-03-31"), None).await;
    assert!(after > 0);

    // A day whose events are all gone (retention) loses its rollup.
    let (_, day) = visit_days
        .iter()
        .find(|(site, _)| site == OTHER)
        .expect("other.org has visits");
    let of_day = format!(
        "site = '{OTHER}' AND toDate(visit_start, 'UTC') = toDate('{day}') AND name != 'engagement'"
    );
    delete_events(s, &of_day).await;
    let report = refresh(&s.ch.client, "glimpse", now).await.unwrap();
    assert_eq!(report.days_removed, vec![(OTHER.to_string(), day.clone())]);
    assert!(report.days_built.is_empty(), "{report:?}");
}

/// Deletes the events matching `condition` and waits until the mutation has run.
async fn delete_events(s: &Service, condition: &str) {
    s.ch.client
        .query(&format!(
            "ALTER TABLE glimpse.events DELETE WHERE {condition}"
        ))
        .execute()
        .await
        .unwrap();
    let left = format!("SELECT count() FROM glimpse.events WHERE {condition}");
    for _ in 0..100 {
        if s.ch.count(&left).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{condition}: still there after 10 s");
}

/// On ClickHouse 26.x (chdb, `tests/chdb/rollup.py`): the rollup built there by the same
/// statements from the same events answers every rolled question (UTC and Berlin periods, with
/// comparisons) with the rows the events give.
async fn rollup_answers_the_same_on_current_clickhouse(
    s: &Service,
    visit_days: &BTreeSet<(String, String)>,
) {
    use glimpse_query::params::Endpoint;
    let dir = tempfile::tempdir().unwrap();
    let mut export =
        s.ch.client
            .query("SELECT * FROM glimpse.events")
            .fetch_bytes("Native")
            .unwrap();
    let mut native = Vec::new();
    while let Some(chunk) = export.next().await.unwrap() {
        native.extend_from_slice(&chunk);
    }
    std::fs::write(dir.path().join("events.native"), native).unwrap();

    let day_number = |day: &str| glimpse_core::schema::day_number(day.parse().unwrap());
    let mut builds = Vec::new();
    let mut days_of: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (site, day) in visit_days {
        days_of.entry(site).or_default().push(day_number(day));
    }
    for (site, days) in &days_of {
        for run in glimpse_query::sql::day_runs(days) {
            builds.extend(
                glimpse_query::rollup::build_statements("glimpse", site, run, 1)
                    .iter()
                    .map(glimpse_query::sql::Sql::final_text),
            );
        }
    }

    let now = jiff::Timestamp::now();
    let mut questions = Vec::new();
    let cases = [
        (SITE, "UTC", "2026-03-24,2026-03-31"),
        (SITE, "UTC", "2026-03-26,2026-03-29"),
        (BERLIN, "Europe/Berlin", "2026-03-25,2026-03-31"),
    ];
    for (domain, tz, dates) in cases {
        let site = Site::parse(SiteConfig {
            timezone: tz.into(),
            ..SiteConfig::new(domain)
        })
        .unwrap();
        let rolled = &days_of[domain];
        let mut ask = |endpoint: Endpoint, extra: &[(&str, &str)]| {
            let mut query: HashMap<String, String> = [
                ("site_id", domain),
                ("period", "custom"),
                ("date", dates),
                ("compare", "previous_period"),
            ]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            if endpoint == Endpoint::Breakdown {
                query.remove("compare");
            }
            let request =
                glimpse_query::plan::Request::new(endpoint, &query, site.clone(), now).unwrap();
            let statements = |days: &[i64]| request.stats_plan("glimpse", 0, days).unwrap().texts();
            questions.push(json!({
                "name": format!("{domain} {dates} {extra:?}"),
                "raw": statements(&[]),
                "rolled": statements(rolled),
            }));
        };
        ask(Endpoint::Aggregate, &[("metrics", ROLLUP_METRICS)]);
        for property in PROPERTIES
            .iter()
            .filter(|p| **p == "event:page" || p.starts_with("visit:"))
        {
            let metrics = if *property == "event:page" {
                "visitors,pageviews,events"
            } else {
                ROLLUP_METRICS
            };
            ask(
                Endpoint::Breakdown,
                &[
                    ("property", property),
                    ("metrics", metrics),
                    ("limit", "1000"),
                ],
            );
        }
    }
    let write = |name: &str, value: &Value| {
        std::fs::write(dir.path().join(name), serde_json::to_vec(value).unwrap()).unwrap();
    };
    write(
        "schema.json",
        &json!(glimpse_core::schema::migration_statements(
            glimpse_core::schema::Flavor::Modern,
            "glimpse"
        )),
    );
    write("builds.json", &json!(builds));
    write("questions.json", &json!(questions));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chdb/rollup.py");
    let output = std::process::Command::new(common::test_python())
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run tests/chdb/rollup.py (GLIMPSE_TEST_PYTHON: a Python with chdb)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    assert!(
        output.status.success(),
        "rollup on current ClickHouse: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The statements of `common::stats_matrix` (every property, interval, period, filter
/// operator, sort, comparison, k) all run on this ClickHouse (18.16 here).
async fn every_generated_statement_runs(s: &Service) {
    let mut n = 0;
    for tz in ["UTC", "Europe/Berlin", "Asia/Kolkata"] {
        for sql in common::stats_matrix::statements("glimpse", tz) {
            let result = s.ch.client.query(&sql).fetch_bytes("TabSeparated");
            let mut cursor = result.unwrap_or_else(|e| panic!("{sql}: {e}"));
            while let Some(chunk) = cursor.next().await.unwrap_or_else(|e| panic!("{sql}: {e}")) {
                let _ = chunk;
            }
            n += 1;
        }
    }
    println!("generated SQL: {n} statements ran on this ClickHouse");
}
