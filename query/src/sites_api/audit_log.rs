//! `GET /api/v1/sites/audit`: the audit log (`crate::audit`) as the Sites API reads it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{administered_site, principal, Params};
use crate::audit::{entries, MAX_ENTRIES};
use crate::error::ApiError;
use crate::AppState;

/// `GET /api/v1/sites/audit?site_id=` (a site's admins and the owner) or without `site_id`
/// (the owner: every entry). `limit` up to 1000, default 100.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, params) = Params::read(request).await?;
    let principal = principal(&state, &headers, &params).await?;
    let site = match params.get("site_id") {
        Some(site_id) => Some(administered_site(&state, &principal, site_id).await?.domain),
        None if principal.is_owner() => None,
        None => return Err(ApiError::bad("site_id", "site_id can't be blank")),
    };
    let limit = params.limit(100, MAX_ENTRIES as usize)? as u64;
    let tracked = state.db.track();
    let entries = tracked
        .run(entries(
            &tracked.client,
            &state.database,
            site.as_deref(),
            limit,
        ))
        .await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}
