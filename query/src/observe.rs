//! The query service's metrics (`glimpse_query_*`, HELP texts in the collector's `telemetry`):
//! requests by endpoint and status, their latency, and the time ClickHouse took for them.
//! The endpoint label is the route pattern (`/assets/{name}`), never the raw path, so the
//! number of series stays fixed whatever clients ask for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    /// Nanoseconds the current request spent waiting for ClickHouse.
    static CLICKHOUSE_NANOS: Arc<AtomicU64>;
}

/// Adds `elapsed` to the current request's ClickHouse time (nothing outside a request).
pub fn clickhouse_took(elapsed: Duration) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    let _ = CLICKHOUSE_NANOS.try_with(|total| total.fetch_add(nanos, Ordering::Relaxed));
}

/// Middleware: counts and times every request (also those refused before their handler, such
/// as rate-limited ones, and unknown paths as `endpoint="unmatched"`).
pub async fn track_request(request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let clickhouse = Arc::new(AtomicU64::new(0));
    let response = CLICKHOUSE_NANOS
        .scope(clickhouse.clone(), next.run(request))
        .await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "glimpse_query_requests_total",
        "endpoint" => endpoint.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!("glimpse_query_request_duration_seconds", "endpoint" => endpoint.clone())
        .record(started.elapsed().as_secs_f64());
    let nanos = clickhouse.load(Ordering::Relaxed);
    if nanos > 0 {
        metrics::histogram!("glimpse_query_clickhouse_duration_seconds", "endpoint" => endpoint)
            .record(Duration::from_nanos(nanos).as_secs_f64());
    }
    response
}
