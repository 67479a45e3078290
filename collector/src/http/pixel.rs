//! `GET /pixel.gif`: a page view without JavaScript (`<noscript><img src=…></noscript>`,
//! static pages). The mapping is `ingest::protocols::pixel`; from the beacon on, the path is
//! `/api/event`'s. Every answer is the 1×1 GIF (a broken-image icon helps nobody); the status
//! says what happened.

use std::net::SocketAddr;

use http::{header, Method, Request, Response, StatusCode};

use super::event::{self, Client, Outcome, Protocol};
use super::response::{self, Body};
use super::State;
use crate::ingest::protocols::{pixel, MapError, Mapped};

pub async fn handle<B>(state: &State, peer: SocketAddr, request: &Request<B>) -> Response<Body> {
    match *request.method() {
        Method::GET => {}
        // Link checkers and caches probe with HEAD: an answer, not a page view.
        Method::HEAD => return response::with_cors(response::gif(StatusCode::OK)),
        _ => {
            event::reject("method_not_allowed");
            return response::with_cors(response::method_not_allowed("GET"));
        }
    }
    let status = match Client::admit(state, peer, request.headers()) {
        Ok(client) => record(state, &client, request).await,
        Err(refused) => return response::with_cors(refused),
    };
    match status {
        Ok(status) => response::with_cors(response::gif(status)),
        Err(unavailable) => response::with_cors(unavailable),
    }
}

async fn record<B>(
    state: &State,
    client: &Client,
    request: &Request<B>,
) -> Result<StatusCode, Response<Body>> {
    let referer = request
        .headers()
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok());
    match pixel::map(request.uri().query(), referer, &state.limits) {
        Ok(Mapped::Event(beacon)) => {
            match event::record(state, &beacon, client, Protocol::Pixel).await {
                Outcome::Accepted => Ok(StatusCode::OK),
                Outcome::Refused(_) => Ok(StatusCode::FORBIDDEN),
                Outcome::Unavailable(response) => Err(response),
            }
        }
        Ok(Mapped::Ignored(reason)) => {
            Protocol::Pixel.ignored(reason);
            Ok(StatusCode::OK)
        }
        Err(MapError::UnknownSite(_)) => {
            event::unknown_site();
            Ok(StatusCode::FORBIDDEN)
        }
        Err(MapError::Invalid(_)) => {
            event::reject("invalid");
            Ok(StatusCode::BAD_REQUEST)
        }
    }
}
