//! Glimpse's query service: the HTTP API analysts and the dashboard read numbers from.
//!
//! The stats API is compatible with Plausible's Stats API v1 (`/api/v1/stats/…`): `params`
//! parses a request into typed values, `period` resolves it in the site's time zone, `sql`
//! builds the statement from whitelisted identifiers and bound values, `auth` checks the API
//! key, `api` answers JSON or CSV, `dashboard` serves the page at `/`.

mod api;
pub mod auth;
mod dashboard;
pub mod error;
pub mod params;
pub mod period;
pub mod rollup;
pub mod sql;

pub use api::{statements_for, stats_statements_for};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use glimpse_collector::config::Config;
use glimpse_collector::schema;
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no ClickHouse URL: set clickhouse_url (GLIMPSE_CLICKHOUSE_URL)")]
    NoClickHouse,
    #[error("query service failed: {0}")]
    Io(#[from] std::io::Error),
}

struct AppState {
    client: clickhouse::Client,
    database: String,
    config: Config,
    /// The dashboard page, rendered for this configuration.
    page: String,
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
    let state = Arc::new(AppState {
        client: glimpse_collector::sink::connect(&config, url),
        database: config.clickhouse_database.clone(),
        config: config.clone(),
        page: dashboard::page(&config),
    });
    let background = tokio_util::sync::CancellationToken::new();
    if config.rollup_interval_secs > 0 {
        tokio::spawn(rollup::refresh_periodically(
            state.client.clone(),
            state.database.clone(),
            Duration::from_secs(config.rollup_interval_secs),
            background.clone(),
        ));
    }
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    background.cancel();
    served?;
    Ok(())
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
        .route("/api/v1/sites", get(api::sites))
        .route("/", get(dashboard::index))
        .route("/assets/{name}", get(dashboard::asset))
        .with_state(state)
}

/// Ready when ClickHouse answers and the schema is at the version this build expects.
async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let query = state
        .client
        .query(&format!(
            "SELECT max(version) FROM {}.schema_migrations",
            state.database
        ))
        .fetch_one::<u32>();
    match tokio::time::timeout(Duration::from_secs(2), query).await {
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
