//! `POST /api/event`: Plausible's event protocol.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::response::{self, Body};
use super::State;
use crate::ingest::client_ip::client_ip;
use crate::ingest::optout::PrivacySignals;
use crate::ingest::{self, RequestFacts};

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
    let max = state.config.max_body_bytes;
    let too_large = || {
        reject("body_too_large");
        response::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body is larger than {max} bytes"),
            None,
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return too_large();
    }
    // Request facts are read now; the address and user agent stay in this function's memory.
    let headers = request.headers();
    let ip = client_ip(peer.ip(), headers, &state.trusted_proxies);
    let user_agent = headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let signals = PrivacySignals::from_headers(headers);
    if let Some(limiter) = &state.rate_limiter {
        if let Err(wait) = limiter.check(ip) {
            reject("rate_limited");
            let mut r = response::error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many events from this client; slow down",
                None,
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from(secs));
            return r;
        }
    }

    let body_timeout = Duration::from_secs(state.config.request_timeout_secs);
    let read = Limited::new(request.into_body(), max).collect();
    let body = match tokio::time::timeout(body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(_)) => {
            reject("body_unreadable");
            return response::error(StatusCode::BAD_REQUEST, "could not read the body", None);
        }
        Err(_) => {
            reject("body_timeout");
            return response::error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
                None,
            );
        }
    };
    let beacon = match ingest::beacon::parse(&body, &state.limits) {
        Ok(beacon) => beacon,
        Err(e) => {
            reject("invalid");
            return response::error(StatusCode::BAD_REQUEST, &e.reason, Some(&e.field));
        }
    };

    let now = unix_now();
    let salts = match state.salts.salts_at(u64::from(now)) {
        Ok(salts) => salts,
        Err(error) => {
            tracing::error!(%error, "visitor-id salts unavailable");
            reject("salts_unavailable");
            return response::unavailable("the collector cannot compute visitor ids", 5);
        }
    };
    let facts = RequestFacts {
        received_at: now,
        client_ip: ip,
        user_agent: &user_agent,
        signals,
    };
    let processed = match ingest::process(&beacon, &facts, &state.enrichers, &salts) {
        Ok(processed) => processed,
        Err(dropped) => {
            let label = dropped.reason.label();
            metrics::counter!("glimpse_events_dropped_total", "reason" => label).increment(1);
            if let Some(site) = &dropped.site {
                state.drops.record(site, now, label);
            }
            return if dropped.reason.is_silent() {
                accepted()
            } else {
                response::error(
                    StatusCode::FORBIDDEN,
                    &dropped.reason.to_string(),
                    Some("d"),
                )
            };
        }
    };
    let may_start_visit = beacon.name != "engagement";
    let rows = processed
        .into_iter()
        .map(|p| {
            let mut row = p.row;
            let ids = state.sessions.assign(
                &row.site,
                row.visitor_id,
                p.previous_visitor_id,
                now,
                may_start_visit,
            );
            row.visitor_id = ids.visitor_id;
            row.session_id = ids.session_id;
            row
        })
        .collect();
    match state.ingest.submit(rows).await {
        Ok(()) => {
            metrics::counter!("glimpse_events_accepted_total").increment(1);
            accepted()
        }
        Err(error) => {
            reject(error.label());
            response::unavailable(&error.to_string(), error.retry_after_secs())
        }
    }
}

fn accepted() -> Response<Body> {
    response::text(StatusCode::ACCEPTED, "text/plain", "ok")
}

fn acceptable_content_type(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/plain") || essence.eq_ignore_ascii_case("application/json")
}

fn reject(reason: &'static str) {
    metrics::counter!("glimpse_events_rejected_total", "reason" => reason).increment(1);
}

pub fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
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
