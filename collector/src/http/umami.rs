//! `POST /api/send`: Umami's tracker, unchanged, pointed at Glimpse (`data-host-url`). The
//! mapping is `ingest::protocols::umami`; from the beacon on, the path is the shared one
//! (`intake`).

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::ingest_error::IngestError;
use super::intake::{self, Protocol};
use super::response::{self, Body};
use super::State;
use crate::ingest::protocols::{umami, Mapped};

pub async fn handle<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let answer = match *request.method() {
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
        _ => Err(IngestError::MethodNotAllowed {
            allow: "POST, OPTIONS",
        }),
    };
    response::with_cors(answer.unwrap_or_else(IngestError::into_response))
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
    let expected = Some("application/json or text/plain");
    let (_, client, body) = intake::receive(state, peer, request, expected).await?;
    match umami::map(&body, &state.config.collector.umami_websites, &state.limits) {
        Ok(Mapped::Event(beacon)) => {
            intake::record(state, &beacon, &client, Protocol::Umami).await?
        }
        Ok(Mapped::Ignored(reason)) => Protocol::Umami.ignored(reason),
        Err(error) => return Err(IngestError::from_map(error, Protocol::Umami)),
    }
    Ok(accepted())
}

/// Umami's tracker reads the answer as JSON: `disabled` would stop it, and a `cache` token
/// would come back on every later request. Real Umami's token carries the session and visit
/// ids: an identifier, which Glimpse does not hand out. So: an empty object.
fn accepted() -> Response<Body> {
    response::json(StatusCode::OK, &serde_json::json!({}))
}
