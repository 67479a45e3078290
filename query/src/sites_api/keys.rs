//! A site's API keys, for its admins (Glimpse's; Plausible manages keys in its own UI):
//! `GET /api/v1/sites/keys?site_id=` lists them (never a key or its hash),
//! `PUT /api/v1/sites/keys` `{site_id, name, scope}` creates one and shows it once,
//! `DELETE /api/v1/sites/keys/:key_id` with `site_id` revokes one of that site's keys (at once:
//! keys are checked on every request).
//!
//! A `sites` key may create `stats` keys but not another `sites` key: a leaked key must not be
//! able to mint itself successors that outlive its revocation.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::page;
use super::SiteRequest;
use crate::accounts::{KeyScope, Principal};
use crate::auth::{self, KeyError, KeyInfo};
use crate::error::ApiError;
use crate::{audit, AppState};

/// Longest key name.
const MAX_NAME_CHARS: usize = 100;

fn key_error(error: KeyError) -> ApiError {
    match error {
        KeyError::ClickHouse(e) => e.into(),
        KeyError::Invalid(message) => ApiError::bad("body", message),
        KeyError::UnknownSite(site) => ApiError::UnknownSite(site),
        other => {
            tracing::error!(error = %other, "key operation failed");
            ApiError::Unavailable("the key could not be changed".into())
        }
    }
}

fn key_json(key: &KeyInfo) -> Value {
    let created_at = jiff::Timestamp::from_second(i64::from(key.created_at))
        .map(|t| t.to_string())
        .unwrap_or_default();
    json!({
        "key_id": key.key_id,
        "name": key.name,
        "scope": key.scope,
        "created_at": created_at,
        "revoked": key.revoked == 1,
    })
}

/// May `principal` create a key of `scope`? (They administer the site already.)
fn may_create(principal: &Principal, scope: KeyScope) -> bool {
    !matches!((principal, scope), (Principal::Key { .. }, KeyScope::Sites))
}

async fn site_keys(state: &AppState, site: &str) -> Result<Vec<KeyInfo>, ApiError> {
    let tracked = state.db.track();
    let keys = tracked
        .run(async {
            auth::list_keys(&tracked.client, &state.database)
                .await
                .map_err(key_error)
        })
        .await?;
    Ok(keys.into_iter().filter(|k| k.site == site).collect())
}

/// `GET /api/v1/sites/keys?site_id=`: by key id, revoked ones included.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest { params, site, .. } = SiteRequest::admin(&state, request).await?;
    let mut keys = site_keys(&state, &site.domain).await?;
    keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    let (keys, meta) = page(keys, |k| k.key_id.clone(), &params)?;
    let keys: Vec<Value> = keys.iter().map(key_json).collect();
    Ok(Json(json!({ "keys": keys, "meta": meta })).into_response())
}

/// `PUT /api/v1/sites/keys` `{site_id, name, scope}` → `{key_id, key, name, scope}`.
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest {
        params,
        principal,
        site,
        ..
    } = SiteRequest::admin(&state, request).await?;
    let name = params.required("name")?;
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    let scope: KeyScope = params.get("scope").unwrap_or("stats").parse().map_err(
        |e: crate::accounts::principal::UnknownName| ApiError::bad("scope", e.to_string()),
    )?;
    if !may_create(&principal, scope) {
        return Err(ApiError::Denied(
            "an API key cannot create a sites key: sign in to do that".into(),
        ));
    }
    let (key, key_id) = auth::create_scoped_key(
        state.db.background(),
        &state.database,
        &state.config,
        &site.domain,
        name,
        scope,
    )
    .await
    .map_err(key_error)?;
    let detail = format!("{key_id} {name} {}", scope.as_str());
    audit::record_by(&state, &principal, "key.create", &site.domain, &detail).await;
    Ok(Json(json!({
        "key_id": key_id,
        "key": key,
        "name": name,
        "scope": scope.as_str(),
    }))
    .into_response())
}

/// `DELETE /api/v1/sites/keys/:key_id` with `site_id`: only a key of that site, not revoked.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(key_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest {
        principal, site, ..
    } = SiteRequest::admin(&state, request).await?;
    let keys = site_keys(&state, &site.domain).await?;
    let Some(key) = keys.iter().find(|k| k.key_id == key_id && k.revoked == 0) else {
        return Err(ApiError::NotFound(format!(
            "no key {key_id:?} on site {}",
            site.domain
        )));
    };
    auth::revoke_key(state.db.background(), &state.database, &key.key_id)
        .await
        .map_err(key_error)?;
    let detail = format!("{} {}", key.key_id, key.name);
    audit::record_by(&state, &principal, "key.revoke", &site.domain, &detail).await;
    Ok(super::deleted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_mints_a_sites_key_but_people_may() {
        let key = |scope| Principal::Key {
            site: "a.example".into(),
            scope,
        };
        assert!(!may_create(&key(KeyScope::Sites), KeyScope::Sites));
        assert!(may_create(&key(KeyScope::Sites), KeyScope::Stats));
        let owner = Principal::Owner {
            email: "o@example.com".into(),
        };
        assert!(may_create(&owner, KeyScope::Sites));
        let admin = Principal::User {
            email: "a@example.com".into(),
            roles: [("a.example".to_string(), crate::accounts::Role::Admin)].into(),
        };
        assert!(may_create(&admin, KeyScope::Sites));
    }

    #[test]
    fn listed_keys_show_no_secret_and_a_readable_time() {
        let info = KeyInfo {
            key_id: "0123456789ab".into(),
            site: "a.example".into(),
            name: "ci".into(),
            created_at: 1_700_000_000,
            revoked: 1,
            scope: "stats".into(),
        };
        assert_eq!(
            key_json(&info),
            json!({"key_id": "0123456789ab", "name": "ci", "scope": "stats",
                   "created_at": "2023-11-14T22:13:20Z", "revoked": true})
        );
    }
}
