//! Cross-site request protection for signed-in browsers: a state-changing request (POST, PUT,
//! PATCH, DELETE) that carries the session cookie must say it comes from this service's own
//! origin, in `Origin` or, without it, `Referer`; anything else is refused with 403 before any
//! handler runs. One middleware, so every endpoint added later is covered.
//!
//! The own origin is `dashboard_url`'s when it is set (the `Host` header is then not trusted, so a
//! page on a name that merely resolves here is refused), else the request's `Host` with the
//! scheme the browser used. Requests without the cookie (API keys, scripts) are not affected:
//! no other website can make a browser attach a key. A sign-in from another website's page is
//! refused too (login CSRF), when the browser says where it comes from; so is accepting an
//! invitation, which signs in too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::session;
use crate::error::ApiError;
use crate::AppState;

pub(crate) async fn refuse_cross_site(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let headers = request.headers();
    let path = request.uri().path();
    let signing_in = (path == super::http::LOGIN_PATH
        || path == super::invitation_http::ACCEPT_PATH)
        && (headers.contains_key(header::ORIGIN) || headers.contains_key(header::REFERER));
    if changes_state && (session::has_cookie(headers) || signing_in) {
        let own = own_origin(&state, peer.ip(), headers);
        let ours = own.is_some_and(|own| claimed_origin(headers) == Some(own));
        if !ours {
            return ApiError::Denied("cross-site request refused".into()).into_response();
        }
    }
    next.run(request).await
}

/// `scheme://host[:port]` of this service as the browser sees it; `None` when unknown.
pub(crate) fn own_origin(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> Option<String> {
    if let Some(public) = &state.public_origin {
        return Some(public.clone());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?.trim();
    let scheme = if is_https(state, peer, headers) {
        "https"
    } else {
        "http"
    };
    origin_of(&format!("{scheme}://{host}"))
}

/// Whether the browser reached us over HTTPS: `dashboard_url` says so, or a trusted proxy sent
/// `X-Forwarded-Proto: https` (anyone else could send that header).
pub(crate) fn is_https(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> bool {
    if let Some(public) = &state.public_origin {
        return public.starts_with("https://");
    }
    state.trusted_proxies.contains(peer.to_canonical())
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The origin the browser says the request comes from: `Origin`, else `Referer`'s origin.
fn claimed_origin(headers: &HeaderMap) -> Option<String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match text(header::ORIGIN) {
        // `null` (privacy-sensitive contexts, sandboxed frames) is nobody we know.
        Some(origin) => origin_of(origin),
        None => text(header::REFERER).and_then(origin_of),
    }
}

/// `scheme://host[:port]` of an http(s) URL, lower-cased, default port left out.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url.trim()).ok()?;
    matches!(url.scheme(), "http" | "https")
        .then(|| url.origin().ascii_serialization())
        .filter(|o| o != "null")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn origins_are_compared_in_their_serialised_form() {
        assert_eq!(
            origin_of("https://Stats.Example.com:443/dash?x=1").as_deref(),
            Some("https://stats.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8081").as_deref(),
            Some("http://127.0.0.1:8081")
        );
        for junk in ["null", "", "ftp://example.com", "example.com", "data:,x"] {
            assert_eq!(origin_of(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn origin_comes_first_then_referer() {
        assert_eq!(
            claimed_origin(&headers(&[
                ("origin", "https://evil.example"),
                ("referer", "https://stats.example.com/")
            ]))
            .as_deref(),
            Some("https://evil.example")
        );
        assert_eq!(
            claimed_origin(&headers(&[("referer", "https://stats.example.com/a?b")])).as_deref(),
            Some("https://stats.example.com")
        );
        assert_eq!(claimed_origin(&headers(&[("origin", "null")])), None);
        assert_eq!(claimed_origin(&headers(&[])), None);
    }
}
