//! Sign-in sessions: a random token in the `glimpse_session` cookie, stored in ClickHouse only
//! as its BLAKE3 hash (table `sessions`, migration 15).
//!
//! A session is looked up on every request, with no cache, so that signing out, a password
//! change or the user's removal ends it at once on every query service process. It is valid
//! while its newest row is not revoked, it has not expired ([`SESSION_LIFETIME`] after sign-in)
//! and its user exists.

use std::time::Duration;

use axum::http::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::{unix_now, AccountError};

/// The cookie that carries the session token.
pub const COOKIE_NAME: &str = "glimpse_session";

/// How long a session lasts after sign-in (there is no sliding renewal: after two weeks the
/// user signs in again).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);

/// A new token: 32 random bytes from the OS, as 64 hex digits.
pub fn new_token() -> Result<String, AccountError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AccountError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Starts a session for `email`; returns its token, which is not stored.
pub async fn create(
    client: &clickhouse::Client,
    db: &str,
    email: &str,
) -> Result<String, AccountError> {
    let token = new_token()?;
    let now = unix_now();
    let expires = now.saturating_add(SESSION_LIFETIME.as_secs() as u32);
    client
        .query(&format!(
            "INSERT INTO {db}.sessions (token_hash, email, created_at, expires_at, revoked, version) \
             VALUES (?, ?, toDateTime(?), toDateTime(?), 0, ?)"
        ))
        .bind(hash_token(&token))
        .bind(email)
        .bind(now)
        .bind(expires)
        .bind(glimpse_core::clock::version_now())
        .execute()
        .await?;
    Ok(token)
}

/// The e-mail of the session with this token while it is valid (not revoked, not expired);
/// whether its user still exists is the caller's question.
pub async fn email_of(
    client: &clickhouse::Client,
    db: &str,
    token: &str,
) -> Result<Option<String>, clickhouse::error::Error> {
    if !looks_like_token(token) {
        return Ok(None);
    }
    #[derive(clickhouse::Row, Deserialize)]
    struct Row {
        email: String,
        expires_at: u32,
        revoked: u8,
    }
    let row: Option<Row> = client
        .query(&format!(
            "SELECT argMax(email, version), toUInt32(argMax(expires_at, version)), \
             argMax(revoked, version) FROM {db}.sessions WHERE token_hash = ? GROUP BY token_hash"
        ))
        .bind(hash_token(token))
        .fetch_optional()
        .await?;
    Ok(row
        .filter(|r| r.revoked == 0 && r.expires_at > unix_now())
        .map(|r| r.email))
}

/// Appends a revoked row for each session hash.
async fn revoke_hashes(
    client: &clickhouse::Client,
    db: &str,
    sessions: &[(String, String, u32, u32)],
) -> Result<(), clickhouse::error::Error> {
    for (token_hash, email, created, expires) in sessions {
        client
            .query(&format!(
                "INSERT INTO {db}.sessions (token_hash, email, created_at, expires_at, revoked, \
                 version) VALUES (?, ?, toDateTime(?), toDateTime(?), 1, ?)"
            ))
            .bind(token_hash)
            .bind(email)
            .bind(created)
            .bind(expires)
            .bind(glimpse_core::clock::version_now())
            .execute()
            .await?;
    }
    Ok(())
}

/// The live (unrevoked) sessions matching `condition` (`token_hash = ?` or `email = ?`).
async fn live(
    client: &clickhouse::Client,
    db: &str,
    condition: &str,
    value: &str,
) -> Result<Vec<(String, String, u32, u32)>, clickhouse::error::Error> {
    client
        .query(&format!(
            "SELECT token_hash, argMax(email, version), toUInt32(argMax(created_at, version)), \
             toUInt32(argMax(expires_at, version)) FROM {db}.sessions WHERE {condition} \
             GROUP BY token_hash HAVING argMax(revoked, version) = 0"
        ))
        .bind(value)
        .fetch_all()
        .await
}

/// Ends the session with this token (signing out).
pub async fn revoke(
    client: &clickhouse::Client,
    db: &str,
    token: &str,
) -> Result<(), clickhouse::error::Error> {
    let sessions = live(client, db, "token_hash = ?", &hash_token(token)).await?;
    revoke_hashes(client, db, &sessions).await
}

/// Ends every session of `email` but the one whose token hash is `keep`.
pub async fn revoke_all(
    client: &clickhouse::Client,
    db: &str,
    email: &str,
    keep: Option<&str>,
) -> Result<(), clickhouse::error::Error> {
    let mut sessions = live(client, db, "email = ?", email).await?;
    sessions.retain(|(hash, ..)| Some(hash.as_str()) != keep);
    revoke_hashes(client, db, &sessions).await
}

/// Only what [`new_token`] makes is looked up: anything else is no session, without a query.
fn looks_like_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The session token of the request's `Cookie` header(s), if there is one.
pub fn token_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
}

/// Whether the request carries the session cookie at all (valid or not).
pub fn has_cookie(headers: &HeaderMap) -> bool {
    token_of(headers).is_some()
}

/// `Set-Cookie` for a new session. `Secure` when the browser reached us over HTTPS.
pub fn set_cookie(token: &str, secure: bool) -> HeaderValue {
    cookie(token, SESSION_LIFETIME.as_secs(), secure)
}

/// `Set-Cookie` that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    cookie("", 0, secure)
}

fn cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    // The value is hex digits or empty: always a valid header value.
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("glimpse_session=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_64_random_hex_digits_stored_as_its_hash() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        let hash = hash_token(&a);
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, a);
        assert_eq!(hash, hash_token(&a));
        for junk in ["", "xyz", &a[..63], &format!("{a}0"), "' OR 1=1 --"] {
            assert!(!looks_like_token(junk), "{junk:?}");
        }
    }

    fn cookie_headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn the_token_is_read_from_any_cookie_header() {
        assert_eq!(token_of(&cookie_headers(&[])), None);
        assert_eq!(
            token_of(&cookie_headers(&["a=1; glimpse_session=abc; b=2"])),
            Some("abc")
        );
        assert_eq!(
            token_of(&cookie_headers(&["a=1", "glimpse_session=def"])),
            Some("def")
        );
        assert_eq!(
            token_of(&cookie_headers(&["not_glimpse_session=abc"])),
            None
        );
        assert!(has_cookie(&cookie_headers(&["glimpse_session="])));
    }

    #[test]
    fn the_cookie_is_http_only_lax_and_secure_over_https() {
        let plain = set_cookie("abc", false);
        let plain = plain.to_str().unwrap();
        assert_eq!(
            plain,
            "glimpse_session=abc; HttpOnly; SameSite=Lax; Path=/; Max-Age=1209600"
        );
        let secure = set_cookie("abc", true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
        assert!(clear_cookie(false)
            .to_str()
            .unwrap()
            .starts_with("glimpse_session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"));
    }
}
