//! `GET`/`POST /api/v1/sites`, `GET`/`PUT`/`DELETE /api/v1/sites/:site_id`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glimpse_core::registry::RegistryError;
use glimpse_core::site::Sites;
use serde_json::{json, Value};

use super::{
    administered_site, changed, configured, page, principal, readable_site, registry, Params,
};
use crate::accounts::{KeyScope, Principal};
use crate::api::all_sites;
use crate::auth::{self, Site, ALL_SITES};
use crate::error::ApiError;
use crate::{audit, plan, AppState};

/// Plausible's site object, with Glimpse's additions: goals, imported days, where the site is
/// managed (`configuration`: read-only here) and, for a renamed site, the domain it was
/// created with (still accepted, and what the audit log names it by).
fn site_json(site: &Site, configured: bool, imported: Option<&(String, String)>) -> Value {
    let goals: Vec<&str> = site.goals.iter().map(|g| g.name.as_str()).collect();
    let mut answer = json!({
        "domain": site.current_domain(),
        "timezone": site.timezone,
        "custom_properties": [],
        "goals": goals,
        "imported": imported.map(|(first, last)| json!({ "from": first, "to": last })),
        "managed_in": if configured { "configuration" } else { "registry" },
    });
    if site.renamed_to.is_some() {
        answer["first_domain"] = json!(site.domain);
    }
    answer
}

/// `GET /api/v1/sites`: the sites the caller may read, in Plausible's shape (`sites`, `meta`,
/// paginated) and, for Glimpse's earlier readers, the same list as `results`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, params) = Params::read(request).await?;
    let principal = principal(&state, &headers, &params).await?;
    let visible: Vec<Site> = match &principal {
        // A share link names its site: that one only.
        Principal::ShareLink { site } => vec![readable_site(&state, &principal, site).await?],
        _ => all_sites(&state)
            .await?
            .iter()
            .filter(|s| principal.may_read(&s.domain))
            .cloned()
            .collect(),
    };
    for site in &visible {
        plan::site_timezone(site)?;
    }
    // Which days have imported aggregates (`with_imported=true` adds them).
    let tracked = state.db.track();
    let imported: HashMap<String, (String, String)> = tracked
        .run(
            plan::imported_ranges_statement(&state.database)
                .query(&tracked.client)
                .fetch_all::<(String, String, String)>(),
        )
        .await?
        .into_iter()
        .map(|(site, first, last)| (site, (first, last)))
        .collect();
    let (visible, meta) = page(visible, |s| s.domain.clone(), &params)?;
    let sites: Vec<Value> = visible
        .iter()
        .map(|s| site_json(s, configured(&state, &s.domain), imported.get(&s.domain)))
        .collect();
    Ok(Json(json!({ "sites": sites, "results": sites, "meta": meta })).into_response())
}

/// `GET /api/v1/sites/:site_id`: the site, and for those who may change it, its tracker
/// snippet (the dashboard's settings page shows it).
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Path(site_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, params) = Params::read(request).await?;
    let principal = principal(&state, &headers, &params).await?;
    let site = readable_site(&state, &principal, &site_id).await?;
    let mut answer = site_json(&site, configured(&state, &site.domain), None);
    if principal.may_admin(&site.domain) {
        answer["tracker"] = tracker_json(&state.config, &headers, site.current_domain());
    }
    Ok(Json(answer).into_response())
}

/// Where the site's pages load the tracker from, and the tags to paste: the collector's
/// `public_url`, else the collector's port on the host this request was addressed to (the
/// single-machine `glimpse serve`).
fn tracker_json(config: &glimpse_core::Config, headers: &HeaderMap, domain: &str) -> Value {
    let base = match &config.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
                .unwrap_or("localhost");
            format!("http://{host}:{}", config.collector.collector_addr.port())
        }
    };
    let stem = config.collector.script_path.trim_end_matches(".js");
    // The tracker stays silent on local pages unless told (developers' own visits do not
    // count): a site named after a local host gets the attribute in its snippet.
    let local = domain == "localhost" || domain.starts_with("127.");
    let allow_local = if local { " data-allow-local" } else { "" };
    let variants: Vec<Value> = glimpse_core::tracker::VARIANT_NAMES
        .iter()
        .map(|name| {
            let path = if name.is_empty() {
                config.collector.script_path.clone()
            } else {
                format!("{stem}.{name}.js")
            };
            let src = format!("{base}{path}");
            json!({
                "name": if name.is_empty() { "core" } else { name },
                "src": src,
                "snippet": format!(
                    "<script defer{allow_local} data-domain=\"{domain}\" src=\"{src}\"></script>"
                ),
            })
        })
        .collect();
    json!({ "script_url": variants[0]["src"], "snippet": variants[0]["snippet"], "variants": variants })
}

/// `POST /api/v1/sites` `{domain, timezone?}`: by the owner or an all-sites `sites` key.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, params) = Params::read(request).await?;
    let principal = principal(&state, &headers, &params).await?;
    let may_create = match &principal {
        Principal::Owner { .. } => true,
        Principal::Key { site, scope } => site == ALL_SITES && *scope == KeyScope::Sites,
        _ => false,
    };
    if !may_create {
        return Err(ApiError::Denied(
            "only the owner or an all-sites key with the `sites` scope can create sites".into(),
        ));
    }
    let domain = params.required("domain")?.to_ascii_lowercase();
    let timezone = match params.get("timezone") {
        // Plausible's default name for UTC.
        None | Some("Etc/UTC") => "UTC",
        Some(tz) => tz,
    };
    if all_sites(&state).await?.get(&domain).is_some() {
        return Err(ApiError::bad("domain", "domain has already been taken"));
    }
    let site = put_site(&state, &principal, "site.create", &domain, timezone).await?;
    Ok(Json(json!({ "domain": site.domain, "timezone": site.timezone })).into_response())
}

/// `PUT /api/v1/sites/:site_id` `{domain?, timezone?}`: renames the site and/or changes its
/// time zone. A rename is instant and keeps everything: the site keeps its id (the domain it
/// was created with, which stays accepted in beacons and `site_id`, as Plausible accepts the
/// old domain after a change) and goes by the new domain everywhere it is shown.
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    Path(site_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, params) = Params::read(request).await?;
    let principal = principal(&state, &headers, &params).await?;
    let site = administered_site(&state, &principal, &site_id).await?;
    super::writable(&state, &site)?;
    let mut current = site.current_domain().to_string();
    if let Some(new) = params.get("domain").map(str::to_ascii_lowercase) {
        if new != current {
            rename(&state, &principal, &site, &new).await?;
            current = new;
        }
    }
    let timezone = match params.get("timezone") {
        Some(tz) if tz != site.timezone => {
            put_site(&state, &principal, "site.update", &site.domain, tz)
                .await?
                .timezone
        }
        _ => site.timezone.clone(),
    };
    Ok(Json(json!({ "domain": current, "timezone": timezone })).into_response())
}

/// Gives `site` the domain `new` (refused when another site has it as its id or new name).
async fn rename(
    state: &AppState,
    principal: &Principal,
    site: &Site,
    new: &str,
) -> Result<(), ApiError> {
    if all_sites(state)
        .await?
        .get(new)
        .is_some_and(|other| other.domain != site.domain)
    {
        return Err(ApiError::bad("domain", "domain has already been taken"));
    }
    registry(state)
        .rename_site(&Sites::new(&state.config.sites), &site.domain, new)
        .await
        .map_err(|e| match e {
            RegistryError::Invalid(e) => ApiError::bad("domain", e.to_string()),
            other => registry_error(other),
        })?;
    changed(state);
    let detail = format!("{} → {new}", site.current_domain());
    audit::record_by(state, principal, "site.rename", &site.domain, &detail).await;
    Ok(())
}

/// Stores a site's settings in the registry and records `action`.
async fn put_site(
    state: &AppState,
    principal: &Principal,
    action: &str,
    domain: &str,
    timezone: &str,
) -> Result<Site, ApiError> {
    let site = registry(state)
        .put_site(&Sites::new(&state.config.sites), domain, timezone)
        .await
        .map_err(registry_error)?;
    changed(state);
    let detail = format!("timezone {}", site.timezone);
    audit::record_by(state, principal, action, &site.domain, &detail).await;
    Ok(site)
}

/// `DELETE /api/v1/sites/:site_id`: the site, its goals, links and keys, and all its data. By
/// the owner or a `sites` key for it (a site admin may not: it erases everything).
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(site_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, params) = Params::read(request).await?;
    let principal = principal(&state, &headers, &params).await?;
    let site = administered_site(&state, &principal, &site_id).await?;
    if matches!(principal, Principal::User { .. }) {
        return Err(ApiError::Denied(
            "only the owner or a key with the `sites` scope can delete a site".into(),
        ));
    }
    super::writable(&state, &site)?;
    let client = state.db.background().clone();
    let erased = auth::remove_site(&client, &state.database, &state.config, &site.domain)
        .await
        .map_err(|e| match e {
            auth::KeyError::ClickHouse(e) => ApiError::from(e),
            auth::KeyError::Registry(e) => registry_error(e),
            other => ApiError::Unavailable(other.to_string()),
        })?;
    changed(&state);
    audit::record_by(
        &state,
        &principal,
        "site.delete",
        &site.domain,
        &format!("{erased} events erased"),
    )
    .await;
    Ok(Json(json!({ "deleted": "true" })).into_response())
}

/// A registry failure as an answer: bad input is the caller's, ClickHouse's is ours.
pub(crate) fn registry_error(error: RegistryError) -> ApiError {
    match error {
        RegistryError::ClickHouse(e) => ApiError::from(e),
        RegistryError::Invalid(e) => ApiError::bad("site", e.to_string()),
        RegistryError::Configured(_) => ApiError::bad("site_id", error.to_string()),
        RegistryError::UnknownSite(site) => ApiError::UnknownSite(site),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snippet_points_at_the_collector() {
        let mut config = glimpse_core::Config::default();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "stats.local:8001".parse().unwrap());
        let tracker = tracker_json(&config, &headers, "a.com");
        assert_eq!(
            tracker["script_url"],
            "http://stats.local:8000/js/script.js"
        );
        assert_eq!(
            tracker["snippet"],
            "<script defer data-domain=\"a.com\" src=\"http://stats.local:8000/js/script.js\"></script>"
        );
        assert_eq!(tracker["variants"].as_array().unwrap().len(), 8);
        assert_eq!(
            tracker["variants"][1]["src"],
            "http://stats.local:8000/js/script.engagement.js"
        );
        let local = tracker_json(&config, &headers, "localhost");
        assert_eq!(
            local["snippet"],
            "<script defer data-allow-local data-domain=\"localhost\" src=\"http://stats.local:8000/js/script.js\"></script>"
        );
        config.public_url = Some("https://collector.example/".into());
        let tracker = tracker_json(&config, &headers, "a.com");
        assert_eq!(
            tracker["script_url"],
            "https://collector.example/js/script.js"
        );
    }
}
