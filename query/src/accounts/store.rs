//! Users and their roles in ClickHouse (tables `users` and `site_members`, migration 15):
//! what `glimpse user add|list|remove|reset-password` do, and what a session's principal is
//! read from. A removal or a password reset also ends the user's sessions.

use std::collections::BTreeMap;

use glimpse_core::config::Config;
use serde::Deserialize;

use super::principal::{Principal, Role};
use super::{normalize_email, password, session, AccountError};

/// The role `glimpse user add` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewRole {
    /// The instance owner: every site.
    Owner,
    /// A role on the sites named.
    Site(Role),
}

/// A user as listed (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub email: String,
    pub owner: bool,
    pub roles: BTreeMap<String, Role>,
}

/// A user's current row.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub(crate) struct StoredUser {
    pub email: String,
    pub password_hash: String,
    pub owner: u8,
}

/// The user with this (normalised) e-mail, unless there is none or it was removed.
pub(crate) async fn find_user(
    client: &clickhouse::Client,
    db: &str,
    email: &str,
) -> Result<Option<StoredUser>, clickhouse::error::Error> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Row {
        email: String,
        password_hash: String,
        owner: u8,
        deleted: u8,
    }
    let row: Option<Row> = client
        .query(&format!(
            "SELECT email, argMax(password_hash, version), argMax(owner, version), \
             argMax(deleted, version) FROM {db}.users WHERE email = ? GROUP BY email"
        ))
        .bind(email)
        .fetch_optional()
        .await?;
    Ok(row.filter(|r| r.deleted == 0).map(|r| StoredUser {
        email: r.email,
        password_hash: r.password_hash,
        owner: r.owner,
    }))
}

/// The current roles of `email`, by site.
async fn roles(
    client: &clickhouse::Client,
    db: &str,
    email: &str,
) -> Result<BTreeMap<String, Role>, clickhouse::error::Error> {
    let rows: Vec<(String, String, u8)> = client
        .query(&format!(
            "SELECT site, argMax(role, version), argMax(deleted, version) \
             FROM {db}.site_members WHERE email = ? GROUP BY site"
        ))
        .bind(email)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, _, deleted)| *deleted == 0)
        .filter_map(|(site, role, _)| Some((site, role.parse().ok()?)))
        .collect())
}

/// What a user may do, as read now; `None` when the user does not exist (any more).
pub(crate) async fn user_principal(
    client: &clickhouse::Client,
    db: &str,
    email: &str,
) -> Result<Option<Principal>, clickhouse::error::Error> {
    let Some(user) = find_user(client, db, email).await? else {
        return Ok(None);
    };
    Ok(Some(if user.owner == 1 {
        Principal::Owner { email: user.email }
    } else {
        Principal::User {
            roles: roles(client, db, &user.email).await?,
            email: user.email,
        }
    }))
}

/// Whether any user exists (the dashboard explains how to create the first one otherwise).
pub(crate) async fn any_user(
    client: &clickhouse::Client,
    db: &str,
) -> Result<bool, clickhouse::error::Error> {
    let users: u64 = client
        .query(&format!(
            "SELECT count() FROM (SELECT email FROM {db}.users GROUP BY email \
             HAVING argMax(deleted, version) = 0)"
        ))
        .fetch_one()
        .await?;
    Ok(users > 0)
}

async fn write_user(
    client: &clickhouse::Client,
    db: &str,
    email: &str,
    password_hash: &str,
    owner: bool,
    deleted: bool,
) -> Result<(), clickhouse::error::Error> {
    client
        .query(&format!(
            "INSERT INTO {db}.users (email, password_hash, owner, deleted, version, changed_at) \
             VALUES (?, ?, ?, ?, ?, now())"
        ))
        .bind(email)
        .bind(password_hash)
        .bind(u8::from(owner))
        .bind(u8::from(deleted))
        .bind(glimpse_core::clock::version_now())
        .execute()
        .await
}

pub(crate) async fn write_member(
    client: &clickhouse::Client,
    db: &str,
    site: &str,
    email: &str,
    role: &str,
    deleted: bool,
) -> Result<(), clickhouse::error::Error> {
    client
        .query(&format!(
            "INSERT INTO {db}.site_members (site, email, role, deleted, version, changed_at) \
             VALUES (?, ?, ?, ?, ?, now())"
        ))
        .bind(site)
        .bind(email)
        .bind(role)
        .bind(u8::from(deleted))
        .bind(glimpse_core::clock::version_now())
        .execute()
        .await
}

/// The current members of `site` and their roles, by e-mail.
pub(crate) async fn site_members(
    client: &clickhouse::Client,
    db: &str,
    site: &str,
) -> Result<Vec<(String, Role)>, clickhouse::error::Error> {
    let rows: Vec<(String, String, u8)> = client
        .query(&format!(
            "SELECT email, argMax(role, version), argMax(deleted, version) \
             FROM {db}.site_members WHERE site = ? GROUP BY email ORDER BY email"
        ))
        .bind(site)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, _, deleted)| *deleted == 0)
        .filter_map(|(email, role, _)| Some((email, role.parse().ok()?)))
        .collect())
}

/// Creates the user of an accepted invitation: `role` on `site`, and the password whose hash
/// ([`password::hash`], made by the caller off the async threads) is given.
pub(crate) async fn add_invited_user(
    client: &clickhouse::Client,
    db: &str,
    email: &str,
    password_hash: &str,
    site: &str,
    role: Role,
) -> Result<(), clickhouse::error::Error> {
    write_member(client, db, site, email, role.as_str(), false).await?;
    // The user row last, as in `add_user`.
    write_user(client, db, email, password_hash, false, false).await
}

/// Adds a user: the owner, or `role` on each of `sites` (which must exist). An e-mail that
/// already has a user is refused.
pub async fn add_user(
    client: &clickhouse::Client,
    db: &str,
    config: &Config,
    email: &str,
    password: &str,
    role: NewRole,
    sites: &[String],
) -> Result<(), AccountError> {
    let email = normalize_email(email)?;
    password::check_new(password)?;
    match role {
        NewRole::Owner if !sites.is_empty() => {
            return Err(AccountError::Invalid(
                "the owner has every site: leave out --site".into(),
            ))
        }
        NewRole::Site(_) if sites.is_empty() => {
            return Err(AccountError::Invalid(
                "an admin or viewer needs at least one --site".into(),
            ))
        }
        _ => {}
    }
    let known = crate::auth::sites(client, db, config).await?;
    // Roles are kept by the sites' ids (a renamed site's first domain).
    let sites = sites
        .iter()
        .map(|s| match known.get(s) {
            Some(site) => Ok(site.domain.clone()),
            None => Err(AccountError::UnknownSite(s.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if find_user(client, db, &email).await?.is_some() {
        return Err(AccountError::Invalid(format!(
            "{email} already has a user (see `glimpse user list`)"
        )));
    }
    let hash = password::hash(password)?;
    if let NewRole::Site(role) = role {
        for site in &sites {
            write_member(client, db, site, &email, role.as_str(), false).await?;
        }
    }
    // The user row last: until it is written, the roles belong to nobody who can sign in.
    write_user(client, db, &email, &hash, role == NewRole::Owner, false).await?;
    Ok(())
}

/// Every user, by e-mail, with their roles.
pub async fn list_users(
    client: &clickhouse::Client,
    db: &str,
) -> Result<Vec<UserInfo>, AccountError> {
    let users: Vec<(String, u8)> = client
        .query(&format!(
            "SELECT email, argMax(owner, version) FROM {db}.users GROUP BY email \
             HAVING argMax(deleted, version) = 0 ORDER BY email"
        ))
        .fetch_all()
        .await?;
    let mut listed = Vec::with_capacity(users.len());
    for (email, owner) in users {
        listed.push(UserInfo {
            roles: roles(client, db, &email).await?,
            owner: owner == 1,
            email,
        });
    }
    Ok(listed)
}

/// Removes a user and their roles, and ends their sessions. `Err(NoSuchUser)` when there is
/// no such user.
pub async fn remove_user(
    client: &clickhouse::Client,
    db: &str,
    email: &str,
) -> Result<(), AccountError> {
    let email = normalize_email(email)?;
    let user = find_user(client, db, &email)
        .await?
        .ok_or_else(|| AccountError::NoSuchUser(email.clone()))?;
    // The hash stays out of the tombstone: nothing of the password outlives the user.
    write_user(client, db, &email, "", user.owner == 1, true).await?;
    for (site, role) in roles(client, db, &email).await? {
        write_member(client, db, &site, &email, role.as_str(), true).await?;
    }
    session::revoke_all(client, db, &email, None).await?;
    Ok(())
}

/// Stores a user's new password hash ([`password::hash`]) and ends every session of theirs
/// except `keep` (a token hash).
pub(crate) async fn set_password_hash(
    client: &clickhouse::Client,
    db: &str,
    user: &StoredUser,
    hash: &str,
    keep: Option<&str>,
) -> Result<(), AccountError> {
    write_user(client, db, &user.email, hash, user.owner == 1, false).await?;
    session::revoke_all(client, db, &user.email, keep).await?;
    Ok(())
}

/// `glimpse user reset-password`: a new password, and every session of the user ended.
pub async fn reset_password(
    client: &clickhouse::Client,
    db: &str,
    email: &str,
    new_password: &str,
) -> Result<(), AccountError> {
    let email = normalize_email(email)?;
    password::check_new(new_password)?;
    let user = find_user(client, db, &email)
        .await?
        .ok_or(AccountError::NoSuchUser(email))?;
    let hash = password::hash(new_password)?;
    set_password_hash(client, db, &user, &hash, None).await
}
