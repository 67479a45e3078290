//! The collector's HTTP server (hyper 1.x): routing, connection handling, graceful shutdown.
//! hyper lives only in this module.

mod cross_site;
pub use cross_site::FirstParty;
pub mod ingest_error;
pub use ingest_error::IngestError;
mod intake;
mod protocol;
pub use intake::Protocol;
mod matomo;
mod optout;
mod pixel;
mod plausible;
mod privacy;
pub mod response;
pub mod script;
mod umami;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use tokio::net::TcpListener;

use self::response::Body;
use crate::ingest::pipeline::Enrichers;
use crate::ingest::pseudonym::SaltStore;
use crate::ingest::sessions::Sessions;
use crate::ingest::BeaconLimits;
use crate::sink::{DropCounts, Ingest};
use glimpse_core::config::Config;
use glimpse_core::net::client_ip::TrustedProxies;

/// What request handlers share.
pub struct State {
    pub config: Arc<Config>,
    pub limits: BeaconLimits,
    pub enrichers: Enrichers,
    pub trusted_proxies: TrustedProxies,
    pub salts: Arc<SaltStore>,
    pub sessions: Sessions,
    pub drops: Arc<DropCounts>,
    pub ingest: Ingest,
    /// Per-client beacon rate limit, when configured.
    pub rate_limiter: Option<glimpse_core::net::rate_limit::RateLimiter>,
    /// Per-client limit on the visitor data pages (each one queries ClickHouse).
    pub privacy_limiter: glimpse_core::net::rate_limit::RateLimiter,
    /// Per-client limit on erasures (`erase_limit_per_hour`), keyed on the IPv6 /64.
    pub erase_limiter: glimpse_core::net::rate_limit::RateLimiter,
    /// The visitor data pages' ClickHouse and erase queue; `None` without ClickHouse.
    pub visitor_data: Option<crate::admin::visitor_data::VisitorData>,
    /// The tracker scripts, rewritten for `event_path` and compressed at start-up.
    pub scripts: script::Scripts,
    pub readiness: Arc<Readiness>,
}

impl State {
    /// Who may post to the privacy endpoints and frame the HTML pages: built per request from
    /// the sites in use (these pages are rare; the sites change at run time).
    pub fn first_party(&self) -> cross_site::FirstParty {
        cross_site::FirstParty::new(
            self.enrichers.sites.current().iter(),
            self.config.public_url.as_deref(),
        )
    }
}

/// Whether this collector should receive traffic: schema in place, ClickHouse answering, and
/// not shutting down.
#[derive(Debug, Default)]
pub struct Readiness {
    pub migrated: AtomicBool,
    pub shutting_down: AtomicBool,
    /// Used by `/ready` to ask ClickHouse whether it answers.
    pub clickhouse: Option<clickhouse::Client>,
}

impl Readiness {
    pub fn new(clickhouse: Option<clickhouse::Client>) -> Self {
        Self {
            clickhouse,
            ..Self::default()
        }
    }

    /// Ready when events can be accepted: not shutting down, and either the spool has room
    /// (it accepts while ClickHouse is away) or, without a spool, ClickHouse answers and the
    /// schema is in place. The body says which parts are up.
    async fn check(&self, ingest: &Ingest) -> (bool, serde_json::Value) {
        let clickhouse_up = match &self.clickhouse {
            Some(client) => {
                let ping = client.query("SELECT 1").fetch_one::<u8>();
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), ping).await,
                    Ok(Ok(_))
                )
            }
            None => true,
        };
        let migrated = self.migrated.load(Ordering::SeqCst);
        let shutting_down = self.shutting_down.load(Ordering::SeqCst);
        let (ready, reason) = if shutting_down {
            (false, Some("shutting down"))
        } else if !ingest.has_room() {
            (false, Some("the spool, its disk or the queue is full"))
        } else if matches!(ingest, Ingest::Spool(_)) {
            (true, None)
        } else if !migrated {
            (false, Some("schema migrations have not been applied yet"))
        } else if !clickhouse_up {
            (false, Some("ClickHouse does not answer"))
        } else {
            (true, None)
        };
        let mut body = serde_json::json!({
            "status": if ready { "ready" } else { "not ready" },
            "clickhouse": if clickhouse_up { "up" } else { "down" },
            "migrated": migrated,
            "buffer": ingest.describe(),
        });
        if let Some(reason) = reason {
            body["reason"] = reason.into();
        }
        (ready, body)
    }
}

/// The collector's fixed public paths, beside `event_path` and the tracker scripts (see
/// [`public_paths`]): what a reverse proxy in front of it must send to it. `route` matches
/// these constants, so a path added there is added here.
pub mod paths {
    pub const OPT_OUT: &str = "/opt-out";
    pub const OPT_IN: &str = "/opt-in";
    /// Umami's beacon.
    pub const UMAMI_SEND: &str = "/api/send";
    pub const MATOMO: &str = "/matomo.php";
    pub const PIWIK: &str = "/piwik.php";
    pub const PIXEL: &str = "/pixel.gif";
    pub const PRIVACY: &str = "/privacy";
    pub const PRIVACY_MY_DATA: &str = "/privacy/my-data";
    pub const PRIVACY_ERASE: &str = "/privacy/erase";
    /// Every one of them.
    pub const FIXED: [&str; 9] = [
        OPT_OUT,
        OPT_IN,
        UMAMI_SEND,
        MATOMO,
        PIWIK,
        PIXEL,
        PRIVACY,
        PRIVACY_MY_DATA,
        PRIVACY_ERASE,
    ];
}

/// Every path the collector answers for visitors' browsers under `config`: the beacon
/// endpoint, every tracker script variant, and [`paths::FIXED`]. (`/health` and `/ready` are
/// for the operator, not the public.)
pub fn public_paths(config: &glimpse_core::Config) -> Vec<String> {
    let mut all = vec![config.collector.event_path.clone()];
    // `/js/script.js` → `/js/script.js`, `/js/script.engagement.js`, ...
    let stem = config.collector.script_path.trim_end_matches(".js");
    all.extend((0..script::variant_count()).map(|i| {
        let name = script::file_name(i);
        format!("{stem}.{}", name.strip_prefix("script.").unwrap_or(&name))
    }));
    all.extend(paths::FIXED.iter().map(|p| p.to_string()));
    all
}

/// Answers one request.
pub async fn route<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = request.uri().path();
    let config = &state.config;
    if path == config.collector.event_path {
        return plausible::handle(state, peer, request).await;
    }
    if let Some(variant) = script::variant_of(path, &config.collector.script_path) {
        return script::handle(&state.scripts, variant, &request);
    }
    match path {
        paths::OPT_OUT | paths::OPT_IN => optout::handle(&state.first_party(), &request),
        // Other trackers' protocols, mapped into the same pipeline (`ingest::protocols`).
        paths::UMAMI_SEND => umami::handle(state, peer, request).await,
        paths::MATOMO | paths::PIWIK => matomo::handle(state, peer, request).await,
        paths::PIXEL => pixel::handle(state, peer, &request).await,
        paths::PRIVACY => privacy::statement(state, &request),
        paths::PRIVACY_MY_DATA | paths::PRIVACY_ERASE => {
            privacy::my_data(state, peer, request).await
        }
        "/health" | "/ready" if request.method() != Method::GET => {
            IngestError::PageMethodNotAllowed { allow: "GET" }.into_response()
        }
        "/health" => response::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/ready" => {
            let (ready, body) = state.readiness.check(&state.ingest).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            response::json(status, &body)
        }
        _ => IngestError::NoSuchEndpoint.into_response(),
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish for at most `drain_timeout`.
pub async fn run(
    state: Arc<State>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    let limits = glimpse_core::net::server::ConnectionLimits::collector(&state.config);
    glimpse_core::net::server::serve_connections(
        listener,
        limits,
        move |peer| {
            let state = state.clone();
            service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, peer, request).await) }
            })
        },
        shutdown,
        drain_timeout,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths_name_every_script_variant_under_the_configured_script_path() {
        let config = glimpse_core::Config {
            collector: glimpse_core::config::CollectorConfig {
                script_path: "/s/a.js".into(),
                ..Default::default()
            },
            ..glimpse_core::Config::default()
        };
        let all = public_paths(&config);
        assert_eq!(all.len(), 1 + script::variant_count() + paths::FIXED.len());
        assert_eq!(all[0], "/api/event");
        assert_eq!(all[1], "/s/a.js");
        for path in &all[1..=script::variant_count()] {
            assert!(
                script::variant_of(path, &config.collector.script_path).is_some(),
                "{path}"
            );
        }
        assert!(all.contains(&"/s/a.engagement.js".to_string()), "{all:?}");
    }
}
