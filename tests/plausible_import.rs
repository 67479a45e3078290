//! `glimpse import --format plausible`, end to end against a real ClickHouse: a ZIP laid out as
//! Plausible's CSV export is imported with the binary; days Glimpse already has are left out;
//! importing twice is refused unless `--replace`; the stats API adds the imported figures to
//! its own with `with_imported=true` (aggregate, timeseries, breakdowns), leaves them out with
//! a warning where they cannot answer, and retention removes expired imported days.
//!
//! Expected figures are computed here from the rows written into the CSV files and from the
//! live fixture's construction.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use common::TestClickHouse;
use glimpse_core::schema::EventRow;
use glimpse_core::site::Site;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SITE: &str = "example.com";
const DAY: u32 = 86_400;

/// One imported day's figures for one dimension value.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    visitors: u64,
    visits: u64,
    pageviews: u64,
    bounces: u64,
    duration: u64,
}

impl Figures {
    fn of(day: u64, scale: u64) -> Figures {
        Figures {
            visitors: scale * (10 + day),
            visits: scale * (12 + day),
            pageviews: scale * (30 + 2 * day),
            bounces: scale * (4 + day % 3),
            duration: scale * 100 * (day + 1),
        }
    }

    fn add(&mut self, other: Figures) {
        self.visitors += other.visitors;
        self.visits += other.visits;
        self.pageviews += other.pageviews;
        self.bounces += other.bounces;
        self.duration += other.duration;
    }
}

fn today() -> u32 {
    let now = glimpse_core::clock::unix_now();
    now - now % DAY
}

fn date(days_ago: u32) -> String {
    let t = jiff::Timestamp::from_second(i64::from(today() - days_ago * DAY)).unwrap();
    t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string()
}

/// Imported days: 20 to 11 days ago. Glimpse's own data starts 13 days ago.
const IMPORTED_DAYS: std::ops::RangeInclusive<u32> = 11..=20;
const FIRST_OWN_DAY: u32 = 13;

/// The export's CSV files: `(file name, text)`, in Plausible's column order.
fn export_files() -> Vec<(String, String)> {
    let (first, last) = (date(20).replace('-', ""), date(11).replace('-', ""));
    let mut files: Vec<(&str, String, Vec<String>)> = vec![
        (
            "visitors",
            "date,visitors,pageviews,bounces,visits,visit_duration".into(),
            vec![],
        ),
        (
            "sources",
            "date,source,referrer,utm_source,utm_medium,utm_campaign,utm_content,utm_term,pageviews,visitors,visits,visit_duration,bounces".into(),
            vec![],
        ),
        (
            "pages",
            "date,hostname,page,visits,visitors,pageviews,scroll_depth,pageleave_visitors".into(),
            vec![],
        ),
        (
            "custom_events",
            "date,name,link_url,path,visitors,events".into(),
            vec![],
        ),
        (
            "devices",
            "date,device,visitors,visits,visit_duration,bounces,pageviews".into(),
            vec![],
        ),
        (
            "operating_systems",
            "date,operating_system,operating_system_version,visitors,visits,visit_duration,bounces,pageviews".into(),
            vec![],
        ),
    ];
    for days_ago in IMPORTED_DAYS {
        let d = date(days_ago);
        let n = u64::from(days_ago);
        let f = Figures::of(n, 1);
        let (google, direct) = (Figures::of(n, 1), Figures::of(n, 2));
        let rows = |files: &mut Vec<(&str, String, Vec<String>)>, table: &str, line: String| {
            files
                .iter_mut()
                .find(|(t, _, _)| *t == table)
                .unwrap()
                .2
                .push(line);
        };
        rows(
            &mut files,
            "visitors",
            format!(
                "{d},{},{},{},{},{}",
                f.visitors, f.pageviews, f.bounces, f.visits, f.duration
            ),
        );
        for (source, referrer, s) in [("Google", "google.com", google), ("", "", direct)] {
            rows(
                &mut files,
                "sources",
                format!(
                    "{d},{source},{referrer},,,,,,{},{},{},{},{}",
                    s.pageviews, s.visitors, s.visits, s.duration, s.bounces
                ),
            );
        }
        rows(
            &mut files,
            "pages",
            format!(
                "{d},example.com,/,{},{},{},,0",
                f.visits, f.visitors, f.pageviews
            ),
        );
        rows(
            &mut files,
            "custom_events",
            format!("{d},Signup,,,{},{}", n, 2 * n),
        );
        rows(
            &mut files,
            "devices",
            format!(
                "{d},Mobile,{},{},{},{},{}",
                f.visitors, f.visits, f.duration, f.bounces, f.pageviews
            ),
        );
        rows(
            &mut files,
            "operating_systems",
            format!(
                "{d},GNU/Linux,(not set),{},{},{},{},{}",
                f.visitors, f.visits, f.duration, f.bounces, f.pageviews
            ),
        );
    }
    let mut out: Vec<(String, String)> = files
        .into_iter()
        .map(|(table, header, lines)| {
            (
                format!("imported_{table}_{first}_{last}.csv"),
                format!("{header}\n{}\n", lines.join("\n")),
            )
        })
        .collect();
    out.push(("README.txt".into(), "not a table".into()));
    out
}

fn write_zip(path: &std::path::Path, files: &[(String, String)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in files {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

/// Glimpse's own data, `FIRST_OWN_DAY` to 9 days ago: each day a bouncing visit from Google
/// (one page view of `/`) and a direct visit on a phone (`/`, `/pricing` 60 s later, then a
/// `Signup` 30 s after that: 90 s).
fn own_events() -> Vec<EventRow> {
    let mut rows = Vec::new();
    for days_ago in 9..=FIRST_OWN_DAY {
        let t = today() - days_ago * DAY + 10 * 3600;
        let id = u64::from(days_ago);
        let base = EventRow {
            site: SITE.into(),
            hostname: SITE.into(),
            name: "pageview".into(),
            pathname: "/".into(),
            device: "mobile".into(),
            os: "Linux".into(),
            ..EventRow::default()
        };
        rows.push(EventRow {
            timestamp: t,
            visitor_id: 1000 + id,
            session_id: 1000 + id,
            referrer: "google.com/".into(),
            referrer_source: "Google".into(),
            ..base.clone()
        });
        for (offset, name, path) in [
            (0, "pageview", "/"),
            (60, "pageview", "/pricing"),
            (90, "Signup", "/pricing"),
        ] {
            rows.push(EventRow {
                timestamp: t + offset,
                name: name.into(),
                pathname: path.into(),
                visitor_id: 2000 + id,
                session_id: 2000 + id,
                ..base.clone()
            });
        }
    }
    glimpse_collector::ingest::sessions::stamp_visits(&mut rows);
    rows
}

/// Runs the binary; returns (success, stdout, stderr).
async fn glimpse(ch: &TestClickHouse, config: &str, args: &[&str]) -> (bool, String, String) {
    std::fs::create_dir_all(ch.data_dir()).unwrap();
    let config_path = ch.data_dir().join("glimpse.toml");
    std::fs::write(&config_path, config).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(args)
        .env("GLIMPSE_CONFIG", &config_path)
        .env("GLIMPSE_CLICKHOUSE_URL", ch.url())
        .env("GLIMPSE_DATA_DIR", ch.data_dir())
        .env("GLIMPSE_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, endpoint: &str, params: &[(&str, &str)]) -> Value {
        let mut all = vec![("site_id", SITE), ("period", "custom")];
        let range = format!("{},{}", date(20), date(9));
        all.push(("date", &range));
        all.extend_from_slice(params);
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/stats/{endpoint}", self.base),
            &all,
        )
        .unwrap();
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{endpoint} {params:?}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// A breakdown as `{key value: row}`.
    async fn breakdown(
        &self,
        property: &str,
        key: &str,
        extra: &[(&str, &str)],
    ) -> HashMap<String, Value> {
        let mut params = vec![("property", property)];
        params.extend_from_slice(extra);
        let body = self.get("breakdown", &params).await;
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[key].as_str().unwrap().to_string(), r.clone()))
            .collect()
    }
}

fn rounded(a: u64, b: u64) -> u64 {
    (a as f64 / b as f64).round() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plausible_export_is_imported_and_added_to_the_stats() {
    let ch = TestClickHouse::start().await;
    let config = format!("[[sites]]\ndomain = \"{SITE}\"\n");
    let (ok, _, err) = glimpse(&ch, &config, &["migrate"]).await;
    assert!(ok, "{err}");
    let own = own_events();
    let client = ch.client.clone().with_database("glimpse");
    let mut insert = client.insert::<EventRow>("events").await.unwrap();
    for row in &own {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    let zip_path = ch.data_dir().join("plausible-export.zip");
    std::fs::create_dir_all(ch.data_dir()).unwrap();
    write_zip(&zip_path, &export_files());
    let zip = zip_path.to_str().unwrap();
    let import = ["import", "--format", "plausible", "--site", SITE, zip];

    // Days 13..11 ago are Glimpse's own already: 3 of the 10 days are left out of every table.
    let (ok, out, err) = glimpse(&ch, &config, &import).await;
    assert!(ok, "{err}");
    println!("{out}{err}");
    assert!(out.contains("imported 7 rows of visitors"), "{out}");
    assert!(out.contains("imported 14 rows of sources"), "{out}");
    assert!(
        out.contains("imported 7 rows of operating_systems"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "left out 21 rows on or after {}",
            date(FIRST_OWN_DAY)
        )),
        "{out}"
    );
    assert!(err.contains("skipped README.txt"), "{err}");
    let stored = ch.count("SELECT count() FROM glimpse.imported_daily").await;
    assert_eq!(stored, 7 * 7);
    assert_eq!(
        ch.count(&format!(
            "SELECT count() FROM glimpse.imported_daily WHERE date >= toDate('{}')",
            date(FIRST_OWN_DAY)
        ))
        .await,
        0
    );

    // A second import would count everything twice: refused, unless --replace.
    let (ok, _, err) = glimpse(&ch, &config, &import).await;
    assert!(!ok);
    assert!(err.contains("already has 49 imported rows"), "{err}");
    let mut replace = import.to_vec();
    replace.push("--replace");
    let (ok, out, err) = glimpse(&ch, &config, &replace).await;
    assert!(ok, "{err}");
    assert!(out.contains("replaced 49 earlier imported rows"), "{out}");
    assert_eq!(
        ch.count("SELECT count() FROM glimpse.imported_daily").await,
        49
    );

    // A file that is not Plausible's is refused with its line named; nothing is written.
    let bad = ch.data_dir().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("imported_devices_20240101_20240131.csv"),
        "date,device,visitors\n2024-01-01,Mobile,3\n2024-01-02,Mobile,many\n",
    )
    .unwrap();
    let (ok, _, err) = glimpse(
        &ch,
        &config,
        &[
            "import",
            "--format",
            "plausible",
            "--site",
            SITE,
            "--replace",
            bad.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("imported_devices_20240101_20240131.csv, line 3: `visitors` is not a count"),
        "{err}"
    );
    assert_eq!(
        ch.count("SELECT count() FROM glimpse.imported_daily").await,
        49
    );

    // The stats API.
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut query_config = ch.config();
    query_config.sites = vec![Site::new(SITE)];
    tokio::spawn(glimpse_query::serve(
        query_config.clone(),
        listener,
        stop.clone().cancelled_owned(),
    ));
    let key = glimpse_query::auth::create_key(&ch.client, "glimpse", &query_config, SITE, "test")
        .await
        .unwrap()
        .0;
    let http = reqwest::Client::new();
    common::wait_for_200(&http, &format!("{base}/ready"), Duration::from_secs(30)).await;
    let api = Api { base, key, http };

    // The dashboard learns which days were imported from the site list.
    let sites: Value = api
        .http
        .get(format!("{}/api/v1/sites", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sites["results"][0]["imported"],
        serde_json::json!({ "from": date(20), "to": date(14) }),
        "{sites}"
    );

    // What was imported, for the days kept (20..14 days ago).
    let kept: Vec<u64> = IMPORTED_DAYS
        .filter(|d| *d > FIRST_OWN_DAY)
        .map(u64::from)
        .collect();
    assert_eq!(kept.len(), 7);
    let mut imported = Figures::default();
    let mut direct = Figures::default();
    let mut google = Figures::default();
    for &d in &kept {
        imported.add(Figures::of(d, 1));
        google.add(Figures::of(d, 1));
        direct.add(Figures::of(d, 2));
    }
    let imported_signups: u64 = kept.iter().map(|d| 2 * d).sum();
    let imported_signup_visitors: u64 = kept.iter().sum();
    // Glimpse's own: 5 days × (a bounce from Google + a 90 s direct visit of 2 pages + Signup).
    let own = Figures {
        visitors: 10,
        visits: 10,
        pageviews: 15,
        bounces: 5,
        duration: 5 * 90,
    };

    let metrics = "visitors,visits,pageviews,events,bounce_rate,visit_duration,views_per_visit";
    let live = api.get("aggregate", &[("metrics", metrics)]).await;
    let both = api
        .get(
            "aggregate",
            &[("metrics", metrics), ("with_imported", "true")],
        )
        .await;
    println!("own only: {live}\nwith imported: {both}");
    let value = |body: &Value, m: &str| body["results"][m]["value"].as_f64().unwrap();
    assert_eq!(value(&live, "visitors"), own.visitors as f64);
    assert_eq!(value(&live, "pageviews"), own.pageviews as f64);
    assert_eq!(value(&live, "bounce_rate"), 50.0);
    assert!(live.get("warning").is_none());
    let total_visits = own.visits + imported.visits;
    assert_eq!(
        value(&both, "visitors"),
        (own.visitors + imported.visitors) as f64
    );
    assert_eq!(value(&both, "visits"), total_visits as f64);
    assert_eq!(
        value(&both, "pageviews"),
        (own.pageviews + imported.pageviews) as f64
    );
    // Events: page views and custom events; the visitors table counts page views only.
    assert_eq!(
        value(&both, "events"),
        (own.pageviews + 5 + imported.pageviews) as f64
    );
    assert_eq!(
        value(&both, "bounce_rate"),
        rounded(100 * (own.bounces + imported.bounces), total_visits) as f64
    );
    assert_eq!(
        value(&both, "visit_duration"),
        rounded(own.duration + imported.duration, total_visits) as f64
    );
    let views_per_visit =
        ((own.pageviews + imported.pageviews) as f64 / total_visits as f64 * 100.0).round() / 100.0;
    assert_eq!(value(&both, "views_per_visit"), views_per_visit);
    assert!(both.get("warning").is_none(), "{both}");

    // Timeseries by day: imported days carry their own figures, Glimpse's days theirs.
    let series = api
        .get(
            "timeseries",
            &[
                ("metrics", "visitors,pageviews,bounce_rate"),
                ("with_imported", "true"),
            ],
        )
        .await;
    let by_date: HashMap<String, &Value> = series["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["date"].as_str().unwrap().to_string(), r))
        .collect();
    for &d in &kept {
        let f = Figures::of(d, 1);
        let row = by_date[&date(d as u32)];
        assert_eq!(row["visitors"], f.visitors, "{} ago: {row}", d);
        assert_eq!(row["pageviews"], f.pageviews);
        assert_eq!(row["bounce_rate"], rounded(100 * f.bounces, f.visits));
    }
    for d in 9..=FIRST_OWN_DAY {
        let row = by_date[&date(d)];
        assert_eq!(row["visitors"], 2, "{d} days ago: {row}");
        assert_eq!(row["pageviews"], 3);
        assert_eq!(row["bounce_rate"], 50);
    }
    // Hours: imported days have no hours, so they are left out, and the answer says so.
    let hourly = api
        .get(
            "timeseries",
            &[
                ("metrics", "visitors"),
                ("interval", "hour"),
                ("with_imported", "true"),
            ],
        )
        .await;
    assert!(
        hourly["warning"].as_str().unwrap().contains("hourly"),
        "{hourly}"
    );
    let hourly_visitors: u64 = hourly["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["visitors"].as_u64().unwrap())
        .sum();
    assert_eq!(hourly_visitors, own.visitors);

    // Sources: Glimpse's Google bounces and direct visits plus the imported ones.
    let sources = api
        .breakdown(
            "visit:source",
            "source",
            &[
                ("metrics", "visitors,visits,bounce_rate"),
                ("with_imported", "true"),
            ],
        )
        .await;
    assert_eq!(sources["Google"]["visitors"], 5 + google.visitors);
    assert_eq!(sources["Google"]["visits"], 5 + google.visits);
    assert_eq!(
        sources["Google"]["bounce_rate"],
        rounded(100 * (5 + google.bounces), 5 + google.visits)
    );
    assert_eq!(sources["Direct / None"]["visitors"], 5 + direct.visitors);
    assert_eq!(sources.len(), 2, "{sources:?}");

    // Pages: Plausible exports no bounces per page, so bounce rate stays Glimpse's own.
    let pages = api
        .breakdown(
            "event:page",
            "page",
            &[
                ("metrics", "visitors,pageviews,bounce_rate"),
                ("with_imported", "true"),
            ],
        )
        .await;
    let own_pages = api
        .breakdown(
            "event:page",
            "page",
            &[("metrics", "visitors,pageviews,bounce_rate")],
        )
        .await;
    assert_eq!(own_pages["/"]["pageviews"], 10);
    assert_eq!(pages["/"]["visitors"], 10 + imported.visitors);
    assert_eq!(pages["/"]["pageviews"], 10 + imported.pageviews);
    assert_eq!(pages["/"]["bounce_rate"], own_pages["/"]["bounce_rate"]);
    assert_eq!(pages["/pricing"], own_pages["/pricing"]);

    // Event names: custom events, and page views as `pageview`.
    let names = api
        .breakdown(
            "event:name",
            "name",
            &[("metrics", "visitors,events"), ("with_imported", "true")],
        )
        .await;
    assert_eq!(names["Signup"]["events"], 5 + imported_signups);
    assert_eq!(names["Signup"]["visitors"], 5 + imported_signup_visitors);
    assert_eq!(names["pageview"]["events"], 15 + imported.pageviews);

    // Plausible's names become Glimpse's: Mobile → mobile, GNU/Linux → Linux.
    let devices = api
        .breakdown("visit:device", "device", &[("with_imported", "true")])
        .await;
    assert_eq!(devices["mobile"]["visitors"], 10 + imported.visitors);
    assert_eq!(devices.len(), 1, "{devices:?}");
    let os = api
        .breakdown("visit:os", "os", &[("with_imported", "true")])
        .await;
    assert_eq!(os["Linux"]["visitors"], 10 + imported.visitors);

    // A filter narrows by a property the imported rows do not have: left out, with a warning.
    let filtered = api
        .get(
            "aggregate",
            &[
                ("metrics", "visitors"),
                ("filters", "visit:source==Google"),
                ("with_imported", "true"),
            ],
        )
        .await;
    assert_eq!(value(&filtered, "visitors"), 5.0);
    assert!(
        filtered["warning"].as_str().unwrap().contains("filtered"),
        "{filtered}"
    );
    let bad = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/stats/aggregate", api.base),
        &[("site_id", SITE), ("with_imported", "yes")],
    )
    .unwrap();
    let response = api
        .http
        .get(bad)
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("with_imported"));
    stop.cancel();

    // Retention: with 16 days, the imported days 20..17 ago expire; 16..14 stay.
    let short = format!("[[sites]]\ndomain = \"{SITE}\"\nretention_days = 16\n");
    let (ok, out, err) = glimpse(&ch, &short, &["retention", "apply"]).await;
    assert!(ok, "{err}");
    println!("{out}");
    // 4 days × 7 rows; the command waits until they are gone.
    assert!(
        out.contains("example.com: 28 expired imported daily rows deleted"),
        "{out}"
    );
    let left: Vec<String> = ch
        .client
        .query("SELECT DISTINCT toString(date) FROM glimpse.imported_daily ORDER BY 1")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(left, [date(16), date(15), date(14)]);
}
