//! The path every beacon protocol shares (Plausible's `/api/event`, Umami, Matomo, the pixel):
//! who the client is and whether it may send ([`Client::admit`], [`Client::charge`]), reading
//! the body within its limits ([`read_body`], [`receive`]), and recording a beacon through the
//! pure pipeline into the spool or queue ([`record`]). Each protocol's handler is an adapter:
//! it maps its wire format to [`Beacon`]s and its answers from [`IngestError`]s.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, Request};
use http_body_util::{BodyExt, Limited};

use super::ingest_error::IngestError;
pub use super::protocol::Protocol;
use super::State;
use crate::ingest::optout::PrivacySignals;
use crate::ingest::{self, Beacon, RequestFacts};
use glimpse_core::net::client_ip::client_ip;
use glimpse_core::net::rate_limit::Refusal;

/// What the collector believes about the client: the connection (through trusted proxies) and
/// its headers. Never a payload's fields: a page cannot claim another address or browser.
pub struct Client {
    ip: IpAddr,
    user_agent: String,
    signals: PrivacySignals,
}

impl Client {
    /// Reads the client from the request, or refuses it (`429`) over the rate limit. The
    /// address and user agent stay in memory, for the pipeline only.
    pub fn admit(
        state: &State,
        peer: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<Self, IngestError> {
        let ip = client_ip(peer.ip(), headers, &state.trusted_proxies);
        // The request's first event, before its body is even read: a flood costs us little.
        if let Some(limiter) = &state.rate_limiter {
            limiter
                .check(ip)
                .map_err(|wait| IngestError::RateLimited { wait })?;
        }
        let user_agent = headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        Ok(Self {
            ip,
            user_agent,
            signals: PrivacySignals::from_headers(headers),
        })
    }

    /// Charges the rate limit for `more` events beyond the one [`Client::admit`] took (a
    /// bulk request's others), all or none: `429` when they are not there yet, `413` when
    /// the request holds more events than the burst ever allows at once.
    pub fn charge(&self, state: &State, more: usize) -> Result<(), IngestError> {
        let Some(limiter) = &state.rate_limiter else {
            return Ok(());
        };
        let events = more as u64 + 1;
        let burst = limiter.burst();
        // `admit` already took one token, so the bucket can never again hold `burst` for
        // the rest: refuse for good rather than answer 429 forever.
        if events > u64::from(burst) {
            return Err(IngestError::TooManyEvents { events, burst });
        }
        match limiter.check_n(self.ip, more as u32) {
            Ok(()) => Ok(()),
            Err(Refusal::Wait(wait)) => Err(IngestError::RateLimited { wait }),
            Err(Refusal::TooMany { .. }) => Err(IngestError::RateLimited {
                wait: Duration::from_secs(1),
            }),
        }
    }
}

/// The start every protocol with a body shares: the `Content-Type` (when `expected` names
/// the accepted ones, as `text/plain or application/json`), the client, then the body.
pub async fn receive<B>(
    state: &State,
    peer: SocketAddr,
    request: Request<B>,
    expected: Option<&'static str>,
) -> Result<(Parts, Client, Bytes), IngestError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let (Some(expected), Some(content_type)) =
        (expected, request.headers().get(header::CONTENT_TYPE))
    {
        if !acceptable_content_type(content_type.as_bytes()) {
            return Err(IngestError::UnsupportedMediaType { expected });
        }
    }
    let (parts, body) = request.into_parts();
    let client = Client::admit(state, peer, &parts.headers)?;
    let body = read_body(state, &parts.headers, body).await?;
    Ok((parts, client, body))
}

/// Reads a body of at most `max_body_bytes` within `request_timeout_secs`.
pub async fn read_body<B>(state: &State, headers: &HeaderMap, body: B) -> Result<Bytes, IngestError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let max = state.config.collector.max_body_bytes;
    let too_large = IngestError::BodyTooLarge { max };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large);
    }
    let body_timeout = Duration::from_secs(state.config.request_timeout_secs);
    let read = Limited::new(body, max).collect();
    match tokio::time::timeout(body_timeout, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Ok(Err(_)) => Err(IngestError::BodyUnreadable),
        Err(_) => Err(IngestError::BodyTimeout),
    }
}

/// The path every protocol shares, from a valid beacon to the spool: the pure pipeline
/// (opt-outs, site rules, bots, salts), visits, then the spool or queue. `Ok` when the event
/// is durable in the spool (or queued), or filtered and only counted: the client cannot tell.
pub async fn record(
    state: &State,
    beacon: &Beacon,
    client: &Client,
    protocol: Protocol,
) -> Result<(), IngestError> {
    let now = glimpse_core::clock::unix_now();
    let salts = state.salts.salts_at(u64::from(now)).map_err(|error| {
        tracing::error!(%error, "visitor-id salts unavailable");
        IngestError::SaltsUnavailable
    })?;
    let facts = RequestFacts {
        received_at: now,
        client_ip: client.ip,
        user_agent: &client.user_agent,
        signals: client.signals,
    };
    let processed = match ingest::process(beacon, &facts, &state.enrichers, &salts) {
        Ok(processed) => processed,
        Err(dropped) => {
            // Counted here, with the site when known; the error (if any) is not counted again.
            let label = dropped.reason.label();
            metrics::counter!("glimpse_events_dropped_total", "reason" => label).increment(1);
            if let Some(site) = &dropped.site {
                state.drops.record(site, now, label);
            }
            return if dropped.reason.is_silent() {
                Ok(())
            } else {
                Err(IngestError::Refused(dropped.reason, protocol))
            };
        }
    };
    let rows = processed
        .into_iter()
        .map(|p| {
            let mut row = p.row;
            let continued = state.sessions.assign(&mut row, p.previous_visitor_id);
            if !continued {
                count_visit_begun_elsewhere(beacon, &row);
            }
            row
        })
        .collect();
    state
        .ingest
        .submit(rows)
        .await
        .map_err(IngestError::Unavailable)?;
    metrics::counter!("glimpse_events_accepted_total", "protocol" => protocol.label()).increment(1);
    Ok(())
}

/// Counts an event that started a visit here although its visit had begun already, as far as
/// the beacon tells: an engagement report (sent after a page view of the same visit) or a page
/// reached by a link from the same site. Its visit began on another collector (the load
/// balancer moved the client: a collector died or was added) or before this collector
/// restarted, or its visit ended idle (30 minutes) while the page stayed open: an upper bound
/// of the visits split in two (`glimpse_visits_begun_elsewhere_total`).
fn count_visit_begun_elsewhere(beacon: &Beacon, row: &glimpse_core::schema::EventRow) {
    let signal = if row.name == "engagement" {
        "engagement"
    } else if beacon
        .referrer
        .as_deref()
        .and_then(|r| url::Url::parse(r).ok())
        .is_some_and(|r| r.host_str() == beacon.url.host_str())
    {
        "internal_referrer"
    } else {
        return;
    };
    metrics::counter!("glimpse_visits_begun_elsewhere_total", "signal" => signal).increment(1);
}

pub fn acceptable_content_type(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/plain") || essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::acceptable_content_type;

    #[test]
    fn content_types() {
        assert!(acceptable_content_type(b"text/plain"));
        assert!(acceptable_content_type(b"text/plain;charset=UTF-8"));
        assert!(acceptable_content_type(b"Application/JSON; charset=utf-8"));
        assert!(!acceptable_content_type(
            b"application/x-www-form-urlencoded"
        ));
        assert!(!acceptable_content_type(b"multipart/form-data; boundary=x"));
        assert!(!acceptable_content_type(b"\xff"));
    }
}
