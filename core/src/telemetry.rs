//! Prometheus metrics: one process-wide recorder, served on a listener of its own
//! (`metrics_addr`), never on the public collector port. Every metric is described here (the
//! HELP line). Labels are low-cardinality reasons; never an address, user agent or URL.

use std::convert::Infallible;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::net::response::{self, Body};
use crate::net::server::{serve_connections, ConnectionLimits};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
/// The process's own metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_start_time_seconds`, …), read from `/proc` at each scrape.
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Every metric the process records, with its HELP text. A test checks that each metric
/// name in the sources is here.
pub const COUNTERS: &[(&str, &str)] = &[
    ("glimpse_events_accepted_total", "Events accepted (202) and queued for ClickHouse, by protocol."),
    ("glimpse_events_rejected_total", "Beacons refused with a 4xx or 5xx answer, by reason."),
    ("glimpse_events_dropped_total", "Beacons answered 202 but not stored (bot, opt-out, excluded…), by reason."),
    ("glimpse_events_ignored_total", "Requests of another tracker's protocol that carry no event, by protocol and reason."),
    ("glimpse_batches_total", "Batches written to ClickHouse."),
    ("glimpse_rows_written_total", "Event rows written to ClickHouse."),
    ("glimpse_insert_errors_total", "Failed ClickHouse inserts (each is retried unless it cannot succeed: then its batch goes to the dead-letter directory)."),
    ("glimpse_rows_lost_total", "Accepted event rows that could not be written (without the spool, at a shutdown past its deadline)."),
    ("glimpse_visits_evicted_total", "Open visits closed early because max_open_visits was reached."),
    ("glimpse_salt_rotations_total", "Daily rotations of the visitor-id salt."),
    ("glimpse_salt_changes_total", "Times today's salt was replaced by the one the cluster agreed on (a late proposal won, or the cluster was unreachable)."),
    ("glimpse_visits_begun_elsewhere_total", "Events that started a visit here although their visit had begun (engagement report, page reached from the same site): visits split between collectors or by a restart; an upper bound."),
    ("glimpse_erase_mutations_total", "ClickHouse deletions run for visitors' erase requests."),
    ("glimpse_spool_write_errors_total", "Failed writes to the on-disk spool (disk full, I/O error)."),
    ("glimpse_geoip_reloads_total", "GeoIP database reloads after its file changed, by result: ok, or failed (the file could not be used; the database loaded before stays in use)."),
    ("glimpse_query_requests_total", "Query-service requests answered, by endpoint (the route pattern; unmatched for unknown paths) and HTTP status."),
    ("glimpse_query_rollup_refreshes_total", "Refreshes of the query service's per-day rollup, by result (ok, failed)."),
    ("glimpse_spool_damaged_bytes_total", "Bytes of damaged spool records skipped (e.g. a torn write at a crash)."),
    ("glimpse_sink_dead_letter_batches_total", "Batches ClickHouse refused for good (e.g. a type or column the table lacks), set aside in <data_dir>/dead-letter instead of retried."),
    ("glimpse_sink_dead_letter_rows_total", "Event rows in the batches set aside in <data_dir>/dead-letter."),
];
pub const GAUGES: &[(&str, &str)] = &[
    (
        "glimpse_build_info",
        "Always 1; the labels say which version and git commit is running.",
    ),
    (
        "glimpse_clickhouse_up",
        "1 when ClickHouse answered the collector's last check (SELECT 1, every 5 seconds), else 0.",
    ),
    (
        "glimpse_queue_depth",
        "Accepted rows waiting in memory for the writer (without the spool).",
    ),
    (
        "glimpse_open_visits",
        "Visits currently open (for visit assignment).",
    ),
    (
        "glimpse_open_visits_bytes",
        "Memory held by open visits, in bytes.",
    ),
    (
        "glimpse_open_connections",
        "Open HTTP connections, by service.",
    ),
    (
        "glimpse_spool_bytes",
        "Bytes of events in the on-disk spool not yet in ClickHouse.",
    ),
    (
        "glimpse_spool_segments_pending",
        "Spool segment files not yet shipped to ClickHouse.",
    ),
];
pub const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "glimpse_insert_duration_seconds",
        "Time one ClickHouse insert of a batch took, in seconds.",
    ),
    (
        "glimpse_query_request_duration_seconds",
        "Time the query service took to answer a request, by endpoint, in seconds.",
    ),
    (
        "glimpse_query_clickhouse_duration_seconds",
        "Time a query-service request waited for ClickHouse (all its queries together), by endpoint, in seconds; only requests that queried ClickHouse.",
    ),
    (
        "glimpse_query_rollup_refresh_duration_seconds",
        "Time one refresh of the per-day rollup took, in seconds.",
    ),
];

/// The process metrics (`metrics-process`, read from `/proc` at each scrape), for the
/// dashboard and alert rules under `docker/` to be checked against.
pub const PROCESS_METRICS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// Installs the recorder once; later calls (several servers in one test process) reuse it.
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .ok()?;
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed");
                return None;
            }
        };
        for (name, help) in COUNTERS {
            describe_counter!(*name, *help);
        }
        for (name, help) in GAUGES {
            describe_gauge!(*name, *help);
        }
        for (name, help) in HISTOGRAMS {
            describe_histogram!(*name, Unit::Seconds, *help);
        }
        PROCESS
            .get_or_init(metrics_process::Collector::default)
            .describe();
        metrics::gauge!(
            "glimpse_build_info",
            "version" => crate::VERSION,
            "git_sha" => crate::GIT_SHA
        )
        .set(1.0);
        Some(handle)
    });
}

/// The metrics in Prometheus' text format.
pub fn render_metrics() -> String {
    install();
    match HANDLE.get() {
        Some(Some(handle)) => {
            if let Some(process) = PROCESS.get() {
                process.collect();
            }
            handle.run_upkeep();
            handle.render()
        }
        _ => String::new(),
    }
}

/// Serves `GET /metrics` (every service of the process) on `listener` until `shutdown`
/// resolves; any other path is `404`. Bind it where only Prometheus reaches (`metrics_addr`,
/// loopback by default): the counts say how much traffic each site gets.
pub async fn serve_metrics(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    install();
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        max_header_bytes: 16 * 1024,
        max_connections: 64,
        service: "metrics",
    };
    serve_connections(
        listener,
        limits,
        |_peer| {
            service_fn(|request: Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(answer(&request))
            })
        },
        shutdown,
        Duration::from_secs(1),
    )
    .await;
}

fn answer<B>(request: &Request<B>) -> Response<Body> {
    match (request.uri().path(), request.method()) {
        ("/metrics", &Method::GET) => response::text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(),
        ),
        ("/metrics", _) => response::method_not_allowed("GET"),
        _ => response::error(StatusCode::NOT_FOUND, "no such endpoint", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `counter!`/`gauge!`/`histogram!` name in the sources has its HELP text here.
    #[test]
    fn every_metric_in_the_sources_is_described() {
        let described: Vec<&str> = COUNTERS
            .iter()
            .chain(GAUGES)
            .chain(HISTOGRAMS)
            .map(|(name, _)| *name)
            .collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = Vec::new();
        for dir in ["collector/src", "query/src", "src"] {
            let pattern = format!("{}/{dir}/**/*.rs", root.display());
            for path in glob::glob(&pattern).unwrap().flatten() {
                let text = std::fs::read_to_string(&path).unwrap();
                for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(macro_name) {
                        let rest = text[at + macro_name.len()..].trim_start();
                        let name = rest.strip_prefix('"').and_then(|r| r.split('"').next());
                        // Metric names only (this test's own list of macros is not one).
                        let is_name = |n: &&str| {
                            !n.is_empty()
                                && n.bytes().all(|c| {
                                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'
                                })
                        };
                        if let Some(name) = name.filter(is_name) {
                            found.push((name.to_string(), path.display().to_string()));
                        }
                    }
                }
            }
        }
        assert!(found.len() > 15, "too few metric uses found: {found:?}");
        for (name, path) in found {
            assert!(
                described.contains(&name.as_str()),
                "{name} (in {path}) has no HELP text in telemetry.rs"
            );
        }
    }

    /// Every `glimpse_*` and `process_*` name in the Grafana dashboard and the Prometheus alert
    /// rules under `docker/` is a metric the process describes (a histogram's `_bucket`,
    /// `_sum` and `_count` series included), and the process metrics are really rendered.
    #[test]
    fn dashboard_and_alert_rules_use_only_metrics_that_exist() {
        let described: Vec<&str> = COUNTERS
            .iter()
            .chain(GAUGES)
            .chain(HISTOGRAMS)
            .map(|(name, _)| *name)
            .chain(PROCESS_METRICS.iter().copied())
            .collect();
        let exists = |name: &str| {
            described.contains(&name)
                || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                    name.strip_suffix(suffix).is_some_and(|base| {
                        HISTOGRAMS.iter().any(|(histogram, _)| *histogram == base)
                    })
                })
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker");
        for file in ["grafana/glimpse.json", "prometheus/alerts.yml"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            if file.ends_with(".json") {
                let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() > 5));
            }
            let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            let names: Vec<&str> = words
                .filter(|w| {
                    ["glimpse_", "process_"]
                        .iter()
                        .any(|prefix| w.len() > prefix.len() && w.starts_with(prefix))
                })
                .collect();
            assert!(names.len() > 10, "{file}: too few metric names: {names:?}");
            for name in names {
                assert!(
                    exists(name),
                    "{file} uses {name}, which Glimpse does not have"
                );
            }
        }
        let body = render_metrics();
        for name in PROCESS_METRICS {
            assert!(
                body.contains(&format!("# HELP {name} ")),
                "{name} not rendered: {body}"
            );
        }
    }

    #[tokio::test]
    async fn the_metrics_listener_answers_metrics_with_help_and_build_info_and_404_elsewhere() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve_metrics(listener, stop.clone().cancelled_owned()));
        metrics::counter!("glimpse_batches_total").increment(0);
        let body = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.contains(&format!(
                "glimpse_build_info{{version=\"{}\",git_sha=\"{}\"}} 1",
                crate::VERSION,
                crate::GIT_SHA
            )),
            "{body}"
        );
        for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(
                body.contains(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{body}"
            );
        }
        let other = reqwest::get(format!("{base}/ready")).await.unwrap();
        assert_eq!(other.status(), 404);
        stop.cancel();
        server.await.unwrap();
    }
}
