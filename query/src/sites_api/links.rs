//! Shared links: read-only links to one site's dashboard (`/?site=D&auth=TOKEN`).
//! `PUT /api/v1/sites/shared-links` (Plausible's: find or create by name), and Glimpse's
//! `GET /api/v1/sites/shared-links?site_id=` (list) and
//! `DELETE /api/v1/sites/shared-links/:name` (revoke: the link stops working at once here and
//! within seconds everywhere).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glimpse_core::site::SharedLink;
use serde_json::{json, Value};

use super::sites::registry_error;
use super::SiteRequest;
use super::{changed, page, registry};
use crate::accounts::cross_site::own_origin;
use crate::audit;
use crate::error::ApiError;
use crate::AppState;

/// Longest link name.
const MAX_NAME_CHARS: usize = 100;

/// The dashboard's address for a share link, absolute when this service knows its origin.
fn link_url(origin: Option<&str>, site: &str, token: &str) -> String {
    let site: String = url::form_urlencoded::byte_serialize(site.as_bytes()).collect();
    format!("{}/?site={site}&auth={token}", origin.unwrap_or(""))
}

fn link_json(origin: Option<&str>, site: &str, link: &SharedLink) -> Value {
    json!({ "name": link.name, "url": link_url(origin, site, &link.token) })
}

/// A new link's secret: 32 random bytes from the OS, as hex.
fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Unavailable(format!("no randomness for a link: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn origin(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Option<String> {
    own_origin(state, peer.ip(), headers)
}

/// `GET /api/v1/sites/shared-links?site_id=`: the site's links (admins only: a link is a key).
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest {
        headers,
        params,
        site,
        ..
    } = SiteRequest::admin(&state, request).await?;
    let origin = origin(&state, peer, &headers);
    let mut links = site.shared_links.clone();
    links.sort_by(|a, b| a.name.cmp(&b.name));
    let (links, meta) = page(links, |l| l.name.clone(), &params)?;
    let links: Vec<Value> = links
        .iter()
        .map(|l| link_json(origin.as_deref(), &site.domain, l))
        .collect();
    Ok(Json(json!({ "shared_links": links, "meta": meta })).into_response())
}

/// `PUT /api/v1/sites/shared-links` `{site_id, name}`: finds or creates the link.
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest {
        headers,
        params,
        principal,
        site,
    } = SiteRequest::admin(&state, request).await?;
    let name = params.required("name")?;
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    let origin = origin(&state, peer, &headers);
    if let Some(link) = site.shared_links.iter().find(|l| l.name == name) {
        return Ok(Json(link_json(origin.as_deref(), &site.domain, link)).into_response());
    }
    super::writable(&state, &site)?;
    let link = SharedLink {
        name: name.to_string(),
        token: new_token()?,
    };
    registry(&state)
        .put_link(&site.domain, &link)
        .await
        .map_err(registry_error)?;
    changed(&state);
    audit::record_by(&state, &principal, "link.create", &site.domain, &link.name).await;
    Ok(Json(link_json(origin.as_deref(), &site.domain, &link)).into_response())
}

/// `DELETE /api/v1/sites/shared-links/:name` with `site_id`.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = SiteRequest::admin(&state, request).await?;
    let site = &request.site;
    if !site.shared_links.iter().any(|l| l.name == name) {
        return Err(ApiError::NotFound(format!(
            "no shared link {name:?} on site {}",
            site.domain
        )));
    }
    let registry = registry(&state);
    let removal = registry.delete_link(&site.domain, &name);
    request
        .remove_entry(&state, "link.revoke", &name, removal)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_urls_open_the_dashboard_on_the_site() {
        assert_eq!(
            link_url(Some("https://stats.example.net"), "a.com", "ab12"),
            "https://stats.example.net/?site=a.com&auth=ab12"
        );
        assert_eq!(link_url(None, "a.com", "ab12"), "/?site=a.com&auth=ab12");
    }

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
