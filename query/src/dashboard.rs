//! The dashboard: one page of plain HTML, CSS and JavaScript (`query/assets/`), embedded in
//! the binary and served at `/`. It reads everything through the stats API as the signed-in
//! user (the `HttpOnly` session cookie of `/api/auth/login`), with the key the analyst entered
//! (kept in `sessionStorage`) or with a share link's `?auth=TOKEN`.
//!
//! The script and style sheet are served under content-hashed names (`/assets/app-1a2b….js`),
//! so they can be cached for a year; the page itself is revalidated on every load. Every
//! response carries a strict Content-Security-Policy: only this origin's scripts, styles and
//! API, no inline script or style, no framing.

use std::sync::{Arc, LazyLock};

use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use glimpse_core::config::Config;
use glimpse_core::geoip as geo;

use crate::AppState;

const INDEX: &str = include_str!("../assets/index.html");

/// An embedded file: its served name and body.
struct Asset {
    name: String,
    content_type: &'static str,
    body: &'static [u8],
}

const SOURCES: [(&str, &str, &str, &[u8]); 6] = [
    (
        "admin",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/admin.js"),
    ),
    (
        "chart",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/chart.js"),
    ),
    (
        "funnel",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/funnel.js"),
    ),
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

/// `index.html` with `{{admin.js}}`, `{{chart.js}}`, `{{app.js}}`, `{{app.css}}`,
/// `{{icon.svg}}` replaced by hashed paths
/// (`{{geoip_attribution}}` is filled by [`page`]).
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

/// The dashboard page for this configuration: its footer credits the GeoIP database when the
/// database's licence asks for it (DB-IP Lite: a link back to db-ip.com on pages that show its
/// results). Rendered once at start-up.
pub(crate) fn page(config: &Config) -> String {
    let credit = geo::Source::of(config)
        .and_then(|source| source.attribution())
        .map(|a| {
            format!(
                " · <a href=\"{}\">{}</a>",
                html_escape::encode_double_quoted_attribute(a.url),
                html_escape::encode_text(a.text)
            )
        })
        .unwrap_or_default();
    PAGE.replace("{{geoip_attribution}}", &credit)
}

/// `GET /`: the dashboard page.
pub(crate) async fn index(State(state): State<Arc<AppState>>) -> Response {
    respond(
        "text/html; charset=utf-8",
        "no-cache",
        state.page.as_bytes().to_vec(),
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
#[path = "../../collector/src/ingest/geo_test_dbs.rs"]
mod test_dbs;

#[cfg(test)]
mod tests {
    use super::test_dbs::{self, Kind};
    use super::*;

    #[test]
    fn page_credits_the_geoip_database_when_its_licence_asks() {
        let data = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: data.path().to_path_buf(),
            ..Config::default()
        };
        let none = page(&config);
        assert!(!none.contains("{{"), "unreplaced placeholder");
        assert!(!none.contains("geolocation"));

        let dir = geo::default_dir(data.path());
        std::fs::create_dir_all(&dir).unwrap();
        test_dbs::write(&dir, Kind::IpLocationCityV4);
        test_dbs::write(&dir, Kind::IpLocationCityV6);
        let city = page(&config);
        assert!(
            city.contains(r#"<footer>Glimpse — cookieless, privacy-preserving analytics · <a href="https://db-ip.com">IP geolocation by DB-IP</a></footer>"#),
            "{city}"
        );
        std::fs::remove_file(dir.join(Kind::IpLocationCityV6.file_name())).unwrap();
        test_dbs::write(&dir, Kind::IpLocationCountry);
        let country = page(&config);
        assert!(
            country.contains(r#"<a href="https://www.nro.net">IP geolocation from RIR data by the NRO (nro.net), CC BY 4.0</a>"#),
            "{country}"
        );
        // A configured GeoIP2 file whose licence asks for no credit in the page.
        let config = Config {
            geoip_db: Some(test_dbs::write(data.path(), Kind::MaxMindCity)),
            ..config
        };
        assert!(!page(&config).contains("geolocation"));
    }

    #[test]
    fn page_links_every_asset_by_its_hashed_name() {
        let page = page(&Config {
            data_dir: "/nonexistent".into(),
            ..Config::default()
        });
        assert!(!page.contains("{{"), "unreplaced placeholder in index.html");
        for asset in ASSETS.iter() {
            assert!(
                page.contains(&format!("/assets/{}", asset.name)),
                "index.html does not link {}",
                asset.name
            );
        }
        // No inline script or style: the CSP would block it.
        assert!(!page.contains("<script>") && !page.contains("style="));
    }
}
