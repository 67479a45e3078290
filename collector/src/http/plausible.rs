//! `POST /api/event` (the configured `event_path`): Plausible's event protocol, which Glimpse's
//! own tracker speaks. A beacon may name several sites (`d`); each beyond the first costs a
//! rate-limit token. From the beacon on, the path is the shared one (`intake`).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use super::ingest_error::IngestError;
use super::intake::{self, Protocol};
use super::response::{self, Body};
use super::State;
use crate::ingest;

pub async fn handle<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let answer = match *request.method() {
        Method::OPTIONS => return response::preflight(),
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
    let expected = Some("text/plain or application/json");
    let (_, client, body) = intake::receive(state, peer, request, expected).await?;
    let beacon = ingest::beacon::parse(&body, &state.limits).map_err(IngestError::Invalid)?;
    // One event per site `d` lists: each listed site beyond the first costs a token too.
    client.charge(state, beacon.domains.len().saturating_sub(1))?;
    intake::record(state, &beacon, &client, Protocol::Plausible).await?;
    Ok(response::text(StatusCode::ACCEPTED, "text/plain", "ok"))
}
