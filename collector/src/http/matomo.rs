//! `GET`/`POST /matomo.php` and `/piwik.php`: Matomo's JavaScript tracker (and its image
//! tag, and bulk requests), unchanged, pointed at Glimpse (`setTrackerUrl`). The mapping is
//! `ingest::protocols::matomo`; from each beacon on, the path is `/api/event`'s.
//!
//! Answers as Matomo does: `204` when `send_image=0`, else the 1×1 GIF; a bulk request gets
//! `{"status": "success", "tracked": N, "invalid": M}`. Like Matomo, a request with an
//! `Origin` gets it back in `Access-Control-Allow-Origin` with `-Allow-Credentials: true`:
//! the tracker's XHR posts with credentials, and without these it would resend as an image.
//! Cookies that come along are never read, except Glimpse's own opt-out cookie.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::event::{self, Client, Outcome, Protocol};
use super::response::{self, Body};
use super::State;
use crate::ingest::protocols::{matomo, MapError, Mapped};

pub async fn handle<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let origin = request.headers().get(header::ORIGIN).cloned();
    let response = match *request.method() {
        Method::OPTIONS => response::preflight(),
        Method::GET | Method::POST => ingest(state, peer, request).await,
        _ => {
            event::reject("method_not_allowed");
            response::method_not_allowed("GET, POST, OPTIONS")
        }
    };
    with_cors(response, origin)
}

fn with_cors(response: Response<Body>, origin: Option<HeaderValue>) -> Response<Body> {
    let mut response = response::with_cors(response);
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

async fn ingest<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = request.into_parts();
    let client = match Client::admit(state, peer, &parts.headers) {
        Ok(client) => client,
        Err(refused) => return refused,
    };
    let body = match event::read_body(state, &parts.headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let requests = match matomo::requests(parts.uri.query(), &body) {
        Ok(requests) => requests,
        Err(e) => return refuse(&e),
    };
    // Every event costs a token, not just the request.
    if let Err(refused) = client.charge(state, requests.entries.len().saturating_sub(1)) {
        return refused;
    }
    let referer = referer(&parts.headers);
    let (mut tracked, mut invalid, mut first_error) = (0u32, 0u32, None);
    for params in &requests.entries {
        let mapped = matomo::map(
            params,
            &state.config.matomo_sites,
            &state.limits,
            referer.as_deref(),
        );
        let error = match mapped {
            Ok(Mapped::Event(beacon)) => {
                match event::record(state, &beacon, &client, Protocol::Matomo).await {
                    Outcome::Accepted => {
                        tracked += 1;
                        continue;
                    }
                    Outcome::Refused(_) => MapError::UnknownSite(String::new()),
                    Outcome::Unavailable(response) => return response,
                }
            }
            Ok(Mapped::Ignored(reason)) => {
                Protocol::Matomo.ignored(reason);
                continue;
            }
            Err(error) => {
                match &error {
                    MapError::UnknownSite(_) => event::unknown_site(),
                    MapError::Invalid(_) => event::reject("invalid"),
                }
                error
            }
        };
        invalid += 1;
        first_error.get_or_insert(error);
    }
    if requests.bulk {
        let summary = serde_json::json!({
            "status": "success", "tracked": tracked, "invalid": invalid,
        });
        return response::json(StatusCode::OK, &summary);
    }
    match first_error {
        Some(error) => refuse_counted(&error),
        None if requests.send_image => response::gif(StatusCode::OK),
        None => response::text(StatusCode::NO_CONTENT, "text/plain", Bytes::new()),
    }
}

fn referer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A request whose body could not be read as Matomo requests.
fn refuse(error: &MapError) -> Response<Body> {
    event::reject("invalid");
    refuse_counted(error)
}

fn refuse_counted(error: &MapError) -> Response<Body> {
    match error {
        MapError::UnknownSite(_) => response::error(
            StatusCode::FORBIDDEN,
            "the idsite is not in matomo_sites",
            Some("idsite"),
        ),
        MapError::Invalid(e) => response::error(StatusCode::BAD_REQUEST, &e.reason, Some(&e.field)),
    }
}
