//! `POST /api/event`: Plausible's event protocol, and the path every protocol shares from a
//! [`Beacon`] to the spool ([`record`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use glimpse_core::clock::unix_now;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::response::{self, Body};
use super::State;
use crate::ingest::optout::PrivacySignals;
use crate::ingest::{self, Beacon, DropReason, RequestFacts};
use glimpse_core::net::client_ip::client_ip;
use glimpse_core::net::rate_limit::Refusal;

pub async fn handle<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let response = match *request.method() {
        Method::OPTIONS => return response::preflight(),
        Method::POST => ingest(state, peer, request).await,
        _ => {
            reject("method_not_allowed");
            response::method_not_allowed("POST, OPTIONS")
        }
    };
    response::with_cors(response)
}

async fn ingest<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
        if !acceptable_content_type(content_type.as_bytes()) {
            reject("unsupported_media_type");
            return response::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content type must be text/plain or application/json",
                None,
            );
        }
    }
    let (parts, body) = request.into_parts();
    let client = match Client::admit(state, peer, &parts.headers) {
        Ok(client) => client,
        Err(refused) => return refused,
    };
    let body = match read_body(state, &parts.headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let beacon = match ingest::beacon::parse(&body, &state.limits) {
        Ok(beacon) => beacon,
        Err(e) => {
            reject("invalid");
            return response::error(StatusCode::BAD_REQUEST, &e.reason, Some(&e.field));
        }
    };
    // One event per site `d` lists: each listed site beyond the first costs a token too.
    if let Err(refused) = client.charge(state, beacon.domains.len().saturating_sub(1)) {
        return refused;
    }
    match record(state, &beacon, &client, Protocol::Plausible).await {
        Outcome::Accepted => accepted(),
        Outcome::Refused(reason) => {
            response::error(StatusCode::FORBIDDEN, &reason.to_string(), Some("d"))
        }
        Outcome::Unavailable(response) => response,
    }
}

/// The protocol an event arrived in: the `protocol` label of
/// `glimpse_events_accepted_total` and `glimpse_events_ignored_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Plausible,
    Umami,
    Matomo,
    Pixel,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Plausible => "plausible",
            Protocol::Umami => "umami",
            Protocol::Matomo => "matomo",
            Protocol::Pixel => "pixel",
        }
    }

    /// Counts a request the protocol defines but Glimpse does not record.
    pub(super) fn ignored(self, reason: &'static str) {
        metrics::counter!(
            "glimpse_events_ignored_total",
            "protocol" => self.label(),
            "reason" => reason
        )
        .increment(1);
    }
}

/// What the collector believes about the client: the connection (through trusted proxies) and
/// its headers. Never a payload's fields: a page cannot claim another address or browser.
pub(super) struct Client {
    ip: IpAddr,
    user_agent: String,
    signals: PrivacySignals,
}

impl Client {
    /// Reads the client from the request, or refuses it (`429`) over the rate limit. The
    /// address and user agent stay in memory, for the pipeline only.
    // The error is the response to send, built only on the refusal path: no point boxing it.
    #[allow(clippy::result_large_err)]
    pub(super) fn admit(
        state: &State,
        peer: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<Self, Response<Body>> {
        let ip = client_ip(peer.ip(), headers, &state.trusted_proxies);
        // The request's first event, before its body is even read: a flood costs us little.
        if let Some(limiter) = &state.rate_limiter {
            limiter.check(ip).map_err(rate_limited)?;
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
}

impl Client {
    /// Charges the rate limit for `more` events beyond the one [`Client::admit`] took (a
    /// bulk request's others), all or none: `429` when they are not there yet, `413` when
    /// the request holds more events than the burst ever allows at once.
    #[allow(clippy::result_large_err)]
    pub(super) fn charge(&self, state: &State, more: usize) -> Result<(), Response<Body>> {
        let Some(limiter) = &state.rate_limiter else {
            return Ok(());
        };
        let events = more as u64 + 1;
        let burst = limiter.burst();
        // `admit` already took one token, so the bucket can never again hold `burst` for
        // the rest: refuse for good rather than answer 429 forever.
        if events > u64::from(burst) {
            reject("rate_limited");
            return Err(response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "this request records {events} events, more than one client may send at \
                     once (rate_limit_burst = {burst})"
                ),
                None,
            ));
        }
        match limiter.check_n(self.ip, more as u32) {
            Ok(()) => Ok(()),
            Err(Refusal::Wait(wait)) => Err(rate_limited(wait)),
            Err(Refusal::TooMany { .. }) => Err(rate_limited(Duration::from_secs(1))),
        }
    }
}

/// `429` + `Retry-After` for a client over its rate.
fn rate_limited(wait: Duration) -> Response<Body> {
    reject("rate_limited");
    response::too_many_requests("too many events from this client; slow down", wait)
}

/// Reads a body of at most `max_body_bytes` within `request_timeout_secs`.
pub(super) async fn read_body<B>(
    state: &State,
    headers: &HeaderMap,
    body: B,
) -> Result<Bytes, Response<Body>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let max = state.config.max_body_bytes;
    let too_large = || {
        reject("body_too_large");
        response::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body is larger than {max} bytes"),
            None,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let body_timeout = Duration::from_secs(state.config.request_timeout_secs);
    let read = Limited::new(body, max).collect();
    match tokio::time::timeout(body_timeout, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => {
            reject("body_unreadable");
            Err(response::error(
                StatusCode::BAD_REQUEST,
                "could not read the body",
                None,
            ))
        }
        Err(_) => {
            reject("body_timeout");
            Err(response::error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
                None,
            ))
        }
    }
}

/// What became of one event.
pub(super) enum Outcome {
    /// Durable in the spool (or queued), or filtered and only counted: the client cannot tell.
    Accepted,
    /// Refused for a reason the client may learn (no configured site): counted, not stored.
    Refused(DropReason),
    /// Not accepted now: the `503` to send.
    Unavailable(Response<Body>),
}

/// The path every protocol shares, from a valid beacon to the spool: the pure pipeline
/// (opt-outs, site rules, bots, salts), visits, then the spool or queue.
pub(super) async fn record(
    state: &State,
    beacon: &Beacon,
    client: &Client,
    protocol: Protocol,
) -> Outcome {
    let now = unix_now();
    let salts = match state.salts.salts_at(u64::from(now)) {
        Ok(salts) => salts,
        Err(error) => {
            tracing::error!(%error, "visitor-id salts unavailable");
            reject("salts_unavailable");
            return Outcome::Unavailable(response::unavailable(
                "the collector cannot compute visitor ids",
                5,
            ));
        }
    };
    let facts = RequestFacts {
        received_at: now,
        client_ip: client.ip,
        user_agent: &client.user_agent,
        signals: client.signals,
    };
    let processed = match ingest::process(beacon, &facts, &state.enrichers, &salts) {
        Ok(processed) => processed,
        Err(dropped) => {
            let label = dropped.reason.label();
            metrics::counter!("glimpse_events_dropped_total", "reason" => label).increment(1);
            if let Some(site) = &dropped.site {
                state.drops.record(site, now, label);
            }
            return if dropped.reason.is_silent() {
                Outcome::Accepted
            } else {
                Outcome::Refused(dropped.reason)
            };
        }
    };
    let rows = processed
        .into_iter()
        .map(|p| {
            let mut row = p.row;
            state.sessions.assign(&mut row, p.previous_visitor_id);
            row
        })
        .collect();
    match state.ingest.submit(rows).await {
        Ok(()) => {
            metrics::counter!("glimpse_events_accepted_total", "protocol" => protocol.label())
                .increment(1);
            Outcome::Accepted
        }
        Err(error) => {
            reject(error.label());
            Outcome::Unavailable(response::unavailable(
                &error.to_string(),
                error.retry_after_secs(),
            ))
        }
    }
}

/// Counts a request refused before the pipeline, by a low-cardinality reason.
pub(super) fn reject(reason: &'static str) {
    metrics::counter!("glimpse_events_rejected_total", "reason" => reason).increment(1);
}

/// Counts an event for a site id or domain no configured site matches, like the pipeline does.
pub(super) fn unknown_site() {
    metrics::counter!(
        "glimpse_events_dropped_total",
        "reason" => DropReason::UnknownSite.label()
    )
    .increment(1);
}

fn accepted() -> Response<Body> {
    response::text(StatusCode::ACCEPTED, "text/plain", "ok")
}

pub(super) fn acceptable_content_type(value: &[u8]) -> bool {
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
