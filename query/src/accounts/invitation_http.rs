//! Accepting an invitation: `GET /api/auth/invitation?token=` says what it is for (the page
//! an invitee opens from `/?invitation=TOKEN`), `POST /api/auth/accept-invitation`
//! `{token, password}` makes the invitee a member of the site and signs them in.
//!
//! An unknown, expired, withdrawn or used token gets the same `404`. Guessing is limited per
//! client address by the sign-in limiter (a token is 256 random bits: the limit is against
//! load, not luck). Accepting with an e-mail that already has a user needs that user's
//! password: an invitation link must not be a way into someone else's account.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glimpse_core::net::client_ip::client_ip;
use serde::Deserialize;
use serde_json::json;

use super::http::{parse, verify, who, INVALID_LOGIN};
use super::invitations::{self, Invitation};
use super::principal::Role;
use super::{cross_site, password, resolve, session, store};
use crate::error::ApiError;
use crate::{audit, AppState};

pub(crate) const ACCEPT_PATH: &str = "/api/auth/accept-invitation";

/// The one answer for every token that does not open a pending invitation.
const NO_INVITATION: &str = "no such invitation: it may have expired, been used or withdrawn";

#[derive(Deserialize)]
struct Accept {
    token: String,
    password: String,
}

/// The pending invitation with `token` to a site that still exists, and the role it gives;
/// 404 otherwise. Counts as an attempt of the client.
async fn pending(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    token: &str,
) -> Result<(Invitation, Role), ApiError> {
    let client = client_ip(peer.ip(), headers, &state.trusted_proxies);
    state
        .logins
        .check_address(client)
        .map_err(ApiError::TooManyRequests)?;
    find_pending(state, token).await
}

/// The pending invitation `token` is for, without counting an attempt.
async fn find_pending(state: &AppState, token: &str) -> Result<(Invitation, Role), ApiError> {
    let tracked = state.db.track();
    let found = tracked
        .run(invitations::find(&tracked.client, &state.database, token))
        .await?;
    let Some((invitation, role)) = found.and_then(|i| i.role().map(|r| (i, r))) else {
        tracing::info!("invitation refused: unknown, expired or used token");
        return Err(ApiError::NotFound(NO_INVITATION.into()));
    };
    let sites = crate::api::all_sites(state).await?;
    if sites.get(&invitation.site).is_none() {
        return Err(ApiError::NotFound(NO_INVITATION.into()));
    }
    Ok((invitation, role))
}

/// `GET /api/auth/invitation?token=` → `{email, site, role}`.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let token = query.get("token").map(|t| t.trim()).unwrap_or_default();
    let (invitation, role) = pending(&state, peer, &headers, token).await?;
    Ok(Json(json!({
        "email": invitation.email,
        "site": invitation.site,
        "role": role.plausible_name(),
    }))
    .into_response())
}

/// `POST /api/auth/accept-invitation` `{token, password}`: the sign-in's answer and cookie.
pub(crate) async fn accept(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let accept: Accept = parse(&body)?;
    let token = accept.token.trim();
    // Junk is refused (and counted) before waiting for the lock below.
    pending(&state, peer, &headers, token).await?;
    // One acceptance at a time in this process, checked again under the lock: a second one
    // racing this one (a double click, the link opened twice) finds the invitation used,
    // instead of creating the account twice with two passwords.
    let _one_at_a_time = state.accepting.lock().await;
    let (invitation, role) = find_pending(&state, token).await?;
    let email = invitation.email.clone();
    let tracked = state.db.track();
    let existing = tracked
        .run(store::find_user(&tracked.client, &state.database, &email))
        .await?;
    let new_hash = match &existing {
        Some(user) => {
            // The attempt was counted for the client address by `pending`.
            state
                .logins
                .check_account(&email)
                .map_err(ApiError::TooManyRequests)?;
            if !verify(accept.password, Some(user.password_hash.clone())).await {
                state.logins.failed(&email);
                return Err(ApiError::Unauthorized(INVALID_LOGIN));
            }
            None
        }
        None => {
            password::check_new(&accept.password)?;
            let new_password = accept.password;
            Some(
                tokio::task::spawn_blocking(move || password::hash(&new_password))
                    .await
                    .map_err(|e| {
                        ApiError::Unavailable(format!("password hashing stopped: {e}"))
                    })??,
            )
        }
    };
    // Used first, so that an acceptance racing this one on another query service is less
    // likely to get through.
    let client = state.db.background();
    invitations::mark_accepted(client, &state.database, &invitation).await?;
    match (&existing, new_hash) {
        (None, Some(hash)) => {
            store::add_invited_user(
                client,
                &state.database,
                &email,
                &hash,
                &invitation.site,
                role,
            )
            .await?
        }
        // The owner has every site already.
        (Some(user), _) if user.owner == 1 => {}
        _ => {
            store::write_member(
                client,
                &state.database,
                &invitation.site,
                &email,
                role.as_str(),
                false,
            )
            .await?
        }
    }
    audit::record(
        client,
        &state.database,
        &email,
        "invitation.accept",
        &invitation.site,
        role.plausible_name(),
    )
    .await;
    state.logins.succeeded(&email);
    let tracked = state.db.track();
    let token = tracked
        .run(session::create(&tracked.client, &state.database, &email))
        .await?;
    let principal = resolve::signed_in(&state, &token)
        .await?
        .ok_or(ApiError::Unauthorized(INVALID_LOGIN))?;
    let secure = cross_site::is_https(&state, peer.ip(), &headers);
    Ok((
        [(header::SET_COOKIE, session::set_cookie(&token, secure))],
        Json(who(&principal)),
    )
        .into_response())
}
