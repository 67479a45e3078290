//! Glimpse's query service: the HTTP API analysts and the dashboard read numbers from.
//!
//! The stats API is compatible with Plausible's Stats API v1 (`/api/v1/stats/…`): `auth`
//! checks the API key, `accounts` users, sign-in sessions and who may do what, `params` parses
//! a request into typed values, `period` resolves it in the site's time zone, `plan` turns it
//! into the statements it runs, `sql` builds them from whitelisted identifiers and bound values,
//! `api` executes the plan and answers JSON or CSV, `dashboard` serves the page at `/`.
//! `v2` answers Plausible's Stats API v2 (`POST /api/v2/query`) by translating its JSON into
//! the same request and plan.

pub mod accounts;
mod answer;
mod api;
pub mod audit;
pub mod auth;
mod dashboard;
pub mod db;
pub mod error;
pub mod funnel;
mod mail;
mod observe;
pub mod params;
pub mod period;
pub mod plan;
mod request_id;
pub mod rollup;
mod sites_api;
pub mod sql;
pub mod v2;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use glimpse_core::config::Config;
use glimpse_core::net::client_ip::{client_ip, TrustedProxies};
use glimpse_core::net::rate_limit::RateLimiter;
use glimpse_core::net::server::{serve_connections, ConnectionLimits};
use glimpse_core::schema;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::accounts::refused_credentials::presents_credentials;
use crate::db::Db;
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no ClickHouse URL: set clickhouse_url (GLIMPSE_CLICKHOUSE_URL)")]
    NoClickHouse,
    #[error("query service failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] glimpse_core::db::tls::TlsError),
}

struct AppState {
    db: Db,
    database: String,
    config: Config,
    /// The dashboard page, rendered for this configuration.
    page: String,
    /// Per-client limit on requests without an API key (`query_rate_limit_per_ip`).
    limiter: Option<RateLimiter>,
    trusted_proxies: TrustedProxies,
    /// The sites, read at most every `auth::SITES_TTL`.
    sites: auth::SiteCache,
    /// `dashboard_url`'s origin, the only one allowed to change state with the session cookie.
    public_origin: Option<String>,
    /// Sign-in attempts per account and per client address.
    logins: accounts::login_limit::LoginLimits,
    /// Refused API keys and session cookies per client address.
    refused: accounts::refused_credentials::RefusedCredentials,
    /// Held while an invitation is accepted (`accounts::invitation_http`).
    accepting: tokio::sync::Mutex<()>,
}

/// Serves the query API on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), QueryError> {
    let url = config
        .clickhouse_url
        .as_deref()
        .ok_or(QueryError::NoClickHouse)?;
    let trusted_proxies = config.trusted_proxies();
    let client = glimpse_core::db::connect(&config, url);
    glimpse_core::db::tls::check(&client, url).await?;
    // The process-wide metrics recorder (served on `metrics_addr`), before the first request.
    glimpse_core::telemetry::install();
    let state = Arc::new(AppState {
        db: Db::new(client, config.query.query_max_execution_secs),
        database: config.clickhouse_database.clone(),
        config: config.clone(),
        page: dashboard::page(&config),
        limiter: RateLimiter::new(
            config.query.query_rate_limit_per_ip,
            config.query.query_rate_limit_burst,
        ),
        trusted_proxies,
        sites: auth::SiteCache::new(auth::SITES_TTL),
        public_origin: config
            .query
            .dashboard_url
            .as_deref()
            .and_then(accounts::cross_site::origin_of),
        logins: accounts::login_limit::LoginLimits::new(),
        refused: accounts::refused_credentials::RefusedCredentials::new(),
        accepting: tokio::sync::Mutex::new(()),
    });
    // The dummy password hash, so that the first sign-in with an unknown e-mail takes as
    // long as any other.
    tokio::task::spawn_blocking(accounts::password::prepare);
    let background = tokio_util::sync::CancellationToken::new();
    if config.query.rollup_interval_secs > 0 {
        tokio::spawn(rollup::refresh_periodically(
            state.db.background().clone(),
            state.database.clone(),
            config.clickhouse_cluster.clone(),
            Duration::from_secs(config.query.rollup_interval_secs),
            background.clone(),
        ));
    }
    {
        // Rate-limit state of idle clients (stats requests, sign-ins) is forgotten once a
        // minute, so memory follows the active clients.
        let state = state.clone();
        let background = background.clone();
        tokio::spawn(async move {
            let mut every_minute = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every_minute.tick() => {}
                    _ = background.cancelled() => return,
                }
                if let Some(limiter) = &state.limiter {
                    limiter.forget_idle();
                }
                state.logins.forget_idle();
                state.refused.forget_idle();
            }
        });
    }
    let router = router(state);
    // The collector's accept loop: header timeout, head size cap, connection cap.
    serve_connections(
        listener,
        ConnectionLimits::query(&config),
        move |peer: SocketAddr| {
            let router = router.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(
                        router
                            .oneshot(request.map(axum::body::Body::new))
                            .await
                            .unwrap_or_else(|never| match never {}),
                    )
                }
            })
        },
        shutdown,
        Duration::from_secs(config.shutdown_timeout_secs),
    )
    .await;
    background.cancel();
    Ok(())
}

/// Gives each request an id (in its log lines, its ClickHouse query ids, its error answers and
/// the `X-Request-Id` header), and limits requests without an API key per client.
async fn request_context(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let id = request_id::new_request_id();
    let span = tracing::info_span!("request", request_id = %id);
    request_id::REQUEST_ID
        .scope(id.clone(), async move {
            let started = std::time::Instant::now();
            // The path only: the query string may hold a share token.
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            let client = client_ip(peer.ip(), request.headers(), &state.trusted_proxies);
            // Kept for after the answer, which says whether they were accepted.
            let credentials =
                presents_credentials(request.headers()).then(|| request.headers().clone());
            let mut response = match limited(&state, client, credentials.as_ref(), &request) {
                Some(wait) => ApiError::TooManyRequests(wait).into_response(),
                None => next.run(request).await,
            };
            if let Some(headers) = &credentials {
                match response.status() {
                    StatusCode::UNAUTHORIZED => state.refused.refused(client, headers),
                    status if status.is_success() => state.refused.accepted(headers),
                    _ => {}
                }
            }
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert("x-request-id", value);
            }
            tracing::debug!(
                %method,
                %path,
                status = response.status().as_u16(),
                ms = started.elapsed().as_millis() as u64,
                "request answered"
            );
            response
        })
        .instrument(span)
        .await
}

/// `Some(wait)` when a request without an API key or session cookie (a share link, a
/// refused request, a readiness check, a sign-in) is over its client's rate. The dashboard
/// page and its assets cost nothing and are not limited; nor are requests with a key or the
/// session cookie, unless their client sent too many refused ones lately (`RefusedCredentials`: a
/// request with a cookie that is no valid session is refused, never tried as a share link, so
/// a junk cookie does not open share tokens to unlimited guessing; sign-in has limits of its
/// own).
fn limited(
    state: &AppState,
    client: IpAddr,
    credentials: Option<&HeaderMap>,
    request: &Request,
) -> Option<Duration> {
    let path = request.uri().path();
    let costly = path.starts_with("/api/") || path == "/ready";
    if !costly {
        return None;
    }
    if let Some(headers) = credentials {
        return state.refused.blocked(client, headers);
    }
    state.limiter.as_ref()?.check(client).err()
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/api/v1/stats/aggregate", get(api::aggregate))
        .route("/api/v1/stats/timeseries", get(api::timeseries))
        .route("/api/v1/stats/breakdown", get(api::breakdown))
        .route(
            "/api/v1/stats/realtime/visitors",
            get(api::realtime_visitors),
        )
        .route("/api/v1/stats/filtered", get(api::filtered))
        .route("/api/v1/stats/props", get(api::prop_names))
        .route("/api/v2/query", post(v2::query))
        .route("/api/v2/funnel", post(funnel::query))
        .route(
            "/api/v1/sites/funnels",
            get(sites_api::funnels::list).put(sites_api::funnels::put),
        )
        .route(
            "/api/v1/sites/funnels/{name}",
            delete(sites_api::funnels::delete),
        )
        .route(
            "/api/v1/sites",
            get(sites_api::sites::list).post(sites_api::sites::create),
        )
        .route("/api/v1/sites/audit", get(sites_api::audit_log::list))
        .route(
            "/api/v1/sites/goals",
            get(sites_api::goals::list).put(sites_api::goals::put),
        )
        .route(
            "/api/v1/sites/goals/{goal_id}",
            delete(sites_api::goals::delete),
        )
        .route(
            "/api/v1/sites/guests",
            get(sites_api::guests::list).put(sites_api::guests::put),
        )
        .route(
            "/api/v1/sites/guests/{email}",
            delete(sites_api::guests::delete),
        )
        .route(
            "/api/v1/sites/keys",
            get(sites_api::keys::list).put(sites_api::keys::put),
        )
        .route(
            "/api/v1/sites/keys/{key_id}",
            delete(sites_api::keys::delete),
        )
        .route(
            "/api/v1/sites/shared-links",
            get(sites_api::links::list).put(sites_api::links::put),
        )
        .route(
            "/api/v1/sites/shared-links/{name}",
            delete(sites_api::links::delete),
        )
        .route(
            "/api/v1/sites/{site_id}",
            get(sites_api::sites::get)
                .put(sites_api::sites::update)
                .delete(sites_api::sites::delete),
        )
        .route(accounts::http::LOGIN_PATH, post(accounts::http::login))
        .route("/api/auth/logout", post(accounts::http::logout))
        .route(
            "/api/auth/logout-everywhere",
            post(accounts::http::logout_everywhere),
        )
        .route("/api/auth/me", get(accounts::http::me))
        .route("/api/auth/password", post(accounts::http::change_password))
        .route("/api/auth/invitation", get(accounts::invitation_http::show))
        .route(
            accounts::invitation_http::ACCEPT_PATH,
            post(accounts::invitation_http::accept),
        )
        .route("/", get(dashboard::index))
        .route("/assets/{name}", get(dashboard::asset))
        // Inside `request_context`, so that refusals carry a request id and are rate limited.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            accounts::cross_site::refuse_cross_site,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        // Outermost, so that rate-limited answers are counted too.
        .layer(axum::middleware::from_fn(observe::track_request))
        .with_state(state)
}

/// Ready when ClickHouse answers and the schema is at the version this build expects.
async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let tracked = state.db.track();
    let query = schema::applied_version(&tracked.client, &state.database);
    match tokio::time::timeout(Duration::from_secs(2), tracked.run(query)).await {
        Ok(Ok(version)) if version >= schema::latest_version() => {
            (StatusCode::OK, Json(json!({"status": "ready"})))
        }
        Ok(Ok(_)) => not_ready("schema migrations have not been applied yet"),
        _ => not_ready("ClickHouse does not answer or the schema is missing"),
    }
}

fn not_ready(reason: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "not ready", "reason": reason})),
    )
}
