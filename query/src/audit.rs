//! The audit log: each administrative change — who, what, when, on which site — in its own
//! table (`audit_log`, migration 16), readable by the owner (every entry) and by a site's
//! admins (that site's), through `GET /api/v1/sites/audit` (`sites_api::audit_log`). Entries
//! name keys and links by their ids and names, never their secrets, and hold no visitor data.

use serde::{Deserialize, Serialize};

use crate::accounts::Principal;
use crate::AppState;

/// Most entries one answer holds.
pub(crate) const MAX_ENTRIES: u64 = 1000;

/// One change as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct AuditEntry {
    /// Unix seconds.
    pub time: u32,
    /// `owner@example.com`, `key:example.com:sites`, `cli:root (uid 0)`.
    pub actor: String,
    /// `site.create`, `goal.delete`, `link.create`, …
    pub action: String,
    /// The site changed; empty for changes of the instance (users).
    pub site: String,
    /// What changed, e.g. the goal's name.
    pub detail: String,
    pub request_id: String,
}

/// Who made a change, as the log names them.
pub fn actor(principal: &Principal) -> String {
    match principal {
        Principal::Owner { email } | Principal::User { email, .. } => email.clone(),
        Principal::Key { site, scope } => format!("key:{site}:{}", scope.as_str()),
        Principal::ShareLink { site } => format!("share:{site}"),
    }
}

/// The actor of a command run on the server: `cli:`, the user's name and the process's user
/// id, which the kernel says (a name from the environment alone could be anything, or unset
/// under cron and systemd).
pub fn cli_actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok();
    match (name, uid) {
        (Some(name), Some(uid)) => format!("cli:{name} (uid {uid})"),
        (None, Some(uid)) => format!("cli:uid {uid}"),
        (Some(name), None) => format!("cli:{name}"),
        (None, None) => "cli:unknown".into(),
    }
}

/// Records a change. A failure is logged and does not undo the change (which has happened).
pub async fn record(
    client: &clickhouse::Client,
    db: &str,
    actor: &str,
    action: &str,
    site: &str,
    detail: &str,
) {
    let result = client
        .query(&format!(
            "INSERT INTO {db}.audit_log (time, actor, action, site, detail, request_id) \
             VALUES (now(), ?, ?, ?, ?, ?)"
        ))
        .bind(actor)
        .bind(action)
        .bind(site)
        .bind(detail)
        .bind(crate::request_id::request_id())
        .execute()
        .await;
    if let Err(error) = result {
        tracing::error!(%error, actor, action, site, "the audit log could not record a change");
    }
    tracing::info!(actor, action, site, detail, "administrative change");
}

/// Records a change made with a command on the server ([`cli_actor`]).
pub async fn record_cli(
    client: &clickhouse::Client,
    db: &str,
    action: &str,
    site: &str,
    detail: &str,
) {
    record(client, db, &cli_actor(), action, site, detail).await;
}

/// Records a change made over HTTP by `principal`.
pub(crate) async fn record_by(
    state: &AppState,
    principal: &Principal,
    action: &str,
    site: &str,
    detail: &str,
) {
    record(
        state.db.background(),
        &state.database,
        &actor(principal),
        action,
        site,
        detail,
    )
    .await;
}

/// The newest entries first, of one site or (`None`) of all.
pub async fn entries(
    client: &clickhouse::Client,
    db: &str,
    site: Option<&str>,
    limit: u64,
) -> Result<Vec<AuditEntry>, clickhouse::error::Error> {
    let filter = if site.is_some() { "WHERE site = ?" } else { "" };
    let mut query = client.query(&format!(
        "SELECT toUInt32(time), actor, action, site, detail, request_id \
         FROM {db}.audit_log {filter} ORDER BY time DESC LIMIT {}",
        limit.min(MAX_ENTRIES)
    ));
    if let Some(site) = site {
        query = query.bind(site);
    }
    query.fetch_all().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::KeyScope;

    #[test]
    fn actors_name_people_by_email_and_keys_by_their_reach_never_their_secret() {
        assert_eq!(
            actor(&Principal::Owner {
                email: "o@example.com".into()
            }),
            "o@example.com"
        );
        assert_eq!(
            actor(&Principal::Key {
                site: "*".into(),
                scope: KeyScope::Sites
            }),
            "key:*:sites"
        );
        let actor = cli_actor();
        assert!(actor.starts_with("cli:"), "{actor}");
        assert!(actor.contains("uid "), "the kernel's user id: {actor}");
    }
}
