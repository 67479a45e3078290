//! Building the collector's responses: CORS headers for beacon endpoints, `503`/`429` with
//! `Retry-After`, the pixel GIF; the plain builders come from `glimpse_core::net::response`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

pub use glimpse_core::net::response::{error, json, method_not_allowed, text, Body};

/// Beacons come from every site's pages, so any origin may send them. No credentials: Glimpse
/// sets no cookies on beacon requests.
pub fn with_cors(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// The answer to a CORS preflight for a beacon endpoint.
pub fn preflight() -> Response<Body> {
    let mut response = with_cors(Response::new(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// `wait` for `Retry-After`: whole seconds, rounded up, at least 1.
pub fn whole_seconds(wait: std::time::Duration) -> u32 {
    wait.as_secs_f64().ceil().max(1.0) as u32
}

/// The 1×1 transparent GIF that Matomo answers image requests with (43 bytes).
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// `status` with the 1×1 GIF, never cached (each load is a page view).
pub fn gif(status: StatusCode) -> Response<Body> {
    let mut response = text(status, "image/gif", Bytes::from_static(PIXEL_GIF));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, max-age=0"),
    );
    response
}
