//! `POST /api/event`: Plausible's event protocol.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::response::{self, Body};
use super::State;
use crate::ingest::{self, RequestFacts};
use crate::sink::QueueError;

pub async fn handle<B>(state: &State, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let response = match *request.method() {
        Method::OPTIONS => return response::preflight(),
        Method::POST => ingest(state, request).await,
        _ => {
            reject("method_not_allowed");
            response::method_not_allowed("POST, OPTIONS")
        }
    };
    response::with_cors(response)
}

async fn ingest<B>(state: &State, request: Request<B>) -> Response<Body>
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
    let body = match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(_) => {
            reject("body_unreadable");
            return response::error(StatusCode::BAD_REQUEST, "could not read the body", None);
        }
    };

    let beacon = match ingest::beacon::parse(&body, &state.limits) {
        Ok(beacon) => beacon,
        Err(e) => {
            reject("invalid");
            return response::error(StatusCode::BAD_REQUEST, &e.reason, Some(&e.field));
        }
    };
    let facts = RequestFacts {
        received_at: unix_now(),
    };
    let rows = match ingest::process(&beacon, &facts, &state.sites) {
        Ok(rows) => rows,
        Err(reason) => {
            metrics::counter!("glimpse_events_dropped_total", "reason" => reason.label())
                .increment(1);
            return response::error(StatusCode::FORBIDDEN, &reason.to_string(), Some("d"));
        }
    };
    match state.queue.try_push(rows) {
        Ok(()) => {
            metrics::counter!("glimpse_events_accepted_total").increment(1);
            response::text(StatusCode::ACCEPTED, "text/plain", "ok")
        }
        Err(QueueError::Full) => {
            reject("queue_full");
            response::unavailable("the collector is overloaded; retry later", 1)
        }
        Err(QueueError::Closed) => {
            reject("shutting_down");
            response::unavailable("the collector is shutting down; retry later", 5)
        }
    }
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

fn unix_now() -> u32 {
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
