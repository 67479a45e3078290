//! Plausible's Sites API (`/api/v1/sites…`): sites, goals, shared links and guests managed over
//! HTTP, stored in the live registry (`glimpse_core::registry`) that every collector and query
//! service reloads within seconds.
//!
//! Who may do what is the [`Principal`]'s table: reading needs `may_read`, changing a site's
//! goals, links and guests `may_admin`; creating sites needs the owner or an all-sites `sites`
//! key, deleting one the owner or a `sites` key for it. Bodies may be JSON, a form
//! (`application/x-www-form-urlencoded`) or `multipart/form-data` (what `curl -F` sends, as in
//! Plausible's examples); parameters may also come in the query string. A state change with a
//! session cookie has passed the cross-site check (`accounts::cross_site`) before it gets here.
//!
//! `sites` is the sites themselves, `goals` their goals, `links` their shared links, `guests`
//! their members and invitations, `keys` their API keys; this module holds what they share:
//! parameters, pagination and permission.

pub(crate) mod audit_log;
pub(crate) mod funnels;
pub(crate) mod goals;
pub(crate) mod guests;
pub(crate) mod keys;
pub(crate) mod links;
pub(crate) mod sites;

use std::collections::HashMap;

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use serde_json::{json, Value};

use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::accounts::resolve;
use crate::accounts::Principal;
use crate::api::all_sites;
use crate::audit;
use crate::auth::Site;
use crate::error::ApiError;
use crate::AppState;
use glimpse_core::registry::{Registry, RegistryError};

/// Largest body accepted: these requests carry a few short fields.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most fields a request may have, and the longest value.
const MAX_FIELDS: usize = 32;
const MAX_VALUE_CHARS: usize = 2048;
/// Plausible's default and largest page.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// A request's parameters: the query string's, then the body's (which win).
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    /// Reads the query string and the body, whatever its form.
    pub(crate) async fn read(request: Request) -> Result<(HeaderMap, Self), ApiError> {
        let headers = request.headers().clone();
        let mut fields: Vec<(String, String)> = request
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("multipart/form-data") {
            let mut multipart = axum::extract::Multipart::from_request(request, &())
                .await
                .map_err(|e| ApiError::bad("body", format!("unreadable form: {e}")))?;
            let mut read = 0usize;
            while let Some(field) = multipart
                .next_field()
                .await
                .map_err(|e| ApiError::bad("body", format!("unreadable form: {e}")))?
            {
                let name = field.name().unwrap_or_default().to_string();
                let value = field
                    .text()
                    .await
                    .map_err(|e| ApiError::bad("body", format!("unreadable form: {e}")))?;
                read += name.len() + value.len();
                if read > MAX_BODY_BYTES {
                    return Err(ApiError::bad("body", "the body is too large"));
                }
                fields.push((name, value));
            }
        } else {
            let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
                .await
                .map_err(|_| ApiError::bad("body", "the body is too large or unreadable"))?;
            if !body.is_empty() {
                if content_type.starts_with("application/x-www-form-urlencoded") {
                    fields.extend(url::form_urlencoded::parse(&body).into_owned());
                } else {
                    fields.extend(json_fields(&body)?);
                }
            }
        }
        if fields.len() > MAX_FIELDS {
            return Err(ApiError::bad("body", "too many fields"));
        }
        let mut map = HashMap::new();
        for (name, value) in fields {
            if value.chars().count() > MAX_VALUE_CHARS {
                return Err(ApiError::bad("body", format!("{name} is too long")));
            }
            map.insert(name, value);
        }
        Ok((headers, Self(map)))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A field that must be there, in Plausible's words when it is not.
    pub(crate) fn required(&self, name: &'static str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::bad(name, format!("{name} can't be blank")))
    }

    /// `limit`: `default` when absent, else 1 to `max`.
    pub(crate) fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| ApiError::bad("limit", format!("limit must be 1 to {max}"))),
        }
    }

    /// The parameters as the stats API's map (for resolving a share link or a key).
    pub(crate) fn as_map(&self) -> &HashMap<String, String> {
        &self.0
    }
}

/// A JSON object's fields as text (numbers and booleans as written; nested values refused).
fn json_fields(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad("body", "expected a JSON object, a form or multipart form"))?;
    let Value::Object(object) = value else {
        return Err(ApiError::bad("body", "expected a JSON object"));
    };
    object
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(name, value)| match value {
            Value::String(s) => Ok((name, s)),
            Value::Number(n) => Ok((name, n.to_string())),
            Value::Bool(b) => Ok((name, b.to_string())),
            _ => Err(ApiError::bad("body", format!("{name} must be text"))),
        })
        .collect()
}

/// Who asks (401 without valid credentials).
pub(crate) async fn principal(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Principal, ApiError> {
    resolve::principal(state, headers, params.as_map()).await
}

/// The site named by `site_id` when `principal` may administer it: 404 for a site that does
/// not exist, or one a user cannot even read (no list of sites for the curious); 403 for one
/// they may read but not change.
pub(crate) async fn administered_site(
    state: &AppState,
    principal: &Principal,
    site_id: &str,
) -> Result<Site, ApiError> {
    let site = readable_site(state, principal, site_id).await?;
    if principal.may_admin(&site.domain) {
        Ok(site)
    } else {
        Err(ApiError::Denied(format!(
            "you cannot change site {site_id:?}"
        )))
    }
}

/// The site named by `site_id` when `principal` may read it (404 otherwise).
pub(crate) async fn readable_site(
    state: &AppState,
    principal: &Principal,
    site_id: &str,
) -> Result<Site, ApiError> {
    let sites = all_sites(state).await?;
    match sites.get(site_id) {
        // Permissions are kept by the site's id (a renamed site's first domain).
        Some(site) if principal.may_read(&site.domain) => Ok(site.clone()),
        _ => Err(ApiError::UnknownSite(site_id.to_string())),
    }
}

/// A request about one site, named by `site_id`: its headers and parameters, who asks, and the
/// site (checked as [`readable_site`] or [`administered_site`] say).
pub(crate) struct SiteRequest {
    pub headers: HeaderMap,
    pub params: Params,
    pub principal: Principal,
    pub site: Site,
}

impl SiteRequest {
    /// A request that reads the site.
    pub(crate) async fn read(state: &AppState, request: Request) -> Result<Self, ApiError> {
        Self::checked(state, request, false).await
    }

    /// A request that changes the site.
    pub(crate) async fn admin(state: &AppState, request: Request) -> Result<Self, ApiError> {
        Self::checked(state, request, true).await
    }

    async fn checked(state: &AppState, request: Request, admin: bool) -> Result<Self, ApiError> {
        let (headers, params) = Params::read(request).await?;
        let principal = principal(state, &headers, &params).await?;
        let site_id = params.required("site_id")?;
        let site = if admin {
            administered_site(state, &principal, site_id).await?
        } else {
            readable_site(state, &principal, site_id).await?
        };
        Ok(Self {
            headers,
            params,
            principal,
            site,
        })
    }

    /// Removes one of the site's registry entries (a goal, link or funnel) through `removal`,
    /// after refusing a configured site; then tells this service and audits `action` on
    /// `target`. Answers Plausible's `{"deleted": "true"}`.
    pub(crate) async fn remove_entry(
        &self,
        state: &AppState,
        action: &str,
        target: &str,
        removal: impl std::future::Future<Output = Result<(), RegistryError>>,
    ) -> Result<Response, ApiError> {
        writable(state, &self.site)?;
        removal.await.map_err(sites::registry_error)?;
        changed(state);
        audit::record_by(state, &self.principal, action, &self.site.domain, target).await;
        Ok(deleted())
    }
}

/// Plausible's answer to a deletion.
pub(crate) fn deleted() -> Response {
    Json(json!({ "deleted": "true" })).into_response()
}

/// Whether `domain` is managed in the configuration file (read-only here).
pub(crate) fn configured(state: &AppState, domain: &str) -> bool {
    state.config.sites.iter().any(|s| s.domain == domain)
}

/// Refuses changes to a configured site's settings, goals and links.
pub(crate) fn writable(state: &AppState, site: &Site) -> Result<(), ApiError> {
    if configured(state, &site.domain) {
        Err(ApiError::bad(
            "site_id",
            format!(
                "site {} is managed in the configuration file: change it there",
                site.domain
            ),
        ))
    } else {
        Ok(())
    }
}

pub(crate) fn registry(state: &AppState) -> Registry {
    Registry::new(state.db.background().clone(), &state.database)
}

/// After a change: this service reads the sites again on its next request (others within
/// their cache's lifetime).
pub(crate) fn changed(state: &AppState) {
    state.sites.clear();
}

/// One page of `items` (sorted by their key) in Plausible's cursor pagination: `after` and
/// `before` are the keys of the items the previous answer ended and started with.
pub(crate) fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    params: &Params,
) -> Result<(Vec<T>, Value), ApiError> {
    let limit = params.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let keys: Vec<String> = items.iter().map(&key).collect();
    let (start, end) = match (params.get("after"), params.get("before")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad("after", "give after or before, not both"));
        }
        (Some(after), None) => {
            let start = keys.partition_point(|k| k.as_str() <= after);
            (start, (start + limit).min(items.len()))
        }
        (None, Some(before)) => {
            let end = keys.partition_point(|k| k.as_str() < before);
            (end.saturating_sub(limit), end)
        }
        (None, None) => (0, limit.min(items.len())),
    };
    let after = (end < items.len() && end > start).then(|| keys[end - 1].clone());
    let before = (start > 0).then(|| keys[start].clone());
    let page: Vec<T> = items.into_iter().skip(start).take(end - start).collect();
    Ok((
        page,
        json!({ "after": after, "before": before, "limit": limit }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn letters(n: u8) -> Vec<String> {
        (0..n).map(|i| char::from(b'a' + i).to_string()).collect()
    }

    #[test]
    fn pages_walk_forward_and_back_with_cursors() {
        let key = |s: &String| s.clone();
        let (first, meta) = page(letters(5), key, &params(&[("limit", "2")])).unwrap();
        assert_eq!(first, ["a", "b"]);
        assert_eq!(meta, json!({"after": "b", "before": null, "limit": 2}));
        let (second, meta) =
            page(letters(5), key, &params(&[("limit", "2"), ("after", "b")])).unwrap();
        assert_eq!(second, ["c", "d"]);
        assert_eq!(meta, json!({"after": "d", "before": "c", "limit": 2}));
        let (last, meta) =
            page(letters(5), key, &params(&[("limit", "2"), ("after", "d")])).unwrap();
        assert_eq!(last, ["e"]);
        assert_eq!(meta, json!({"after": null, "before": "e", "limit": 2}));
        let (back, _) = page(letters(5), key, &params(&[("limit", "2"), ("before", "e")])).unwrap();
        assert_eq!(back, ["c", "d"]);
        let (all, meta) = page(letters(3), key, &params(&[])).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(meta, json!({"after": null, "before": null, "limit": 100}));
    }

    #[test]
    fn bad_limits_and_cursors_are_refused() {
        for bad in [
            vec![("limit", "0")],
            vec![("limit", "1001")],
            vec![("limit", "ten")],
            vec![("after", "a"), ("before", "b")],
        ] {
            assert!(
                page(letters(3), |s| s.clone(), &params(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn json_bodies_give_text_fields_and_refuse_nesting() {
        let fields = json_fields(br#"{"domain": "a.com", "limit": 5, "x": null}"#).unwrap();
        assert!(fields.contains(&("domain".into(), "a.com".into())));
        assert!(fields.contains(&("limit".into(), "5".into())));
        assert_eq!(fields.len(), 2);
        assert!(json_fields(br#"{"domain": {"a": 1}}"#).is_err());
        assert!(json_fields(br#"["a"]"#).is_err());
        assert!(json_fields(b"domain=a.com").is_err());
    }
}
