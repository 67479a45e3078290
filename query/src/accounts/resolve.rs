//! Who is asking: a request's credentials turned into a [`Principal`]. An API key
//! (`Authorization: Bearer …`) comes first, then the session cookie, then a share link
//! (`?auth=TOKEN` with the `site_id` it is for). Keys and sessions are read from ClickHouse on
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
    let cookie = session::token_of(headers);
    if let Some(token) = cookie {
        if let Some(principal) = signed_in(state, token).await? {
            return Ok(principal);
        }
    }
    if let Some(token) = query.get("auth") {
        let site_id = crate::params::parse_site_id(query.get("site_id").map(String::as_str))?;
        let sites = crate::api::all_sites(state).await?;
        let matches = sites
            .get(&site_id)
            .is_some_and(|site| site.accepts_share_token(token));
        return if matches {
            Ok(Principal::ShareLink { site: site_id })
        } else {
            Err(ApiError::Unauthorized("invalid share link"))
        };
    }
    Err(ApiError::Unauthorized(if cookie.is_some() {
        "your session has ended: sign in again"
    } else {
        "not signed in: sign in, or send `Authorization: Bearer <API key>`"
    }))
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
