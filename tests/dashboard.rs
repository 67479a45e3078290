//! The dashboard end to end: a deterministic fixture in a real ClickHouse, the query service
//! in-process, and real headless Chromium driven by `tracker-js/e2e/dashboard.mjs`
//! (puppeteer-core). The page must show the stats API's numbers, before and after clicking
//! breakdown rows (which must put the filter in the URL), with a key entered once (kept in
//! sessionStorage only), with a share link at phone width, and signed in with an e-mail and
//! password (a viewer of one site) and out again. Screenshots go to
//! `target/dashboard.png`, `target/dashboard-filtered.png` and `target/dashboard-mobile.png`.
//! Also: how the page and its assets are served, and `/api/v1/sites` and
//! `/api/v1/stats/props`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::browser::{require_browser, run_driver};
use common::{insert_events, Lcg, TestClickHouse};
use glimpse_core::schema::EventRow;
use glimpse_core::site::{Site, SiteConfig};
use glimpse_core::Config;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SITE: &str = "example.com";
const OTHER: &str = "other.org";
const SHARE_TOKEN: &str = "dashboard-share-0123456789";
const VIEWER_EMAIL: &str = "viewer@example.com";
const VIEWER_PASSWORD: &str = "viewer-password-42";
/// The view the browser opens: the last 7 days up to 2026-03-31 (the fixture's last day).
const VIEW: [(&str, &str); 2] = [("period", "7d"), ("date", "2026-03-31")];
const HEADLINE: &str = "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The goals of `SITE`: a custom event and two page goals.
const GOALS: [&str; 3] = ["Signup", "Visit /pricing", "Visit /blog/*"];

/// Two weeks (2026-03-18..31 UTC) of visits to two sites: pages, sources, campaigns, places,
/// devices, and a custom event with a property.
fn fixture() -> Vec<EventRow> {
    let mut rng = Lcg(6);
    let pages = ["/", "/pricing", "/blog/hello", "/docs", "/about"];
    let sources = [
        ("", "", ""),
        ("Google", "google.com/", ""),
        ("Google", "google.com/", ""),
        ("Hacker News", "news.ycombinator.com/item", ""),
        ("newsletter", "", "spring-launch"),
    ];
    let places = [
        ("DE", "DE-BE", "Berlin"),
        ("FR", "FR-IDF", "Paris"),
        ("US", "US-CA", "San Francisco"),
        ("GB", "GB-LND", "London"),
    ];
    let devices = [
        ("desktop", "Firefox", "GNU/Linux"),
        ("desktop", "Chrome", "Windows"),
        ("mobile", "Chrome", "Android"),
        ("mobile", "Safari", "iOS"),
        ("tablet", "Safari", "iOS"),
    ];
    let start = jiff::civil::date(2026, 3, 18)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_second();
    let mut rows = Vec::new();
    let mut session_id = 1;
    for (site, visitors) in [(SITE, 160u64), (OTHER, 20)] {
        for v in 0..visitors {
            let visitor_id = site.len() as u64 * 1_000_000 + v;
            let place = places[rng.next(places.len() as u64) as usize];
            let device = devices[rng.next(devices.len() as u64) as usize];
            for _ in 0..1 + rng.next(2) {
                session_id += 1;
                let mut ts = start + rng.next(14 * 24 * 3600) as i64;
                let source = sources[rng.next(sources.len() as u64) as usize];
                for i in 0..1 + rng.next(4) {
                    let mut row = EventRow {
                        site: site.into(),
                        timestamp: ts as u32,
                        name: "pageview".into(),
                        hostname: site.into(),
                        pathname: pages[rng.next(pages.len() as u64) as usize].into(),
                        visitor_id,
                        session_id,
                        browser: device.1.into(),
                        os: device.2.into(),
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
                        if !source.2.is_empty() {
                            row.utm_source = "newsletter".into();
                            row.utm_medium = "email".into();
                            row.utm_campaign = source.2.into();
                        }
                    } else if rng.next(4) == 0 {
                        row.name = "Signup".into();
                        row.prop_keys = vec!["plan".into()];
                        row.prop_values =
                            vec![if rng.next(3) == 0 { "pro" } else { "free" }.into()];
                    }
                    rows.push(row);
                    ts += 20 + rng.next(300) as i64;
                }
            }
        }
    }
    // The visit columns, as the collector stamps them on rows it receives.
    glimpse_collector::ingest::sessions::stamp_visits(&mut rows);
    rows
}

struct Service {
    _ch: TestClickHouse,
    base: String,
    http: reqwest::Client,
    key: String,
    site_key: String,
    stop: CancellationToken,
}

async fn start() -> Service {
    let ch = TestClickHouse::start().await;
    glimpse_core::schema::migrate(&ch.client, "glimpse")
        .await
        .expect("migrate");
    insert_events(&ch.client, "glimpse", &fixture()).await;
    ch.client
        .query(
            "INSERT INTO glimpse.dropped_events (site, date, reason, count) VALUES \
             ('example.com', '2026-03-30', 'bot', 17), ('example.com', '2026-03-31', 'opt_out', 3)",
        )
        .execute()
        .await
        .unwrap();
    // Plausible data imported for the other site (`glimpse import --format plausible`).
    ch.client
        .query(
            "INSERT INTO glimpse.imported_daily (site, import_id, date, kind, visitors, visits, \
             pageviews, bounces, visit_duration) VALUES \
             ('other.org', 1, '2026-03-26', 'visitors', 40, 50, 120, 20, 3000), \
             ('other.org', 1, '2026-03-22', 'visitors', 10, 10, 10, 10, 0)",
        )
        .execute()
        .await
        .unwrap();

    let config = Config {
        sites: vec![
            Site::parse(SiteConfig {
                share_token: Some(SHARE_TOKEN.into()),
                goals: GOALS.map(String::from).to_vec(),
                ..SiteConfig::new(SITE)
            })
            .unwrap(),
            Site::new(OTHER),
        ],
        ..ch.config()
    };
    let key = |site: &'static str| {
        let (client, config) = (ch.client.clone(), config.clone());
        async move {
            glimpse_query::auth::create_key(&client, "glimpse", &config, site, "dashboard")
                .await
                .unwrap()
                .0
        }
    };
    let (key, site_key) = (key("*").await, key(SITE).await);
    // A person who signs in with a password: a viewer of one site.
    glimpse_query::accounts::store::add_user(
        &ch.client,
        "glimpse",
        &config,
        VIEWER_EMAIL,
        VIEWER_PASSWORD,
        glimpse_query::accounts::store::NewRole::Site(glimpse_query::accounts::Role::Viewer),
        &[SITE.to_string()],
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(glimpse_query::serve(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::new();
    common::wait_for_200(&http, &format!("{base}/ready"), Duration::from_secs(30)).await;
    Service {
        _ch: ch,
        base,
        http,
        key,
        site_key,
        stop,
    }
}

impl Service {
    async fn get(&self, key: Option<&str>, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).unwrap();
        let mut request = self.http.get(url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The headline numbers the dashboard asks for, with `filters`.
    async fn headline(&self, filters: &str) -> Value {
        let mut params = vec![
            ("site_id", SITE),
            ("metrics", HEADLINE),
            ("compare", "previous_period"),
            ("filters", filters),
        ];
        params.extend_from_slice(&VIEW);
        let (status, body) = self
            .get(Some(&self.key), "/api/v1/stats/aggregate", &params)
            .await;
        assert_eq!(status, 200, "{body}");
        body["results"].clone()
    }
}

/// The page showed exactly the API's values and changes.
fn assert_shown(what: &str, shown: &Value, api: &Value) {
    for metric in HEADLINE.split(',') {
        let tile = &shown[metric];
        assert_eq!(
            tile["value"].as_str().unwrap(),
            api[metric]["value"].to_string(),
            "{what}: {metric} shown {tile}, API {}",
            api[metric]
        );
        assert_eq!(
            tile["change"].as_str().unwrap(),
            api[metric]["change"].to_string(),
            "{what}: change of {metric}"
        );
    }
    // Counts under 1000 are shown as they are.
    for metric in ["visitors", "visits", "pageviews"] {
        assert_eq!(shown[metric]["text"], shown[metric]["value"], "{what}");
    }
}

/// API filter syntax for one `==` value (`|` and `\` escaped), as the page writes it.
fn filter(property: &str, value: &str) -> String {
    format!(
        "{property}=={}",
        value.replace('\\', "\\\\").replace('|', "\\|")
    )
}

async fn drive_chromium(s: &Service, shots: &Path) -> Value {
    let view = VIEW
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let shots = shots.to_string_lossy();
    let env = [
        ("BASE", s.base.as_str()),
        ("KEY", s.key.as_str()),
        ("SITE", SITE),
        ("SHARE", SHARE_TOKEN),
        ("VIEW", view.as_str()),
        ("SHOTS", shots.as_ref()),
        ("IMPORTED_SITE", OTHER),
        ("EMAIL", VIEWER_EMAIL),
        ("PASSWORD", VIEWER_PASSWORD),
    ];
    run_driver("dashboard.mjs", &env, Duration::from_secs(150)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_real_chromium_shows_the_apis_numbers() {
    require_browser(&[]);
    let s = start().await;
    let shots: PathBuf = root().join("target");
    std::fs::create_dir_all(&shots).unwrap();

    let facts = drive_chromium(&s, &shots).await;
    println!("dashboard facts: {facts}");
    assert_eq!(facts["errors"], json!([]), "console or page errors");
    assert!(facts["api_requests"].as_u64().unwrap() > 10);
    assert_eq!(facts["api_requests_without_auth"], 0);
    assert_eq!(facts["api_requests_with_cookie"], 0);

    // Signed in with e-mail and password (a viewer of SITE): the cookie is HttpOnly and Lax,
    // the viewer sees only SITE and its real numbers (with neither key nor share link, so the
    // cookie carried them); signing out drops the cookie.
    assert_eq!(facts["signin_first_user_hidden"], true, "a user exists");
    assert_eq!(
        facts["signin_mobile_overflow"], 0,
        "the sign-in page fits a phone"
    );
    assert_eq!(facts["signin_wrong"], "invalid email or password");
    assert_eq!(facts["signin_sites"], json!([SITE]));
    assert_eq!(facts["signin_who"], VIEWER_EMAIL);
    assert_eq!(facts["signin_forget_hidden"], true);
    // A viewer has an account page but no settings; so has neither a stats key nor a share link.
    assert_eq!(facts["signin_settings_hidden"], true);
    assert_eq!(facts["signin_account_hidden"], false);
    assert_eq!(facts["key_settings_hidden"], true);
    assert_eq!(
        facts["signin_document_cookie"], "",
        "the script cannot read it"
    );
    assert_eq!(
        facts["signin_cookies"],
        json!([{"name": "glimpse_session", "httpOnly": true, "sameSite": "Lax"}])
    );
    assert_eq!(facts["signin_password_left"], "", "the field is emptied");
    assert_eq!(facts["signed_out_cookies"], 0);

    // Signed in: the key is in sessionStorage only; no cookie, no localStorage.
    assert_eq!(facts["storage"]["session"], json!(["glimpse.key"]));
    assert_eq!(facts["storage"]["local"], json!([]));
    assert_eq!(facts["storage"]["cookie"], "");
    assert_eq!(facts["cookies"], 0);
    assert_eq!(
        facts["sites"],
        json!([SITE, OTHER]),
        "the operator key's sites"
    );

    // Unfiltered: the headline equals the API's, the chart has a point per day, the cards
    // have rows, and the filtered-traffic note counts 20.
    let unfiltered = s.headline("").await;
    assert_shown("unfiltered", &facts["before"], &unfiltered);
    assert_shown("signed in", &facts["signin_headline"], &unfiltered);
    assert_eq!(facts["chart_points"], 7);
    assert!(
        facts["filtered_note"]
            .as_str()
            .unwrap()
            .contains("Not counted: 20 requests filtered out (17 bots, 3 opt-outs)"),
        "{}",
        facts["filtered_note"]
    );
    for card in ["Pages", "Sources", "Campaigns", "Locations", "Devices"] {
        assert!(
            !facts["rows"][card].as_array().unwrap().is_empty(),
            "{card} is empty"
        );
    }
    assert_eq!(facts["rows"]["Custom events"], json!(["Signup"]));

    // Goals: the card shows the API's goal breakdown, visitors and conversion rate per goal,
    // and the change of visitors from the previous period (the default comparison).
    let mut params = vec![
        ("site_id", SITE),
        ("property", "event:goal"),
        ("metrics", "visitors,conversion_rate"),
        ("limit", "10"),
        ("comparison", "previous_period"),
    ];
    params.extend_from_slice(&VIEW);
    let (status, body) = s
        .get(Some(&s.key), "/api/v1/stats/breakdown", &params)
        .await;
    assert_eq!(status, 200, "{body}");
    let api_goals: Vec<Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            // As JavaScript prints the number: 20, not 20.0.
            let rate = r["conversion_rate"].as_f64().unwrap();
            let change = r["change"]["visitors"].as_i64().unwrap();
            let arrow = match change.signum() {
                1 => "↑",
                -1 => "↓",
                _ => "→",
            };
            json!({
                "value": r["goal"],
                "cells": [
                    r["visitors"].to_string(),
                    format!("{rate}%"),
                    format!("{arrow} {}%", change.abs()),
                ],
            })
        })
        .collect();
    assert_eq!(api_goals.len(), GOALS.len(), "{body}");
    assert_eq!(facts["goals"], json!(api_goals));
    let mut plans = facts["rows"]["Event properties"]
        .as_array()
        .unwrap()
        .clone();
    plans.sort_by_key(|v| v.to_string());
    assert_eq!(plans, [json!("free"), json!("pro")]);

    // First click (a source): the filter is in the URL and the numbers are the filtered API's.
    let c1 = &facts["click1"];
    assert_eq!(c1["property"], "visit:source");
    let f1 = filter(
        c1["property"].as_str().unwrap(),
        c1["value"].as_str().unwrap(),
    );
    assert_eq!(facts["filters_after1"], json!(f1));
    let url = facts["url_after1"].as_str().unwrap();
    assert!(
        url.contains(&format!("filters={f1}")) && url.contains("period=7d"),
        "the URL shows the filter and period readably: {url}"
    );
    assert_eq!(facts["chips_after1"], json!([f1]));
    let filtered1 = s.headline(&f1).await;
    assert_ne!(filtered1["visitors"], unfiltered["visitors"]);
    assert_shown("after the first click", &facts["after1"], &filtered1);

    // Second click (a page): both filters.
    let c2 = &facts["click2"];
    assert_eq!(c2["property"], "event:page");
    let f2 = format!(
        "{f1};{}",
        filter(
            c2["property"].as_str().unwrap(),
            c2["value"].as_str().unwrap()
        )
    );
    assert_eq!(facts["filters_after2"], json!(f2));
    let filtered2 = s.headline(&f2).await;
    assert_ne!(filtered2["pageviews"], filtered1["pageviews"]);
    assert_shown("after the second click", &facts["after2"], &filtered2);

    // Back, chip removed, reload.
    assert_eq!(facts["filters_after_back"], json!(f1));
    assert_shown("after going back", &facts["after_back"], &filtered1);
    assert_eq!(facts["filters_after_remove"], Value::Null);
    assert_shown(
        "after removing the filter",
        &facts["after_remove"],
        &unfiltered,
    );
    assert_shown("after a reload", &facts["after_reload"], &unfiltered);
    assert_eq!(facts["day_period"], "day");
    assert_eq!(facts["day_points"], 24, "hourly buckets of 2026-03-31");
    let (status, day) = s
        .get(
            Some(&s.key),
            "/api/v1/stats/aggregate",
            &[
                ("site_id", SITE),
                ("metrics", HEADLINE),
                ("compare", "previous_period"),
                ("period", "day"),
                ("date", "2026-03-31"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_shown("one day", &facts["day"], &day["results"]);
    assert!(facts["realtime_points"].as_u64().unwrap() >= 30);

    // The site with imported data: the page shows the API's figures with imports (which differ
    // from those without), says which days are imported, and says a filtered view leaves
    // them out.
    let other = |with_imported: &'static str| {
        let mut params = vec![
            ("site_id", OTHER),
            ("metrics", HEADLINE),
            ("compare", "previous_period"),
            ("with_imported", with_imported),
        ];
        params.extend_from_slice(&VIEW);
        params
    };
    let (_, with) = s
        .get(Some(&s.key), "/api/v1/stats/aggregate", &other("true"))
        .await;
    let (_, without) = s
        .get(Some(&s.key), "/api/v1/stats/aggregate", &other("false"))
        .await;
    assert_eq!(
        with["results"]["visitors"]["value"].as_u64().unwrap(),
        without["results"]["visitors"]["value"].as_u64().unwrap() + 40,
        "{with} {without}"
    );
    assert_eq!(
        with["results"]["visitors"]["comparison_value"]
            .as_u64()
            .unwrap(),
        without["results"]["visitors"]["comparison_value"]
            .as_u64()
            .unwrap()
            + 10
    );
    assert_shown("imported", &facts["imported"], &with["results"]);
    assert_eq!(
        facts["imported_note"],
        "Includes data imported from Plausible for 2026-03-22 to 2026-03-26."
    );
    assert!(
        facts["imported_filtered_note"]
            .as_str()
            .unwrap()
            .contains("is not included in this view"),
        "{}",
        facts["imported_filtered_note"]
    );

    // The share link at phone width: the site's numbers, that site only, nothing wider than
    // the screen; a wrong token is an error on the page.
    assert_shown("share link", &facts["share"], &unfiltered);
    assert_eq!(facts["share_sites"], json!([SITE]));
    assert_eq!(facts["share_forget_hidden"], true);
    assert_eq!(facts["share_nav_hidden"], true);
    assert!(
        facts["mobile_overflow"].as_i64().unwrap() <= 0,
        "the page is wider than a phone: {}",
        facts["mobile_overflow"]
    );
    assert!(
        facts["bad_share_error"]
            .as_str()
            .unwrap()
            .contains("invalid share link"),
        "{}",
        facts["bad_share_error"]
    );
    println!(
        "screenshots: {}",
        [
            "dashboard.png",
            "dashboard-filtered.png",
            "dashboard-mobile.png",
            "dashboard-imported.png"
        ]
        .map(|f| shots.join(f).display().to_string())
        .join(", ")
    );
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_assets_sites_and_props_are_served_safely() {
    let s = start().await;
    let page = s.http.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("style="));
    // Every asset the page links is served under its hashed name, cacheable for a year.
    let mut linked = 0;
    for (ext, content_type) in [
        ("js", "text/javascript; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
        ("svg", "image/svg+xml"),
    ] {
        let at = html.find(&format!(".{ext}\"")).expect(ext);
        let start = html[..at].rfind("/assets/").unwrap();
        let path = &html[start..at + ext.len() + 1];
        let r = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type, "{path}");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(r.headers().contains_key("content-security-policy"));
        linked += 1;
    }
    assert_eq!(linked, 3);
    let missing = s
        .http
        .get(format!("{}/assets/app-0000.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // /api/v1/sites: what the key may read; a share token only its site.
    let sites = "/api/v1/sites";
    let domains = |body: &Value| -> Vec<String> {
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["domain"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, body) = s.get(Some(&s.key), sites, &[]).await;
    assert_eq!(
        (status, domains(&body)),
        (200, vec![SITE.into(), OTHER.into()])
    );
    assert_eq!(body["results"][0]["timezone"], "UTC");
    assert_eq!(body["results"][0]["goals"], json!(GOALS));
    assert_eq!(body["results"][1]["goals"], json!([]));
    let (status, body) = s.get(Some(&s.site_key), sites, &[]).await;
    assert_eq!((status, domains(&body)), (200, vec![SITE.into()]));
    let share = [("site_id", SITE), ("auth", SHARE_TOKEN)];
    let (status, body) = s.get(None, sites, &share).await;
    assert_eq!((status, domains(&body)), (200, vec![SITE.into()]));
    for (key, params) in [
        (None, vec![]),
        (Some("glimpse_00"), vec![]),
        (None, vec![("site_id", SITE), ("auth", "wrong")]),
        (None, vec![("site_id", OTHER), ("auth", SHARE_TOKEN)]),
    ] {
        let (status, body) = s.get(key, sites, &params).await;
        assert_eq!(status, 401, "{key:?} {params:?}: {body}");
    }

    // /api/v1/stats/props: the property names of the period, authorized like the stats API.
    let mut params = vec![("site_id", SITE)];
    params.extend_from_slice(&VIEW);
    let (status, body) = s
        .get(Some(&s.site_key), "/api/v1/stats/props", &params)
        .await;
    assert_eq!((status, &body), (200, &json!({"results": ["plan"]})));
    let (status, _) = s.get(None, "/api/v1/stats/props", &params).await;
    assert_eq!(status, 401);
    params[0] = ("site_id", OTHER);
    let (status, _) = s
        .get(Some(&s.site_key), "/api/v1/stats/props", &params)
        .await;
    assert_eq!(status, 403);
    s.stop.cancel();
}
