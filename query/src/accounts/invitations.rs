//! Invitations to a site for an e-mail that has no user yet (table `invitations`, migration
//! 17): a random token, shown once to whoever invited (and mailed when mail is configured),
//! stored only as its BLAKE3 hash, that lets its holder choose a password and become a member
//! of the site with the role given. At most one pending invitation per site and e-mail: a new
//! one ends the old. An invitation is pending until accepted, withdrawn or
//! [`INVITATION_LIFETIME`] after it was made.

use std::time::Duration;

use serde::Deserialize;

use super::principal::Role;
use super::session::{hash_token, new_token};
use super::{unix_now, AccountError};

/// How long an invitation may be accepted.
pub const INVITATION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// An invitation as stored (its newest row).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub(crate) struct Invitation {
    pub token_hash: String,
    pub site: String,
    pub email: String,
    pub role: String,
    /// Unix seconds.
    pub expires_at: u32,
    pub accepted: u8,
    pub deleted: u8,
}

impl Invitation {
    /// Neither accepted, withdrawn nor expired at `now` (Unix seconds).
    pub fn pending_at(&self, now: u32) -> bool {
        self.accepted == 0 && self.deleted == 0 && self.expires_at > now
    }

    /// The role it gives; `None` for a row this build cannot read.
    pub fn role(&self) -> Option<Role> {
        self.role.parse().ok()
    }
}

/// The newest row of each invitation matching `filter` (a `WHERE` on immutable columns).
fn select(db: &str, filter: &str) -> String {
    format!(
        "SELECT token_hash, argMax(site, version), argMax(email, version), argMax(role, version), \
         toUInt32(argMax(expires_at, version)), argMax(accepted, version), \
         argMax(deleted, version) FROM {db}.invitations WHERE {filter} GROUP BY token_hash"
    )
}

async fn write(
    client: &clickhouse::Client,
    db: &str,
    invitation: &Invitation,
) -> Result<(), clickhouse::error::Error> {
    client
        .query(&format!(
            "INSERT INTO {db}.invitations (token_hash, site, email, role, expires_at, accepted, \
             deleted, version, changed_at) VALUES (?, ?, ?, ?, toDateTime(?), ?, ?, ?, now())"
        ))
        .bind(&invitation.token_hash)
        .bind(&invitation.site)
        .bind(&invitation.email)
        .bind(&invitation.role)
        .bind(invitation.expires_at)
        .bind(invitation.accepted)
        .bind(invitation.deleted)
        .bind(glimpse_core::clock::version_now())
        .execute()
        .await
}

/// The site's pending invitations, by e-mail.
pub(crate) async fn pending(
    client: &clickhouse::Client,
    db: &str,
    site: &str,
) -> Result<Vec<Invitation>, clickhouse::error::Error> {
    let mut rows: Vec<Invitation> = client
        .query(&select(db, "site = ?"))
        .bind(site)
        .fetch_all()
        .await?;
    let now = unix_now();
    rows.retain(|i| i.pending_at(now));
    rows.sort_by(|a, b| a.email.cmp(&b.email));
    Ok(rows)
}

/// Invites `email` (normalised) to `site` with `role`, ending any pending invitation of theirs
/// to it; returns the new token, which is not stored.
pub(crate) async fn invite(
    client: &clickhouse::Client,
    db: &str,
    site: &str,
    email: &str,
    role: Role,
) -> Result<String, AccountError> {
    withdraw(client, db, site, email).await?;
    let token = new_token()?;
    let invitation = Invitation {
        token_hash: hash_token(&token),
        site: site.to_string(),
        email: email.to_string(),
        role: role.as_str().to_string(),
        expires_at: unix_now().saturating_add(INVITATION_LIFETIME.as_secs() as u32),
        accepted: 0,
        deleted: 0,
    };
    write(client, db, &invitation).await?;
    Ok(token)
}

/// Withdraws the pending invitation(s) of `email` to `site`; returns whether there was one.
pub(crate) async fn withdraw(
    client: &clickhouse::Client,
    db: &str,
    site: &str,
    email: &str,
) -> Result<bool, clickhouse::error::Error> {
    let mine: Vec<Invitation> = pending(client, db, site)
        .await?
        .into_iter()
        .filter(|i| i.email == email)
        .collect();
    for invitation in &mine {
        let withdrawn = Invitation {
            deleted: 1,
            ..invitation.clone()
        };
        write(client, db, &withdrawn).await?;
    }
    Ok(!mine.is_empty())
}

/// The pending invitation with this token; `None` for an unknown, expired, withdrawn or used
/// one (and for text that cannot be a token, without asking ClickHouse).
pub(crate) async fn find(
    client: &clickhouse::Client,
    db: &str,
    token: &str,
) -> Result<Option<Invitation>, clickhouse::error::Error> {
    if !looks_like_token(token) {
        return Ok(None);
    }
    let found: Option<Invitation> = client
        .query(&select(db, "token_hash = ?"))
        .bind(hash_token(token))
        .fetch_optional()
        .await?;
    Ok(found.filter(|i| i.pending_at(unix_now())))
}

/// Marks an invitation used: its token stops working.
pub(crate) async fn mark_accepted(
    client: &clickhouse::Client,
    db: &str,
    invitation: &Invitation,
) -> Result<(), clickhouse::error::Error> {
    let accepted = Invitation {
        accepted: 1,
        ..invitation.clone()
    };
    write(client, db, &accepted).await
}

/// 64 lower-case hex digits, as [`new_token`] makes.
fn looks_like_token(token: &str) -> bool {
    token.len() == 64
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invitation(expires_at: u32, accepted: u8, deleted: u8) -> Invitation {
        Invitation {
            token_hash: "h".into(),
            site: "a.example".into(),
            email: "g@example.com".into(),
            role: "viewer".into(),
            expires_at,
            accepted,
            deleted,
        }
    }

    #[test]
    fn only_unexpired_unused_invitations_are_pending() {
        assert!(invitation(200, 0, 0).pending_at(100));
        assert!(!invitation(100, 0, 0).pending_at(100), "expired");
        assert!(!invitation(200, 1, 0).pending_at(100), "used");
        assert!(!invitation(200, 0, 1).pending_at(100), "withdrawn");
        assert_eq!(invitation(200, 0, 0).role(), Some(Role::Viewer));
    }

    /// A client whose every query fails: nothing listens on port 1.
    fn unreachable() -> clickhouse::Client {
        clickhouse::Client::default().with_url("http://127.0.0.1:1")
    }

    #[tokio::test]
    async fn text_that_cannot_be_a_token_is_refused_without_asking_clickhouse() {
        let upper = "A".repeat(64);
        for junk in ["", "abc", "' OR 1=1 --", upper.as_str()] {
            assert_eq!(find(&unreachable(), "glimpse", junk).await.unwrap(), None);
        }
        let token = new_token().unwrap();
        assert!(looks_like_token(&token));
        assert!(find(&unreachable(), "glimpse", &token).await.is_err());
    }
}
