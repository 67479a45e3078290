//! The shared fixture: one ClickHouse, the fixture's rows and the query services, started once
//! for the whole test binary (by the first test that needs them) on a runtime that lives as
//! long as the binary, so that a service outlives the test that started it.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use glimpse_core::schema::EventRow;
use glimpse_core::site::{Site, SiteConfig};
use glimpse_core::Config;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::common::{self, TestClickHouse};
use crate::expected::{Sums, GOALS};
use crate::fixture::fixture;
use crate::funnels::{self, FUNNEL_GOALS};
use crate::{BERLIN, FUNNEL_SITE, OTHER, SHARE_TOKEN, SITE};

pub struct Service {
    pub ch: &'static TestClickHouse,
    /// The database of its events and keys.
    pub db: &'static str,
    pub base: String,
    /// With `min_group_size = 3`.
    pub k_base: String,
    pub http: reqwest::Client,
    pub key: String,
    pub berlin_key: String,
    pub operator_key: String,
    pub fixture: Vec<EventRow>,
}

/// Runs a section that only reads: alongside the other readers, never beside a writer.
pub fn reading<F, Fut>(section: F)
where
    F: FnOnce(&'static Service) -> Fut,
    Fut: Future<Output = ()>,
{
    let s = shared();
    // A writer that failed poisons the lock; what it guards is still usable.
    let _readers = DATA.read().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(section(s));
}

/// Runs a section that writes to the shared database (rows, keys): alone, so that no reader
/// sees it half-done or counts rows while it inserts.
pub fn writing<F, Fut>(section: F)
where
    F: FnOnce(&'static Service) -> Fut,
    Fut: Future<Output = ()>,
{
    let s = shared();
    // (Poisoned as in `reading`.)
    let _alone = DATA.write().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(section(s));
}

/// Runs a section that changes the figures (builds the rollup, deletes events) on a database
/// of its own with the same fixture, served by services of its own on the same ClickHouse.
pub fn on_own_database<F, Fut>(section: F)
where
    F: FnOnce(&'static Service) -> Fut,
    Fut: Future<Output = ()>,
{
    static OWN: OnceLock<Service> = OnceLock::new();
    let s = OWN.get_or_init(|| runtime().block_on(start(clickhouse(), "glimpse_rollup")));
    runtime().block_on(section(s));
}

/// Readers share it, writers take it alone (the shared database's rows and keys).
static DATA: RwLock<()> = RwLock::new(());

/// The services' runtime: never dropped, so they serve until the binary exits.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// The ClickHouse every service uses: stopped and deleted when the binary exits (a static is
/// never dropped, so a watchdog does it; see `TestClickHouse::shared_until_exit`).
fn clickhouse() -> &'static TestClickHouse {
    static CLICKHOUSE: OnceLock<&'static TestClickHouse> = OnceLock::new();
    CLICKHOUSE.get_or_init(|| {
        runtime()
            .block_on(TestClickHouse::start())
            .shared_until_exit()
    })
}

/// The services on database `glimpse`, for every section that leaves the figures as they are.
fn shared() -> &'static Service {
    static SHARED: OnceLock<Service> = OnceLock::new();
    SHARED.get_or_init(|| runtime().block_on(start(clickhouse(), "glimpse")))
}

pub fn config(ch: &TestClickHouse, min_group_size: u64) -> Config {
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
            Site::parse(SiteConfig {
                goals: FUNNEL_GOALS.map(String::from).to_vec(),
                ..site(FUNNEL_SITE, "UTC")
            })
            .unwrap(),
        ],
        query: glimpse_core::config::QueryConfig {
            min_group_size,
            ..ch.config().query
        },
        ..ch.config()
    }
}

/// The fixture's rows in database `db` of `ch`, and two query services on it (`min_group_size` 0 and
/// 3) serving until the binary exits.
async fn start(ch: &'static TestClickHouse, db: &'static str) -> Service {
    glimpse_core::schema::migrate(&ch.client, db)
        .await
        .expect("migrate");
    let fixture = fixture();
    let mut insert = ch
        .client
        .clone()
        .with_database(db)
        .insert::<EventRow>("events")
        .await
        .expect("insert");
    for row in fixture.iter().chain(&funnels::rows()) {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    let config = |k| Config {
        clickhouse_database: db.into(),
        ..config(ch, k)
    };
    let mut bases = Vec::new();
    for k in [0, 3] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(glimpse_query::serve(
            config(k),
            listener,
            std::future::pending(),
        ));
    }
    let cfg = config(0);
    let key = |site: &'static str| {
        let (client, cfg) = (ch.client.clone(), cfg.clone());
        async move {
            glimpse_query::auth::create_key(&client, db, &cfg, site, "test")
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
        "fixture in {db}: {} events, {} visits",
        fixture.len(),
        fixture
            .iter()
            .map(|e| e.session_id)
            .collect::<HashSet<_>>()
            .len()
    );
    Service {
        ch,
        db,
        base: bases[0].clone(),
        k_base: bases[1].clone(),
        http,
        key: k1,
        berlin_key: k2,
        operator_key: k3,
        fixture,
    }
}

impl Service {
    pub async fn get_with(
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

    pub async fn json(&self, path: &str, params: &[(&str, &str)]) -> Value {
        self.json_at(&self.base, &self.key, path, params).await
    }

    pub async fn json_at(
        &self,
        base: &str,
        key: &str,
        path: &str,
        params: &[(&str, &str)],
    ) -> Value {
        let (status, body) = self.get_with(base, Some(key), path, params).await;
        assert_eq!(status, 200, "{path} {params:?}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

pub fn check_row(what: &str, actual: &Value, expected: &Sums, metrics: &str) {
    for m in metrics.split(',') {
        assert_eq!(
            actual[m],
            expected.metric(m),
            "{what}: metric {m}: got {actual}, expected sums {expected:?}"
        );
    }
}
