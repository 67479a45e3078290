//! `GET`/`POST /matomo.php` and `/piwik.php`: Matomo's JavaScript tracker (and its image
//! tag, and bulk requests), unchanged, pointed at Glimpse (`setTrackerUrl`). The mapping is
//! `ingest::protocols::matomo`; from each beacon on, the path is the shared one (`intake`).
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

use super::ingest_error::IngestError;
use super::intake::{self, Protocol};
use super::response::{self, Body};
use super::State;
use crate::ingest::protocols::{matomo, Mapped};

pub async fn handle<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let origin = request.headers().get(header::ORIGIN).cloned();
    let answer = match *request.method() {
        Method::OPTIONS => Ok(response::preflight()),
        Method::GET | Method::POST => ingest(state, peer, request).await,
        _ => Err(IngestError::MethodNotAllowed {
            allow: "GET, POST, OPTIONS",
        }),
    };
    with_cors(answer.unwrap_or_else(IngestError::into_response), origin)
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

async fn ingest<B>(
    state: &State,
    peer: SocketAddr,
    request: Request<B>,
) -> Result<Response<Body>, IngestError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, client, body) = intake::receive(state, peer, request, None).await?;
    let requests = matomo::requests(parts.uri.query(), &body)
        .map_err(|e| IngestError::from_map(e, Protocol::Matomo))?;
    // Every event costs a token, not just the request.
    client.charge(state, requests.entries.len().saturating_sub(1))?;
    let referer = referer(&parts.headers);
    let (mut tracked, mut invalid) = (0u32, 0u32);
    for params in &requests.entries {
        let mapped = matomo::map(
            params,
            &state.config.collector.matomo_sites,
            &state.limits,
            referer.as_deref(),
        );
        let recorded = match mapped {
            Ok(Mapped::Event(beacon)) => intake::record(state, &beacon, &client, Protocol::Matomo)
                .await
                .map(|()| true),
            Ok(Mapped::Ignored(reason)) => {
                Protocol::Matomo.ignored(reason);
                Ok(false)
            }
            Err(error) => Err(IngestError::from_map(error, Protocol::Matomo)),
        };
        match recorded {
            Ok(true) => tracked += 1,
            Ok(false) => {}
            // A bulk request answers with a summary: a bad entry is counted and tallied, and
            // the others still count. Without bulk there is one entry, answered as itself;
            // and the collector being unavailable stops any request.
            Err(error) if requests.bulk && !error.is_unavailable() => {
                error.count();
                invalid += 1;
            }
            Err(error) => return Err(error),
        }
    }
    if requests.bulk {
        let summary = serde_json::json!({
            "status": "success", "tracked": tracked, "invalid": invalid,
        });
        return Ok(response::json(StatusCode::OK, &summary));
    }
    Ok(if requests.send_image {
        response::gif(StatusCode::OK)
    } else {
        response::text(StatusCode::NO_CONTENT, "text/plain", Bytes::new())
    })
}

fn referer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
