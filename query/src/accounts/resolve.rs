//! Who is asking: a request's credentials turned into a [`Principal`]. An API key
//! (`Authorization: Bearer …`) comes first, then the session cookie, then a share link
//! (`?auth=TOKEN` with the `site_id` it is for, on a request without the cookie). Keys and sessions are read from ClickHouse on
//! every request (never cached) so that revoking one takes effect at once everywhere.

use std::collections::HashMap;

use axum::http::HeaderMap;

use super::principal::Principal;
use super::{session, store};
use crate::auth;
use crate::error::ApiError;
use crate::AppState;

/// The principal of a request; 401 when it has no valid credentials.
pub(crate) async fn principal(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Principal, ApiError> {
    if let Some(key) = crate::api::bearer(headers)? {
        let tracked = state.db.track();
        let (site, scope) = tracked
            .run(auth::key_access(&tracked.client, &state.database, key))
            .await?
            .ok_or(ApiError::Unauthorized("invalid or revoked API key"))?;
        return Ok(Principal::Key { site, scope });
    }
    // A cookie that is no valid session is refused, not tried as a share link: requests with
    // the cookie skip the per-client rate limit, which share tokens need against guessing.
    // (The dashboard sends no cookie with share-link requests.)
    if let Some(token) = session::token_of(headers) {
        return signed_in(state, token).await?.ok_or(ApiError::Unauthorized(
            "your session has ended: sign in again",
        ));
    }
    if let Some(token) = query.get("auth") {
        let site_id = crate::params::parse_site_id(query.get("site_id").map(String::as_str))?;
        let sites = crate::api::all_sites(state).await?;
        return match sites.get(&site_id) {
            Some(site) if site.accepts_share_token(token) => Ok(Principal::ShareLink {
                site: site.domain.clone(),
            }),
            _ => Err(ApiError::Unauthorized("invalid share link")),
        };
    }
    Err(ApiError::Unauthorized(
        "not signed in: sign in, or send `Authorization: Bearer <API key>`",
    ))
}

/// The principal of a valid session token, as its user's roles are now; `None` when the
/// session ended or its user is gone.
pub(crate) async fn signed_in(
    state: &AppState,
    token: &str,
) -> Result<Option<Principal>, ApiError> {
    let tracked = state.db.track();
    let Some(email) = tracked
        .run(session::email_of(&tracked.client, &state.database, token))
        .await?
    else {
        return Ok(None);
    };
    let tracked = state.db.track();
    tracked
        .run(store::user_principal(
            &tracked.client,
            &state.database,
            &email,
        ))
        .await
}
