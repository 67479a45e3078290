//! The sign-in endpoints: `POST /api/auth/login`, `POST /api/auth/logout`,
//! `POST /api/auth/logout-everywhere`, `GET /api/auth/me`, `POST /api/auth/password`.
//! Cross-site protection is the `cross_site` middleware's; rate limits are `login_limit`'s.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glimpse_core::net::client_ip::client_ip;
use serde::Deserialize;
use serde_json::{json, Value};

use super::principal::Principal;
use super::{cross_site, normalize_email, password, resolve, session, store};
use crate::error::ApiError;
use crate::AppState;

pub(crate) const LOGIN_PATH: &str = "/api/auth/login";

/// The same answer for an unknown e-mail and a wrong password.
pub(super) const INVALID_LOGIN: &str = "invalid email or password";

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    // The error names the field, never echoes the body (it holds a password).
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            "body",
            format!("expected a JSON object ({})", e.classify_name()),
        )
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Data => "a field is missing or of the wrong type",
            serde_json::error::Category::Eof => "the body ends too early",
            _ => "the body is not JSON",
        }
    }
}

/// `{"email", "owner", "sites": [{"domain", "role"}]}` for a signed-in person.
pub(super) fn who(principal: &Principal) -> Value {
    let sites: Vec<Value> = match principal {
        Principal::User { roles, .. } => roles
            .iter()
            .map(|(domain, role)| json!({ "domain": domain, "role": role.as_str() }))
            .collect(),
        _ => Vec::new(),
    };
    json!({ "email": principal.email(), "owner": principal.is_owner(), "sites": sites })
}

/// Runs the argon2 verification off the async threads (it takes tens of milliseconds, as
/// hashing a new password does).
pub(super) async fn verify(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match stored {
        Some(stored) => password::verify(&password, &stored),
        None => password::verify_dummy(&password),
    })
    .await
    .unwrap_or(false)
}

pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let login: Login = parse(&body)?;
    // An e-mail that is not one is tried (and fails) like any unknown one.
    // Capped, so that junk e-mails cannot grow the failure counts' memory much.
    let email = normalize_email(&login.email).unwrap_or_else(|_| {
        login
            .email
            .trim()
            .to_lowercase()
            .chars()
            .take(254)
            .collect()
    });
    let client = client_ip(peer.ip(), &headers, &state.trusted_proxies);
    state
        .logins
        .check(client, &email)
        .map_err(ApiError::TooManyRequests)?;
    let tracked = state.db.track();
    let user = tracked
        .run(store::find_user(&tracked.client, &state.database, &email))
        .await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    if !verify(login.password, stored).await {
        state.logins.failed(&email);
        tracing::info!("sign-in refused: invalid email or password");
        return Err(ApiError::Unauthorized(INVALID_LOGIN));
    }
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

/// The signed-in principal and the session token; 401 otherwise.
async fn current(state: &AppState, headers: &HeaderMap) -> Result<(Principal, String), ApiError> {
    let token = session::token_of(headers).ok_or(ApiError::Unauthorized("not signed in"))?;
    let principal = resolve::signed_in(state, token)
        .await?
        .ok_or(ApiError::Unauthorized(
            "your session has ended: sign in again",
        ))?;
    Ok((principal, token.to_string()))
}

pub(crate) async fn me(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match current(&state, &headers).await {
        Ok((principal, _)) => Ok(Json(who(&principal)).into_response()),
        Err(ApiError::Unauthorized(message)) => {
            // The dashboard's start page says how to create the first user when there is none.
            let tracked = state.db.track();
            let any = tracked
                .run(store::any_user(&tracked.client, &state.database))
                .await?;
            let body = json!({ "error": message, "users_exist": any });
            Ok((StatusCode::UNAUTHORIZED, Json(body)).into_response())
        }
        Err(other) => Err(other),
    }
}

fn signed_out(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Response {
    let secure = cross_site::is_https(state, peer.ip(), headers);
    (
        [(header::SET_COOKIE, session::clear_cookie(secure))],
        Json(json!({ "signed_out": true })),
    )
        .into_response()
}

pub(crate) async fn logout(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = session::token_of(&headers) {
        let tracked = state.db.track();
        tracked
            .run(session::revoke(&tracked.client, &state.database, token))
            .await?;
    }
    Ok(signed_out(&state, peer, &headers))
}

pub(crate) async fn logout_everywhere(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (principal, _) = current(&state, &headers).await?;
    let email = principal.email().unwrap_or_default().to_string();
    let tracked = state.db.track();
    tracked
        .run(session::revoke_all(
            &tracked.client,
            &state.database,
            &email,
            None,
        ))
        .await?;
    Ok(signed_out(&state, peer, &headers))
}

pub(crate) async fn change_password(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (principal, token) = current(&state, &headers).await?;
    let change: PasswordChange = parse(&body)?;
    let email = principal.email().unwrap_or_default().to_string();
    // Guessing the current password here is guessing a password: same limits as sign-in.
    let client = client_ip(peer.ip(), &headers, &state.trusted_proxies);
    state
        .logins
        .check(client, &email)
        .map_err(ApiError::TooManyRequests)?;
    password::check_new(&change.new_password)?;
    let tracked = state.db.track();
    let user = tracked
        .run(store::find_user(&tracked.client, &state.database, &email))
        .await?
        .ok_or(ApiError::Unauthorized(
            "your session has ended: sign in again",
        ))?;
    if !verify(change.current_password, Some(user.password_hash.clone())).await {
        state.logins.failed(&email);
        return Err(ApiError::Denied("the current password is wrong".into()));
    }
    let new_password = change.new_password;
    let hash = tokio::task::spawn_blocking(move || password::hash(&new_password))
        .await
        .map_err(|e| ApiError::Unavailable(format!("password hashing stopped: {e}")))??;
    let keep = session::hash_token(&token);
    let tracked = state.db.track();
    tracked
        .run(store::set_password_hash(
            &tracked.client,
            &state.database,
            &user,
            &hash,
            Some(&keep),
        ))
        .await?;
    Ok(Json(json!({ "changed": true })).into_response())
}
