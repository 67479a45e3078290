//! API keys and sites: who may read which site's stats.
//!
//! A key is 32 random bytes from the OS (`glimpse_` + 64 hex digits), shown once when created;
//! ClickHouse stores only its BLAKE3 hash, a short `key_id` (the hash's first 12 hex digits)
//! to list and revoke it by, the site (`*` for an operator key that reads every site) and a
//! name. Revoking appends a row with `revoked = 1`. Sites come from the configuration and from
//! the site registry (`glimpse_core::registry`); the configuration wins.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::accounts::KeyScope;
use glimpse_core::config::Config;
use glimpse_core::registry::Registry;
pub use glimpse_core::site::Site;
use glimpse_core::site::{validate_timezone, Sites};
use serde::Deserialize;

/// Prefix of every key, so that a leaked one is recognisable (e.g. by secret scanners).
const KEY_PREFIX: &str = "glimpse_";
/// The `site` of a key that reads every site.
pub const ALL_SITES: &str = "*";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("the operating system has no randomness to make a key: {0}")]
    Random(String),
    #[error("site {0:?} is neither configured nor added with `glimpse site add`")]
    UnknownSite(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Registry(#[from] glimpse_core::registry::RegistryError),
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

fn new_key() -> Result<String, KeyError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    let mut key = String::from(KEY_PREFIX);
    for b in bytes {
        key.push_str(&format!("{b:02x}"));
    }
    Ok(key)
}

/// Every site: the configured ones, then the registry's with their goals and shared links.
pub async fn sites(
    client: &clickhouse::Client,
    database: &str,
    config: &Config,
) -> Result<Sites, clickhouse::error::Error> {
    Registry::new(client.clone(), database)
        .sites(&config.sites)
        .await
}

/// How long the query service reuses the sites it read: a site added or deleted anywhere
/// shows within this long.
pub const SITES_TTL: Duration = Duration::from_secs(5);

/// Every site the stats API answers for, by domain.
pub type SitesByDomain = Arc<Sites>;

/// The sites last read from ClickHouse, reused for [`SITES_TTL`].
pub struct SiteCache {
    ttl: Duration,
    current: Mutex<Option<(Instant, SitesByDomain)>>,
}

impl SiteCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            current: Mutex::new(None),
        }
    }

    /// The cached sites, while they are fresh.
    pub fn get(&self) -> Option<SitesByDomain> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|(read, _)| read.elapsed() < self.ttl)
            .map(|(_, sites)| sites.clone())
    }

    /// Forgets the cached sites: the next request reads them again (after a change made here,
    /// so that this service shows it at once).
    pub fn clear(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Keeps `sites`, read just now, and returns them.
    pub fn put(&self, sites: Sites) -> SitesByDomain {
        let sites = Arc::new(sites);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), sites.clone()));
        sites
    }
}

/// Adds a site to the registry (or changes its time zone): every collector accepts its
/// beacons within seconds. Refused for a configured site.
pub async fn add_site(
    client: &clickhouse::Client,
    database: &str,
    config: &Config,
    domain: &str,
    timezone: &str,
) -> Result<Site, KeyError> {
    crate::params::parse_site_id(Some(domain)).map_err(|_| {
        KeyError::Invalid(format!(
            "{domain:?} is not a site domain: use the bare lower-case host name, e.g. example.com"
        ))
    })?;
    validate_timezone(timezone).map_err(|e| KeyError::Invalid(e.to_string()))?;
    if let Some(renamed) = sites(client, database, config)
        .await?
        .get(domain)
        .filter(|site| site.domain != domain)
    {
        return Err(KeyError::Invalid(format!(
            "{domain} is the new domain of site {}: change that site instead",
            renamed.domain
        )));
    }
    Ok(Registry::new(client.clone(), database)
        .put_site(&Sites::new(&config.sites), domain, timezone)
        .await?)
}

/// Deletes a site added at run time: every collector refuses its beacons within seconds, its
/// keys are revoked and all its data is erased (ClickHouse deletes in the background).
/// Returns how many events are being erased.
pub async fn remove_site(
    client: &clickhouse::Client,
    database: &str,
    config: &Config,
    domain: &str,
) -> Result<u64, KeyError> {
    // By its id, or by its new domain when renamed.
    let id = match sites(client, database, config).await?.get(domain) {
        Some(site) => site.domain.clone(),
        None => domain.to_string(),
    };
    let domain = id.as_str();
    let erased = Registry::new(client.clone(), database)
        .on_cluster(config.clickhouse_cluster.clone())
        .delete_site(&Sites::new(&config.sites), domain)
        .await?;
    for key in list_keys(client, database).await? {
        if key.site == domain && key.revoked == 0 {
            revoke_key(client, database, &key.key_id).await?;
        }
    }
    Ok(erased)
}

/// A new key for `site` (or [`ALL_SITES`]); returns the key, which is not stored, and its id.
pub async fn create_key(
    client: &clickhouse::Client,
    database: &str,
    config: &Config,
    site: &str,
    name: &str,
) -> Result<(String, String), KeyError> {
    // A key is kept by its site's id (a renamed site's first domain).
    let id = if site == ALL_SITES {
        ALL_SITES.to_string()
    } else {
        match sites(client, database, config).await?.get(site) {
            Some(known) => known.domain.clone(),
            None => return Err(KeyError::UnknownSite(site.into())),
        }
    };
    let site = id.as_str();
    let key = new_key()?;
    let hash = hash_key(&key);
    let key_id = hash[..12].to_string();
    client
        .query(&format!(
            "INSERT INTO {database}.api_keys (key_hash, key_id, site, name, created_at, revoked) \
             VALUES (?, ?, ?, ?, now(), 0)"
        ))
        .bind(&hash)
        .bind(&key_id)
        .bind(site)
        .bind(name)
        .execute()
        .await?;
    Ok((key, key_id))
}

/// A new key with `scope` (a `stats` key is what [`create_key`] makes; a `sites` key also
/// administers its site(s), see [`crate::accounts::Principal`]).
pub async fn create_scoped_key(
    client: &clickhouse::Client,
    database: &str,
    config: &Config,
    site: &str,
    name: &str,
    scope: KeyScope,
) -> Result<(String, String), KeyError> {
    let (key, key_id) = create_key(client, database, config, site, name).await?;
    if scope != KeyScope::Stats {
        client
            .query(&format!(
                "INSERT INTO {database}.api_key_scopes (key_hash, scope, created_at) \
                 VALUES (?, ?, now())"
            ))
            .bind(hash_key(&key))
            .bind(scope.as_str())
            .execute()
            .await?;
    }
    Ok((key, key_id))
}

/// One key as listed (never the key itself).
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub site: String,
    pub name: String,
    /// Unix seconds.
    pub created_at: u32,
    pub revoked: u8,
    /// `stats` or `sites`.
    pub scope: String,
}

pub async fn list_keys(
    client: &clickhouse::Client,
    database: &str,
) -> Result<Vec<KeyInfo>, KeyError> {
    Ok(client
        .query(&format!(
            "SELECT any(key_id), any(site), any(name), toUInt32(min(created_at)), max(revoked), \
             if(key_hash IN (SELECT key_hash FROM {database}.api_key_scopes WHERE scope = 'sites'), \
             'sites', 'stats') FROM {database}.api_keys GROUP BY key_hash ORDER BY min(created_at)"
        ))
        .fetch_all()
        .await?)
}

/// Revokes the key(s) with this id; returns how many there were.
pub async fn revoke_key(
    client: &clickhouse::Client,
    database: &str,
    key_id: &str,
) -> Result<usize, KeyError> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Found {
        key_hash: String,
        site: String,
        name: String,
    }
    let found: Vec<Found> = client
        .query(&format!(
            "SELECT key_hash, any(site), any(name) FROM {database}.api_keys \
             WHERE key_id = ? GROUP BY key_hash"
        ))
        .bind(key_id)
        .fetch_all()
        .await?;
    for key in &found {
        client
            .query(&format!(
                "INSERT INTO {database}.api_keys (key_hash, key_id, site, name, created_at, revoked) \
                 VALUES (?, ?, ?, ?, now(), 1)"
            ))
            .bind(&key.key_hash)
            .bind(key_id)
            .bind(&key.site)
            .bind(&key.name)
            .execute()
            .await?;
    }
    Ok(found.len())
}

/// The site a valid, unrevoked key reads (or [`ALL_SITES`]); `None` for an unknown or revoked
/// key.
pub async fn key_site(
    client: &clickhouse::Client,
    database: &str,
    key: &str,
) -> Result<Option<String>, clickhouse::error::Error> {
    Ok(key_access(client, database, key)
        .await?
        .map(|(site, _)| site))
}

/// The site (or [`ALL_SITES`]) and scope of a valid, unrevoked key; `None` for an unknown or
/// revoked key. A key without a scope row is a `stats` key.
pub async fn key_access(
    client: &clickhouse::Client,
    database: &str,
    key: &str,
) -> Result<Option<(String, KeyScope)>, clickhouse::error::Error> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Found {
        site: String,
        revoked: u8,
        sites_scope: u8,
    }
    if !key.starts_with(KEY_PREFIX) || key.len() > 200 {
        return Ok(None);
    }
    let hash = hash_key(key);
    let found: Option<Found> = client
        .query(&format!(
            "SELECT any(site), max(revoked), \
             toUInt8(? IN (SELECT key_hash FROM {database}.api_key_scopes WHERE scope = 'sites')) \
             FROM {database}.api_keys WHERE key_hash = ?"
        ))
        .bind(&hash)
        .bind(&hash)
        .fetch_optional()
        .await?;
    Ok(found
        .filter(|f| f.revoked == 0 && !f.site.is_empty())
        .map(|f| {
            let scope = if f.sites_scope == 1 {
                KeyScope::Sites
            } else {
                KeyScope::Stats
            };
            (f.site, scope)
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_lower_hex(s: &str) -> bool {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn a_new_key_is_the_prefix_and_64_random_hex_digits() {
        let (a, b) = (new_key().unwrap(), new_key().unwrap());
        for key in [&a, &b] {
            let digits = key.strip_prefix(KEY_PREFIX).expect("recognisable prefix");
            assert_eq!(digits.len(), 64, "{key}");
            assert!(is_lower_hex(digits), "{key}");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn only_a_hash_of_the_key_is_stored() {
        let key = new_key().unwrap();
        let hash = hash_key(&key);
        assert_eq!(hash.len(), 64);
        assert!(is_lower_hex(&hash));
        assert!(!hash.contains(&key[KEY_PREFIX.len()..KEY_PREFIX.len() + 16]));
        assert!(!hash.starts_with(KEY_PREFIX));
        assert_eq!(hash, hash_key(&key), "the same key finds its row again");
        assert_ne!(hash, hash_key(&format!("{key} ")));
        // BLAKE3 of "glimpse_": a change of algorithm would lock out every stored key.
        assert_eq!(
            hash_key("glimpse_"),
            blake3::hash(b"glimpse_").to_hex().to_string()
        );
    }

    /// A client whose every query fails: nothing listens on port 1.
    fn unreachable() -> clickhouse::Client {
        clickhouse::Client::default().with_url("http://127.0.0.1:1")
    }

    #[tokio::test]
    async fn keys_that_cannot_be_ours_are_refused_without_asking_clickhouse() {
        let long = format!("{KEY_PREFIX}{}", "a".repeat(200));
        for junk in ["", "glimpse", "' OR 1=1 --", "GLIMPSE_00", long.as_str()] {
            assert_eq!(
                key_site(&unreachable(), "glimpse", junk).await.unwrap(),
                None,
                "{junk:?}"
            );
        }
        // A key of the right shape is looked up (and so fails here): the refusals above were
        // decided before any query.
        let key = new_key().unwrap();
        assert!(key_site(&unreachable(), "glimpse", &key).await.is_err());
    }

    /// `*` marks an operator key: no site may be called that, and no request may ask for it.
    #[tokio::test]
    async fn the_operator_mark_is_never_a_site() {
        assert!(crate::params::parse_site_id(Some(ALL_SITES)).is_err());
        for (domain, timezone) in [
            (ALL_SITES, "UTC"),
            ("Example.com", "UTC"),
            ("a.example", "Mars/Base"),
        ] {
            let err = add_site(
                &unreachable(),
                "glimpse",
                &Config::default(),
                domain,
                timezone,
            )
            .await
            .unwrap_err();
            assert!(
                matches!(err, KeyError::Invalid(_)),
                "{domain} {timezone}: {err:?}"
            );
        }
    }

    #[test]
    fn the_site_cache_answers_while_fresh_and_then_asks_again() {
        let sites = Sites::new(&[Site::new("a.com")]);
        let fresh = SiteCache::new(Duration::from_secs(60));
        assert!(fresh.get().is_none(), "nothing read yet");
        fresh.put(sites.clone());
        let cached = fresh.get().expect("fresh");
        assert_eq!(cached.get("a.com"), sites.get("a.com"));
        assert_eq!(cached.len(), 1);
        let stale = SiteCache::new(Duration::ZERO);
        stale.put(sites);
        assert!(stale.get().is_none(), "an expired read is not reused");
    }
}
