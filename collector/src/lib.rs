//! Glimpse's collector: accepts beacons over HTTP, turns them into privacy-preserving event
//! rows, and writes them to ClickHouse in batches.
//!
//! Folders say where things happen: `http` (hyper server and endpoints), `ingest` (the pure
//! beacon → row pipeline), `sink` (queue, writer, ClickHouse), `schema` (tables and
//! migrations), `local_clickhouse` (the ClickHouse Glimpse starts when none is configured).

pub mod admin;
pub mod http;
pub mod ingest;
pub mod privacy_statement;
pub mod sink;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use glimpse_core::Config;
use http::{Readiness, State};
use ingest::pipeline::Enrichers;
use ingest::pseudonym::SaltStore;
use ingest::sessions::Sessions;
use ingest::BeaconLimits;
use sink::{ClickHouseSink, Ingest, Sink, WriterConfig, WriterControl};

/// How long a collector starting on a cluster waits for the migrations and the cluster's
/// agreement on today's salt before it serves with a salt of its own (see
/// [`SaltStore::open_shared`]).
const SHARED_SALT_PATIENCE: Duration = Duration::from_secs(30);

/// How long a collector waits after proposing a salt for the other collectors' proposals.
const SHARED_SALT_SETTLE: Duration = Duration::from_secs(5);

/// The salts from `salt_dir`, or on a cluster with `salt_key` agreed through the cluster.
async fn open_salts(config: &Config, readiness: &Readiness) -> Result<SaltStore, ServeError> {
    let day = ingest::pseudonym::day_of(u64::from(glimpse_core::clock::unix_now()));
    let (Some(_), Some(key), Some(client)) = (
        &config.clickhouse_cluster,
        &config.collector.salt_key,
        &readiness.clickhouse,
    ) else {
        // On a cluster without `salt_key`, `salt_dir_shared` said the directory is shared
        // (`Config::validate_for_collector`).
        return Ok(SaltStore::open(&config.salt_dir(), day)?);
    };
    // The table comes with migration 20, which this collector may be applying right now.
    let deadline = tokio::time::Instant::now() + SHARED_SALT_PATIENCE;
    while !readiness.migrated.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shared = ingest::shared_salts::SharedSalts::new(
        client.clone(),
        &config.clickhouse_database,
        key.expose(),
        SHARED_SALT_SETTLE,
    );
    let patience = deadline.saturating_duration_since(tokio::time::Instant::now());
    Ok(SaltStore::open_shared(Arc::new(shared), day, patience).await)
}

/// What the collector did, once it has shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeReport {
    pub rows_written: u64,
    /// Rows accepted but not written before the shutdown deadline (logged as errors). Always 0
    /// with the spool, which keeps them on disk instead.
    pub rows_lost: u64,
    /// Rows still in the spool at shutdown (ClickHouse unreachable); shipped at the next start.
    pub rows_left_in_spool: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no ClickHouse URL: set clickhouse_url (GLIMPSE_CLICKHOUSE_URL)")]
    NoClickHouse,
    #[error("{0}")]
    GeoIp(#[from] ingest::geo::GeoError),
    #[error("visitor-id salts: {0}")]
    Salts(#[from] ingest::pseudonym::SaltError),
    #[error(transparent)]
    Config(#[from] glimpse_core::config::ConfigError),
    #[error("{0}")]
    Spool(#[from] sink::spool::SpoolError),
    #[error(transparent)]
    Tls(#[from] glimpse_core::db::tls::TlsError),
}

/// Runs the collector on `listener` until `shutdown` resolves, then stops accepting, finishes
/// in-flight requests, writes every queued row and returns, all within
/// `config.shutdown_timeout_secs`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<ServeReport, ServeError> {
    config.validate_for_collector()?;
    let url = config
        .clickhouse_url
        .clone()
        .ok_or(ServeError::NoClickHouse)?;
    let client = glimpse_core::db::connect(&config, &url);
    glimpse_core::db::tls::check(&client, &url).await?;
    let readiness = Arc::new(Readiness::new(Some(client.clone())));
    let background = CancellationToken::new();
    let flavor = Arc::new(std::sync::OnceLock::new());
    tokio::spawn(migrate_until_done(
        client.clone(),
        config.clickhouse_database.clone(),
        config.clickhouse_cluster.clone(),
        readiness.clone(),
        flavor.clone(),
        background.clone(),
    ));
    let drops = Arc::new(sink::DropCounts::default());
    let flusher = tokio::spawn(sink::drops::flush_periodically(
        client.clone().with_database(&config.clickhouse_database),
        drops.clone(),
        Duration::from_secs(10),
        background.clone(),
    ));
    tokio::spawn(watch_clickhouse(
        client.clone(),
        Duration::from_secs(5),
        background.clone(),
    ));
    let sink = ClickHouseSink::new(client, &config.clickhouse_database, flavor)
        .on_cluster(config.clickhouse_cluster.is_some());
    let report = serve_with_sink(config, listener, shutdown, sink, readiness, drops).await;
    background.cancel();
    let _ = flusher.await;
    report
}

/// [`serve`] with any sink, for tests of the HTTP layer. `drops` receives the filtered-traffic
/// counts; the caller decides where they go.
pub async fn serve_with_sink<S: Sink>(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    sink: S,
    readiness: Arc<Readiness>,
    drops: Arc<sink::DropCounts>,
) -> Result<ServeReport, ServeError> {
    glimpse_core::telemetry::install();
    // `geoip_db` when set, else the free database `glimpse geoip update` installed under
    // `<data_dir>/geoip` (scripts/run.sh and the Docker image do that by default).
    let geo_source = glimpse_core::geoip::Source::of(&config);
    // Taken before the files are read, so that a change during start-up is seen by the reload.
    let geo_loaded = ingest::geo_reload::Fingerprint::of(geo_source.as_ref());
    let geo = match geo_source {
        Some(source) => {
            let geo = ingest::geo::GeoIp::open_all(&source.paths)?;
            tracing::info!(
                path = %geo.path().display(),
                kind = geo.database_type(),
                edition = source.edition.map(|e| e.name),
                "GeoIP database loaded"
            );
            Some(geo)
        }
        None => {
            tracing::warn!(
                "no GeoIP database (geoip_db unset and none installed by `glimpse geoip \
                 update`): countries, regions and cities stay empty until one is"
            );
            None
        }
    };
    let enrichers = Enrichers::from_config(&config, geo);
    let trusted_proxies = config.trusted_proxies();
    let salts = Arc::new(open_salts(&config, &readiness).await?);
    // Sites added at run time, as last seen: accepted even if ClickHouse is down now.
    let sites_snapshot = config.data_dir.join("sites.json");
    enrichers.sites.restore(&sites_snapshot);
    let stop_registry = CancellationToken::new();
    if let Some(client) = &readiness.clickhouse {
        tokio::spawn(enrichers.sites.clone().refresh_periodically(
            glimpse_core::registry::Registry::new(client.clone(), &config.clickhouse_database),
            Some(sites_snapshot),
            stop_registry.clone(),
        ));
        tokio::spawn(retention_periodically(
            client.clone(),
            config.clickhouse_database.clone(),
            config.clickhouse_cluster.clone(),
            enrichers.sites.clone(),
            stop_registry.clone(),
        ));
    } else if enrichers.sites.current().is_empty() {
        tracing::warn!("no sites configured: every beacon will be refused (set GLIMPSE_SITES)");
    }

    let config = Arc::new(config);
    let control = WriterControl::default();
    let (ingest, buffer) = if config.collector.spool {
        let spool_config = sink::spool::SpoolConfig::from_config(&config);
        let (spool, tasks) = sink::spool::open(spool_config, sink, control.clone())?;
        (Ingest::Spool(spool), Buffer::Spool(tasks))
    } else {
        let (queue, rx) = sink::queue(config.collector.queue_capacity);
        let writer = sink::spawn_writer(
            sink,
            rx,
            WriterConfig::from_config(&config),
            control.clone(),
        );
        (Ingest::Memory(queue), Buffer::Memory(writer))
    };
    let state = Arc::new(State {
        limits: BeaconLimits::from_config(&config),
        enrichers,
        trusted_proxies,
        salts,
        sessions: Sessions::with_limit(config.collector.max_open_visits),
        drops,
        ingest,
        privacy_limiter: glimpse_core::net::rate_limit::RateLimiter::per_minute(10, 5),
        erase_limiter: glimpse_core::net::rate_limit::RateLimiter::per_hour(
            config.collector.erase_limit_per_hour,
        ),
        visitor_data: readiness.clickhouse.clone().map(|client| {
            admin::visitor_data::VisitorData::start(
                client,
                config.clickhouse_database.clone(),
                config.clickhouse_cluster.clone(),
                Duration::from_millis(config.collector.erase_batch_ms),
            )
        }),
        // Compressed now rather than on the first visitor's request.
        scripts: http::script::Scripts::new(&config.collector.event_path),
        rate_limiter: glimpse_core::net::rate_limit::RateLimiter::new(
            config.collector.rate_limit_per_ip,
            config.collector.rate_limit_burst,
        ),
        readiness: readiness.clone(),
        config: config.clone(),
    });
    let expiry = tokio::spawn(expire_visits(state.clone()));
    // A new GeoIP file (geoipupdate, `glimpse geoip update`) is put in use without a restart.
    let stop_geo_reload = CancellationToken::new();
    let geo_reload = tokio::spawn(ingest::geo_reload::watch(
        config.clone(),
        state.enrichers.geo.clone(),
        geo_loaded,
        stop_geo_reload.clone(),
    ));
    // Salts rotate at midnight whether or not events arrive, so an idle collector keeps none
    // past its 48 hours.
    let stop_rotation = CancellationToken::new();
    let rotation = tokio::spawn(ingest::pseudonym::rotate_daily(
        state.salts.clone(),
        Arc::new(ingest::pseudonym::SystemClock),
        stop_rotation.clone(),
    ));

    let timeout = config.shutdown_timeout();
    let started_stopping = tokio::sync::OnceCell::new();
    let stopping = async {
        shutdown.await;
        readiness.shutting_down.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: no new connections");
        let _ = started_stopping.set(tokio::time::Instant::now());
    };
    http::run(state.clone(), listener, stopping, timeout).await;
    expiry.abort();
    stop_rotation.cancel();
    let _ = rotation.await;
    stop_geo_reload.cancel();
    let _ = geo_reload.await;
    stop_registry.cancel();
    // The last handle on the queue or spool goes with the state: the writer or the spool's
    // appender now sees the end of the input.
    drop(state);

    let deadline = *started_stopping
        .get()
        .unwrap_or(&tokio::time::Instant::now())
        + timeout;
    control.close.cancel();
    let abandon_at_deadline = {
        let control = control.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            control.abandon.cancel();
        })
    };
    let report = match buffer {
        Buffer::Memory(writer) => {
            let r = writer.await.unwrap_or_default();
            ServeReport {
                rows_written: r.rows_written,
                rows_lost: r.rows_lost,
                rows_left_in_spool: 0,
            }
        }
        Buffer::Spool(tasks) => {
            let r = tasks.finish().await;
            ServeReport {
                rows_written: r.rows_written,
                rows_lost: 0,
                rows_left_in_spool: r.rows_left,
            }
        }
    };
    abandon_at_deadline.abort();
    tracing::info!(
        rows_written = report.rows_written,
        rows_lost = report.rows_lost,
        rows_left_in_spool = report.rows_left_in_spool,
        "collector stopped"
    );
    Ok(report)
}

/// What holds accepted rows until ClickHouse has them.
enum Buffer {
    Memory(tokio::task::JoinHandle<sink::WriterReport>),
    Spool(sink::spool::SpoolTasks),
}

/// Forgets idle visits (and rate-limit state) once a minute, so memory follows the number of
/// active visitors.
async fn expire_visits(state: Arc<State>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let open = state.sessions.expire(glimpse_core::clock::unix_now());
        metrics::gauge!("glimpse_open_visits").set(open as f64);
        let (_, bytes) = state.sessions.footprint();
        metrics::gauge!("glimpse_open_visits_bytes").set(bytes as f64);
        if let Some(limiter) = &state.rate_limiter {
            limiter.forget_idle();
        }
        state.privacy_limiter.forget_idle();
        state.erase_limiter.forget_idle();
    }
}

/// Asks ClickHouse `SELECT 1` every `every`, for `glimpse_clickhouse_up` (1 answered, 0 not):
/// an idle collector, which inserts nothing, still tells when its ClickHouse goes away.
async fn watch_clickhouse(client: clickhouse::Client, every: Duration, stop: CancellationToken) {
    loop {
        let ping = client.query("SELECT 1").fetch_one::<u8>();
        let up = matches!(
            tokio::time::timeout(Duration::from_secs(5), ping).await,
            Ok(Ok(1))
        );
        metrics::gauge!("glimpse_clickhouse_up").set(if up { 1.0 } else { 0.0 });
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Applies retention a minute after start and every six hours after that. Several collectors
/// doing the same is harmless: a second run finds nothing left to delete.
async fn retention_periodically(
    client: clickhouse::Client,
    database: String,
    cluster: Option<glimpse_core::config::ClusterName>,
    sites: Arc<glimpse_core::registry::LiveSites>,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = Duration::from_secs(6 * 60 * 60);
        let registry = glimpse_core::registry::Registry::new(client.clone(), &database)
            .on_cluster(cluster.clone());
        let configured = glimpse_core::site::Sites::new(sites.configured());
        if let Err(error) = registry.erase_late_rows_of_deleted_sites(&configured).await {
            tracing::warn!(%error, "rows of deleted sites not erased; will retry");
        }
        let sites: Vec<_> = sites.current().iter().cloned().collect();
        match admin::retention::apply(
            &client,
            &database,
            cluster.as_ref(),
            &sites,
            glimpse_core::clock::unix_now(),
        )
        .await
        {
            Ok(report) => tracing::info!(
                partitions_dropped = ?report.partitions_dropped,
                rows_scheduled = ?report.rows_scheduled,
                imported_rows_scheduled = ?report.imported_rows_scheduled,
                "retention applied"
            ),
            Err(error) => tracing::warn!(%error, "retention not applied; will retry"),
        }
    }
}

/// Applies migrations, retrying while ClickHouse is unreachable, then marks the collector ready.
async fn migrate_until_done(
    client: clickhouse::Client,
    database: String,
    cluster: Option<glimpse_core::config::ClusterName>,
    readiness: Arc<Readiness>,
    flavor: Arc<std::sync::OnceLock<glimpse_core::schema::Flavor>>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match glimpse_core::schema::migrate_on(&client, &database, cluster.as_ref()).await {
            Ok(detected) => {
                let _ = flavor.set(detected);
                readiness.migrated.store(true, Ordering::SeqCst);
                return;
            }
            Err(error) => tracing::warn!(%error, "migrations not applied yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
