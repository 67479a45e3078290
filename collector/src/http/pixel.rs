//! `GET /pixel.gif`: a page view without JavaScript (`<noscript><img src=…></noscript>`,
//! static pages). The mapping is `ingest::protocols::pixel`; from the beacon on, the path is
//! the shared one (`intake`). Every answer about the event is the 1×1 GIF (a broken-image icon
//! helps nobody); the status says what happened.

use std::net::SocketAddr;

use http::{header, Method, Request, Response, StatusCode};

use super::ingest_error::IngestError;
use super::intake::{self, Client, Protocol};
use super::response::{self, Body};
use super::State;
use crate::ingest::protocols::{pixel, Mapped};

pub async fn handle<B>(state: &State, peer: SocketAddr, request: &Request<B>) -> Response<Body> {
    let answer = match *request.method() {
        Method::GET => record(state, peer, request).await,
        // Link checkers and caches probe with HEAD: an answer, not a page view.
        Method::HEAD => Ok(()),
        _ => Err(IngestError::MethodNotAllowed { allow: "GET" }),
    };
    response::with_cors(match answer {
        Ok(()) => response::gif(StatusCode::OK),
        Err(error) => error.into_gif_response(),
    })
}

async fn record<B>(
    state: &State,
    peer: SocketAddr,
    request: &Request<B>,
) -> Result<(), IngestError> {
    let client = Client::admit(state, peer, request.headers())?;
    let referer = request
        .headers()
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok());
    match pixel::map(request.uri().query(), referer, &state.limits) {
        Ok(Mapped::Event(beacon)) => intake::record(state, &beacon, &client, Protocol::Pixel).await,
        Ok(Mapped::Ignored(reason)) => {
            Protocol::Pixel.ignored(reason);
            Ok(())
        }
        Err(error) => Err(IngestError::from_map(error, Protocol::Pixel)),
    }
}
