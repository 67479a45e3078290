//! The dashboard: one page of plain HTML, CSS and JavaScript (`query/assets/`), embedded in
//! the binary and served at `/`. It reads everything through the stats API with the key the
//! analyst entered (kept in `sessionStorage`) or a share link's `?auth=TOKEN`.
//!
//! The script and style sheet are served under content-hashed names (`/assets/app-1a2b….js`),
//! so they can be cached for a year; the page itself is revalidated on every load. Every
//! response carries a strict Content-Security-Policy: only this origin's scripts, styles and
//! API, no inline script or style, no framing.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../assets/index.html");

/// An embedded file: its served name and body.
struct Asset {
    name: String,
    content_type: &'static str,
    body: &'static [u8],
}

const SOURCES: [(&str, &str, &str, &[u8]); 3] = [
    (
        "app",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "app",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "icon",
        "svg",
        "image/svg+xml",
        include_bytes!("../assets/icon.svg"),
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|&(stem, ext, content_type, body)| Asset {
            name: format!("{stem}-{}.{ext}", &blake3::hash(body).to_hex()[..16]),
            content_type,
            body,
        })
        .collect()
});

/// `index.html` with `{{app.js}}`, `{{app.css}}`, `{{icon.svg}}` replaced by hashed paths.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    let mut page = INDEX.to_string();
    for ((stem, ext, _, _), asset) in SOURCES.iter().zip(ASSETS.iter()) {
        page = page.replace(
            &format!("{{{{{stem}.{ext}}}}}"),
            &format!("/assets/{}", asset.name),
        );
    }
    page
});

/// Only this origin; no inline script or style (the page sets styles through the CSSOM only).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn respond(content_type: &'static str, cache: &'static str, body: Vec<u8>) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // A share link carries its token in the URL: never send it on as a referrer.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, body).into_response()
}

/// `GET /`: the dashboard page.
pub(crate) async fn index() -> Response {
    respond(
        "text/html; charset=utf-8",
        "no-cache",
        PAGE.as_bytes().to_vec(),
    )
}

/// `GET /assets/{name}`: a hashed script, style sheet or icon, cacheable for a year.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => respond(
            a.content_type,
            "public, max-age=31536000, immutable",
            a.body.to_vec(),
        ),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_links_every_asset_by_its_hashed_name() {
        assert!(!PAGE.contains("{{"), "unreplaced placeholder in index.html");
        for asset in ASSETS.iter() {
            assert!(
                PAGE.contains(&format!("/assets/{}", asset.name)),
                "index.html does not link {}",
                asset.name
            );
        }
        // No inline script or style: the CSP would block it.
        assert!(!PAGE.contains("<script>") && !PAGE.contains("style="));
    }
}
