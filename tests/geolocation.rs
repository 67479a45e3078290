//! Places on the map end to end, with each GeoIP record layout: beacons from documented public
//! addresses arrive through a trusted proxy (`trusted_proxies = ["127.0.0.1"]`,
//! `X-Forwarded-For`) at a real collector writing to a real ClickHouse, and the stats API's
//! Locations breakdowns (`visit:country`, `visit:region`, `visit:city`) must name exactly the
//! places the database knows. The databases are written by the test with known answers:
//! MaxMind's GeoIP2 layout configured as `geoip_db`, and the ip-location-db layout installed
//! as the default database under `<data_dir>/geoip` (what `glimpse geoip update` does) with
//! `geoip_db` unset. The collector's privacy statement and the dashboard credit the database
//! when its licence asks for it.

mod common;

#[path = "../collector/src/ingest/geo_test_dbs.rs"]
mod geo_test_dbs;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{browser_client, wait_for_200, TestClickHouse};
use geo_test_dbs::{Kind, PLACES, UNKNOWN};
use glimpse_core::geoip::default_dir;
use glimpse_core::site::Site;
use glimpse_core::Config;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// One database set-up, counted on its own site.
struct Case {
    site: &'static str,
    /// Written into the data dir's `geoip/` (the default database), or configured as
    /// `geoip_db` when `configured`.
    kinds: &'static [Kind],
    configured: bool,
    with_region: bool,
    with_city: bool,
    /// The credit the privacy statement must show, if any.
    credit: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        site: "maxmind-city.example",
        kinds: &[Kind::MaxMindCity],
        configured: true,
        with_region: true,
        with_city: true,
        credit: None,
    },
    Case {
        site: "maxmind-country.example",
        kinds: &[Kind::MaxMindCountry],
        configured: true,
        with_region: false,
        with_city: false,
        credit: None,
    },
    Case {
        site: "dbip-city.example",
        kinds: &[Kind::IpLocationCityV4, Kind::IpLocationCityV6],
        configured: false,
        with_region: false,
        with_city: true,
        credit: Some("IP geolocation by DB-IP (https://db-ip.com)."),
    },
    Case {
        site: "whois-country.example",
        kinds: &[Kind::IpLocationCountry],
        configured: false,
        with_region: false,
        with_city: false,
        credit: Some("IP geolocation from RIR data by the NRO (nro.net), CC BY 4.0"),
    },
];

fn case_config(ch: &TestClickHouse, case: &Case, data_dir: &Path) -> Config {
    let geoip = default_dir(data_dir);
    std::fs::create_dir_all(&geoip).unwrap();
    let mut config = Config {
        sites: vec![Site::new(case.site)],
        data_dir: data_dir.to_path_buf(),
        trusted_proxies: "127.0.0.1".parse().unwrap(),
        ..ch.config()
    };
    for kind in case.kinds {
        let path = geo_test_dbs::write(&geoip, *kind);
        if case.configured {
            config.geoip_db = Some(path);
        }
    }
    config
}

/// Runs a collector for `case`, sends one pageview per known place and one from an unknown
/// address, each through the trusted proxy, checks the privacy statement, and stops it
/// (which writes every accepted event).
async fn collect(ch: &TestClickHouse, case: &Case, data_dir: &Path) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(glimpse_collector::serve(
        case_config(ch, case, data_dir),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let client = browser_client();
    wait_for_200(&client, &format!("{base}/ready"), Duration::from_secs(30)).await;
    let addresses = PLACES.iter().map(|p| p.address).chain([UNKNOWN]);
    for (i, address) in addresses.enumerate() {
        let body = format!(
            r#"{{"n":"pageview","u":"https://{}/page-{i}","d":"{}"}}"#,
            case.site, case.site
        );
        let response = client
            .post(format!("{base}/api/event"))
            .header("content-type", "text/plain")
            .header("x-forwarded-for", address)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}: {address}", case.site);
    }
    let statement = client
        .get(format!("{base}/privacy?site={}", case.site))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        statement.contains("the country, region and city your IP address belongs to"),
        "{}: {statement}",
        case.site
    );
    match case.credit {
        Some(credit) => assert!(statement.contains(credit), "{}: {statement}", case.site),
        None => assert!(!statement.contains("IP geolocation"), "{statement}"),
    }
    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(
        report.rows_written,
        PLACES.len() as u64 + 1,
        "{}",
        case.site
    );
}

/// `{value → visitors}` of a breakdown, without the unknown value.
async fn breakdown(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    site: &str,
    property: &str,
) -> BTreeMap<String, u64> {
    let today = jiff::Zoned::now().date();
    let range = format!(
        "{},{}",
        today.yesterday().unwrap(),
        today.tomorrow().unwrap()
    );
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/v1/stats/breakdown"),
        [
            ("site_id", site),
            ("property", property),
            ("metrics", "visitors"),
            ("period", "custom"),
            ("date", range.as_str()),
        ],
    )
    .unwrap();
    let response = http.get(url).bearer_auth(key).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{site} {property}: {body}");
    let field = property.rsplit(':').next().unwrap();
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let value = row[field].as_str().unwrap_or_default().to_string();
            (value, row["visitors"].as_u64().unwrap())
        })
        .filter(|(value, _)| !value.is_empty() && value != "(none)")
        .collect()
}

fn expected(values: impl Iterator<Item = String>) -> BTreeMap<String, u64> {
    values.map(|v| (v, 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_come_from_each_database_layout_through_a_trusted_proxy() {
    let ch = TestClickHouse::start().await;
    let dirs: Vec<tempfile::TempDir> = CASES.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    for (case, dir) in CASES.iter().zip(&dirs) {
        collect(&ch, case, dir.path()).await;
    }

    // One query service for every site; its data dir is the DB-IP case's, so its dashboard
    // must credit DB-IP.
    let credited = CASES
        .iter()
        .position(|c| c.site == "dbip-city.example")
        .unwrap();
    let config = Config {
        sites: CASES.iter().map(|c| Site::new(c.site)).collect(),
        ..case_config(&ch, &CASES[credited], dirs[credited].path())
    };
    let (key, _) = glimpse_query::auth::create_key(&ch.client, "glimpse", &config, "*", "geo")
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
    wait_for_200(&http, &format!("{base}/ready"), Duration::from_secs(30)).await;

    for case in CASES {
        let countries = breakdown(&http, &base, &key, case.site, "visit:country").await;
        assert_eq!(
            countries,
            expected(PLACES.iter().map(|p| p.country.to_string())),
            "{}",
            case.site
        );
        let regions = breakdown(&http, &base, &key, case.site, "visit:region").await;
        let want_regions = PLACES
            .iter()
            .filter(|_| case.with_region)
            .map(|p| format!("{}-{}", p.country, p.subdivision));
        assert_eq!(regions, expected(want_regions), "{}", case.site);
        let cities = breakdown(&http, &base, &key, case.site, "visit:city").await;
        let want_cities = PLACES
            .iter()
            .filter(|_| case.with_city)
            .map(|p| p.city.to_string());
        assert_eq!(cities, expected(want_cities), "{}", case.site);
        println!("{}: countries {countries:?}, cities {cities:?}", case.site);
    }

    let page = http.get(&base).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains(r#"<a href="https://db-ip.com">IP geolocation by DB-IP</a>"#),
        "{page}"
    );
    stop.cancel();
}
