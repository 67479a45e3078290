//! `POST /api/send`: Umami's tracker, unchanged, pointed at Glimpse (`data-host-url`). The
//! mapping is `ingest::protocols::umami`; from the beacon on, the path is `/api/event`'s.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::event::{self, Client, Outcome, Protocol};
use super::response::{self, Body};
use super::State;
use crate::ingest::protocols::{umami, MapError, Mapped};

pub async fn handle<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let response = match *request.method() {
        Method::OPTIONS => {
            // The tracker posts application/json from the site's origin, later with its
            // x-umami-cache header: both must pass the preflight.
            let mut r = response::preflight();
            r.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type, x-umami-cache"),
            );
            return r;
        }
        Method::POST => ingest(state, peer, request).await,
        _ => {
            event::reject("method_not_allowed");
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
        if !event::acceptable_content_type(content_type.as_bytes()) {
            event::reject("unsupported_media_type");
            return response::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content type must be application/json or text/plain",
                None,
            );
        }
    }
    let (parts, body) = request.into_parts();
    let client = match Client::admit(state, peer, &parts.headers) {
        Ok(client) => client,
        Err(refused) => return refused,
    };
    let body = match event::read_body(state, &parts.headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    match umami::map(&body, &state.config.umami_websites, &state.limits) {
        Ok(Mapped::Event(beacon)) => {
            match event::record(state, &beacon, &client, Protocol::Umami).await {
                Outcome::Accepted => accepted(),
                Outcome::Refused(reason) => response::error(
                    StatusCode::FORBIDDEN,
                    &reason.to_string(),
                    Some("payload.website"),
                ),
                Outcome::Unavailable(response) => response,
            }
        }
        Ok(Mapped::Ignored(reason)) => {
            Protocol::Umami.ignored(reason);
            accepted()
        }
        Err(MapError::UnknownSite(_)) => {
            event::unknown_site();
            response::error(
                StatusCode::FORBIDDEN,
                "the website id is not in umami_websites",
                Some("payload.website"),
            )
        }
        Err(MapError::Invalid(e)) => {
            event::reject("invalid");
            response::error(StatusCode::BAD_REQUEST, &e.reason, Some(&e.field))
        }
    }
}

/// Umami's tracker reads the answer as JSON: `disabled` would stop it, and a `cache` token
/// would come back on every later request. Real Umami's token carries the session and visit
/// ids: an identifier, which Glimpse does not hand out. So: an empty object.
fn accepted() -> Response<Body> {
    response::json(StatusCode::OK, &serde_json::json!({}))
}
