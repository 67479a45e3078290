//! Limits on refused credentials. Requests with an API key or a session cookie skip the
//! per-client rate limit (dashboards and integrations make many), so each one the service
//! refuses (401) costs its client one of [`REFUSED_PER_MINUTE`] tokens; a client out of tokens
//! has its requests with credentials refused (429) before they are looked up, until its bucket
//! refills. Guessing a key (256 random bits) was hopeless already: this stops junk keys and
//! cookies from costing the database a lookup each, at any rate.
//!
//! A neighbour behind the same address (NAT) who sends junk must not lock out the people
//! there who hold good credentials: credentials accepted within [`REMEMBERED_FOR`] pass even
//! while their address is blocked. They are remembered as keyed hashes (a random key per
//! process), never as themselves.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use glimpse_core::ip_prefix::hashing_network;
use glimpse_core::net::rate_limit::RateLimiter;

use super::session;

/// Refused API keys or session cookies one client address may send a minute (and at once).
pub const REFUSED_PER_MINUTE: u32 = 30;
/// How long accepted credentials pass a blocked address without being refused unread.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(15 * 60);
/// Entries (blocked addresses, remembered credentials) past which expired ones are dropped.
const PRUNE_ABOVE: usize = 10_000;
/// Remembered credentials never exceed this: beyond it, new ones are not remembered (they
/// still work, only not while their address is blocked).
const MAX_REMEMBERED: usize = 50_000;

pub struct RefusedCredentials {
    refused: RateLimiter,
    /// Client networks out of tokens, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Keyed hashes of credentials accepted lately, until when they are remembered.
    accepted: Mutex<HashMap<u64, Instant>>,
    hasher: RandomState,
}

/// What a request presents: its `Authorization` header or its session cookie.
fn credential(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .or_else(|| session::token_of(headers).map(str::as_bytes))
}

/// Whether the request presents an API key or a session cookie (valid or not).
pub fn presents_credentials(headers: &HeaderMap) -> bool {
    credential(headers).is_some()
}

impl RefusedCredentials {
    pub fn new() -> Self {
        Self {
            refused: RateLimiter::per_minute(REFUSED_PER_MINUTE, REFUSED_PER_MINUTE),
            blocked: Mutex::new(HashMap::new()),
            accepted: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }

    fn hash(&self, headers: &HeaderMap) -> Option<u64> {
        credential(headers).map(|c| self.hasher.hash_one(c))
    }

    /// `Some(wait)` when `client` sent too many refused credentials lately and these were not
    /// accepted lately: the request is refused unread.
    pub fn blocked(&self, client: IpAddr, headers: &HeaderMap) -> Option<Duration> {
        let wait = {
            let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            blocked
                .get(&hashing_network(client))?
                .checked_duration_since(Instant::now())?
        };
        let known = self.hash(headers).is_some_and(|hash| {
            let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
            accepted
                .get(&hash)
                .is_some_and(|until| *until > Instant::now())
        });
        (!known).then_some(wait)
    }

    /// The request's credentials were accepted.
    pub fn accepted(&self, headers: &HeaderMap) {
        let Some(hash) = self.hash(headers) else {
            return;
        };
        let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        if accepted.len() > PRUNE_ABOVE {
            accepted.retain(|_, until| *until > Instant::now());
        }
        if accepted.len() < MAX_REMEMBERED || accepted.contains_key(&hash) {
            accepted.insert(hash, Instant::now() + REMEMBERED_FOR);
        }
    }

    /// `client`'s credentials were refused: one token; when none is left, the client is
    /// blocked until its bucket has one again.
    pub fn refused(&self, client: IpAddr, headers: &HeaderMap) {
        if let Some(hash) = self.hash(headers) {
            // Revoked or expired: no longer a reason to let them through.
            self.accepted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&hash);
        }
        if let Err(wait) = self.refused.check(client) {
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            if blocked.len() > PRUNE_ABOVE {
                blocked.retain(|_, until| *until > Instant::now());
            }
            blocked.insert(hashing_network(client), Instant::now() + wait);
        }
    }

    /// Drops expired state (called every minute, so memory follows the active clients).
    pub fn forget_idle(&self) {
        self.refused.forget_idle();
        drop_expired(&self.blocked);
        drop_expired(&self.accepted);
    }
}

fn drop_expired<K>(entries: &Mutex<HashMap<K, Instant>>) {
    let now = Instant::now();
    entries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|_, until| *until > now);
}

impl Default for RefusedCredentials {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn an_address_is_blocked_once_its_refusals_are_spent_and_only_that_address() {
        let limits = RefusedCredentials::new();
        let junk = bearer("junk");
        for _ in 0..REFUSED_PER_MINUTE {
            assert_eq!(limits.blocked(HOME, &junk), None);
            limits.refused(HOME, &junk);
        }
        assert_eq!(limits.blocked(HOME, &junk), None, "the last token spent");
        limits.refused(HOME, &junk);
        let wait = limits.blocked(HOME, &junk).expect("blocked");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(limits.blocked(ELSEWHERE, &junk), None, "another address");
        limits.forget_idle();
        assert!(limits.blocked(HOME, &junk).is_some(), "still blocked");
    }

    #[test]
    fn credentials_accepted_lately_pass_a_blocked_address_until_refused() {
        let limits = RefusedCredentials::new();
        let (good, other) = (bearer("good"), bearer("other"));
        limits.accepted(&good);
        for _ in 0..=REFUSED_PER_MINUTE {
            limits.refused(HOME, &bearer("junk"));
        }
        assert_eq!(limits.blocked(HOME, &good), None, "a neighbour's good key");
        assert!(
            limits.blocked(HOME, &other).is_some(),
            "a key never accepted"
        );
        assert!(limits.blocked(HOME, &HeaderMap::new()).is_some());
        limits.refused(HOME, &good);
        assert!(limits.blocked(HOME, &good).is_some(), "revoked since");
    }
}
