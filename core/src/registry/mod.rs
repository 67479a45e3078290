//! The live site registry: sites, goals, funnels and shared links managed at run time (the Sites API,
//! the dashboard, `glimpse site add`), stored in ClickHouse — the store every collector and
//! query service already shares — beside the sites of the configuration file, which win and
//! stay read-only. Readers merge both into [`Sites`]; [`live::LiveSites`] keeps a process's
//! copy fresh.
//!
//! The tables (migration 14) are versioned: a change appends a row with a newer `version`
//! ([`crate::clock::version_now`]) and readers take the newest row per key, so writers on
//! several machines never update in place and a reader never sees half a change.

pub mod live;

use serde::{Deserialize, Serialize};

use crate::clock::version_now;
use crate::funnels::{parse_steps, steps_json, Funnel};
use crate::goals::Goal;
use crate::schema::SITE_DATA_TABLES;
use crate::site::{validate_domain, SharedLink, Site, SiteConfig, SiteError, Sites};

pub use live::LiveSites;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("{0}")]
    Invalid(#[from] SiteError),
    #[error("site {0} is managed in the configuration file: change it there")]
    Configured(String),
    #[error("no site {0}")]
    UnknownSite(String),
}

/// A site as stored (its settings; goals and links are rows of their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct StoredSite {
    /// The site's id: the domain it was created with.
    pub domain: String,
    pub timezone: String,
    /// The domain it goes by since it was renamed; empty when it was not.
    #[serde(default)]
    pub renamed_to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Deserialize)]
struct StoredGoal {
    site: String,
    goal: String,
}

#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Deserialize)]
struct StoredLink {
    site: String,
    name: String,
    token: String,
}

/// The registry's tables in one database.
#[derive(Clone)]
pub struct Registry {
    client: clickhouse::Client,
    db: String,
    /// Where a deleted site's rows are erased (`schema::cluster::alter_table`).
    cluster: Option<crate::config::ClusterName>,
}

impl Registry {
    /// `client` must not be bound to a database; `db` is the Glimpse database.
    pub fn new(client: clickhouse::Client, db: &str) -> Self {
        Self {
            client,
            db: db.to_string(),
            cluster: None,
        }
    }

    /// On a cluster (`clickhouse_cluster`): a deleted site's rows are erased on every shard.
    pub fn on_cluster(mut self, cluster: Option<crate::config::ClusterName>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The stored sites that are not deleted, by id, with the domain each goes by if renamed.
    pub async fn stored_sites(&self) -> Result<Vec<StoredSite>, clickhouse::error::Error> {
        let db = &self.db;
        let mut sites: Vec<StoredSite> = self
            .client
            .query(&format!(
                "SELECT domain, timezone, '' AS renamed_to FROM (SELECT domain, \
                 argMax(timezone, version) AS timezone, argMax(deleted, version) AS gone \
                 FROM {db}.site_registry GROUP BY domain) WHERE gone = 0 ORDER BY domain"
            ))
            .fetch_all()
            .await?;
        // A second small read rather than a join: the join forms of 18.16 and current servers
        // differ, and these tables hold a row per site.
        let renamed: std::collections::HashMap<String, String> = self
            .client
            .query(&format!(
                "SELECT site, argMax(domain, version) AS renamed_to FROM {db}.site_domains \
                 GROUP BY site"
            ))
            .fetch_all::<(String, String)>()
            .await?
            .into_iter()
            .collect();
        for site in &mut sites {
            if let Some(name) = renamed.get(&site.domain) {
                site.renamed_to.clone_from(name);
            }
        }
        Ok(sites)
    }

    /// Every site: the configured ones, then the stored ones with their goals and shared
    /// links. A stored row that no longer parses is skipped with a warning, so one bad row
    /// cannot stop every beacon.
    pub async fn sites(&self, configured: &[Site]) -> Result<Sites, clickhouse::error::Error> {
        let db = &self.db;
        let stored = self.stored_sites().await?;
        let goals: Vec<StoredGoal> = self
            .client
            .query(&format!(
                "SELECT site, goal FROM (SELECT site, goal, argMax(deleted, version) AS gone \
                 FROM {db}.site_goals GROUP BY site, goal) WHERE gone = 0 ORDER BY site, goal"
            ))
            .fetch_all()
            .await?;
        let links: Vec<StoredLink> = self
            .client
            .query(&format!(
                "SELECT site, name, token FROM (SELECT site, name, argMax(token, version) AS token, \
                 argMax(deleted, version) AS gone FROM {db}.shared_links GROUP BY site, name) \
                 WHERE gone = 0 ORDER BY site, name"
            ))
            .fetch_all()
            .await?;
        Ok(merge(configured, &stored, &goals, &links))
    }

    /// Adds a site or changes its time zone. Refused for a configured site.
    pub async fn put_site(
        &self,
        configured: &Sites,
        domain: &str,
        timezone: &str,
    ) -> Result<Site, RegistryError> {
        if configured.get(domain).is_some() {
            return Err(RegistryError::Configured(domain.to_string()));
        }
        let site = Site::parse(SiteConfig {
            timezone: timezone.to_string(),
            ..SiteConfig::new(domain)
        })?;
        self.client
            .query(&format!(
                "INSERT INTO {}.site_registry (domain, timezone, deleted, version, changed_at) \
                 VALUES (?, ?, 0, ?, now())",
                self.db
            ))
            .bind(&site.domain)
            .bind(&site.timezone)
            .bind(version_now())
            .execute()
            .await?;
        Ok(site)
    }

    /// Renames a stored site: from now on it goes by `new_domain` (shown, put in its snippet,
    /// accepted in beacons and `site_id`), and keeps its id — the domain it was created with,
    /// under which its events, goals, links, members and keys stay — which is accepted too.
    /// Renaming it back to its id ends the rename. The caller checks that no other site has
    /// the name.
    pub async fn rename_site(
        &self,
        configured: &Sites,
        id: &str,
        new_domain: &str,
    ) -> Result<(), RegistryError> {
        if configured.get(id).is_some() {
            return Err(RegistryError::Configured(id.to_string()));
        }
        validate_domain(new_domain)?;
        let name = if new_domain == id { "" } else { new_domain };
        self.client
            .query(&format!(
                "INSERT INTO {}.site_domains (site, domain, version, changed_at) \
                 VALUES (?, ?, ?, now())",
                self.db
            ))
            .bind(id)
            .bind(name)
            .bind(version_now())
            .execute()
            .await?;
        Ok(())
    }

    /// Deletes a stored site, its goals and links (a site added again later starts without
    /// them: an old share link must not come back), and schedules the deletion of all its
    /// data (events, rollups, imports, filtered-traffic counts). Collectors refuse its beacons
    /// from their next refresh. Returns how many of its events are being erased.
    pub async fn delete_site(
        &self,
        configured: &Sites,
        domain: &str,
    ) -> Result<u64, RegistryError> {
        let db = &self.db;
        if configured.get(domain).is_some() {
            return Err(RegistryError::Configured(domain.to_string()));
        }
        if !self
            .stored_sites()
            .await?
            .iter()
            .any(|s| s.domain == domain)
        {
            return Err(RegistryError::UnknownSite(domain.to_string()));
        }
        // The registry first: from the collectors' next refresh no new rows arrive.
        let version = version_now();
        for statement in [
            format!(
                "INSERT INTO {db}.site_registry (domain, timezone, deleted, version, changed_at) \
                 VALUES (?, 'UTC', 1, {version}, now())"
            ),
            // Its new name goes too: a site added again under this id starts without it.
            format!(
                "INSERT INTO {db}.site_domains (site, domain, version, changed_at) \
                 VALUES (?, '', {version}, now())"
            ),
            format!(
                "INSERT INTO {db}.site_goals (site, goal, deleted, version, changed_at) \
                 SELECT site, goal, 1, {version}, now() FROM {db}.site_goals \
                 WHERE site = ? GROUP BY site, goal"
            ),
            format!(
                "INSERT INTO {db}.shared_links (site, name, token, deleted, version, changed_at) \
                 SELECT site, name, '', 1, {version}, now() FROM {db}.shared_links \
                 WHERE site = ? GROUP BY site, name"
            ),
            format!(
                "INSERT INTO {db}.site_funnels (site, name, steps, deleted, version, changed_at) \
                 SELECT site, name, '', 1, {version}, now() FROM {db}.site_funnels \
                 WHERE site = ? GROUP BY site, name"
            ),
        ] {
            self.client.query(&statement).bind(domain).execute().await?;
        }
        Ok(self.erase_site_data(domain).await?)
    }

    /// Schedules the deletion of every row of `domain` (a mutation per table, applied by
    /// ClickHouse in the background); returns how many events it had.
    async fn erase_site_data(&self, domain: &str) -> Result<u64, clickhouse::error::Error> {
        let db = &self.db;
        let events: u64 = self
            .client
            .query(&format!("SELECT count() FROM {db}.events WHERE site = ?"))
            .bind(domain)
            .fetch_one()
            .await?;
        for table in SITE_DATA_TABLES {
            self.client
                .query(&format!(
                    "{} DELETE WHERE site = ?",
                    crate::schema::cluster::alter_table(db, table, self.cluster.as_ref())
                ))
                .bind(domain)
                .execute()
                .await?;
        }
        Ok(events)
    }

    /// Erases the rows that arrived for deleted sites after their deletion: beacons a
    /// collector accepted before it saw the deletion, written after the erasure began. Run by
    /// every collector some seconds after it sees a site go, and with retention. Returns the
    /// sites erased.
    pub async fn erase_late_rows_of_deleted_sites(
        &self,
        configured: &Sites,
    ) -> Result<Vec<String>, clickhouse::error::Error> {
        let db = &self.db;
        let deleted: Vec<String> = self
            .client
            .query(&format!(
                "SELECT domain FROM (SELECT domain, argMax(deleted, version) AS gone \
                 FROM {db}.site_registry GROUP BY domain) \
                 WHERE gone = 1 AND domain IN (SELECT DISTINCT site FROM {db}.events)"
            ))
            .fetch_all()
            .await?;
        let mut erased = Vec::new();
        // A domain deleted from the registry and later configured in the file is the
        // configuration's now: its data stays.
        for domain in deleted.into_iter().filter(|d| configured.get(d).is_none()) {
            self.erase_site_data(&domain).await?;
            erased.push(domain);
        }
        Ok(erased)
    }

    /// Adds a goal (its text as configured: `Signup`, `Visit /pricing`); adding it again
    /// changes nothing.
    pub async fn put_goal(&self, site: &str, goal: &Goal) -> Result<(), RegistryError> {
        self.write_entry("site_goals", site, &[("goal", &goal.name)], false)
            .await
    }

    pub async fn delete_goal(&self, site: &str, goal: &str) -> Result<(), RegistryError> {
        self.write_entry("site_goals", site, &[("goal", goal)], true)
            .await
    }

    /// A site's saved funnels, by name. A stored row whose steps no longer read is skipped
    /// with a warning.
    pub async fn funnels(&self, site: &str) -> Result<Vec<Funnel>, RegistryError> {
        let rows: Vec<(String, String)> = self
            .client
            .query(&format!(
                "SELECT name, steps FROM (SELECT name, argMax(steps, version) AS steps, \
                 argMax(deleted, version) AS gone FROM {}.site_funnels WHERE site = ? \
                 GROUP BY name) WHERE gone = 0 ORDER BY name",
                self.db
            ))
            .bind(site)
            .fetch_all()
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, steps)| {
                let parsed = serde_json::from_str(&steps)
                    .map_err(|e| e.to_string())
                    .and_then(|v| parse_steps(Some(&v)).map_err(|e| e.to_string()));
                match parsed {
                    Ok(steps) => Some(Funnel { name, steps }),
                    Err(error) => {
                        tracing::warn!(site, funnel = %name, %error, "stored funnel skipped");
                        None
                    }
                }
            })
            .collect())
    }

    /// Saves a funnel, replacing the steps of one with the same name.
    pub async fn put_funnel(&self, site: &str, funnel: &Funnel) -> Result<(), RegistryError> {
        let steps = steps_json(&funnel.steps).to_string();
        let entry = [("name", funnel.name.as_str()), ("steps", &steps)];
        self.write_entry("site_funnels", site, &entry, false).await
    }

    pub async fn delete_funnel(&self, site: &str, name: &str) -> Result<(), RegistryError> {
        let entry = [("name", name), ("steps", "")];
        self.write_entry("site_funnels", site, &entry, true).await
    }

    /// Stores a shared link (a new one, or a new token for a name: the old token stops
    /// working).
    pub async fn put_link(&self, site: &str, link: &SharedLink) -> Result<(), RegistryError> {
        let entry = [("name", link.name.as_str()), ("token", &link.token)];
        self.write_entry("shared_links", site, &entry, false).await
    }

    pub async fn delete_link(&self, site: &str, name: &str) -> Result<(), RegistryError> {
        let entry = [("name", name), ("token", "")];
        self.write_entry("shared_links", site, &entry, true).await
    }

    /// Writes a new version of one of a site's entries (a goal, funnel or link): its name
    /// column first, then its value, and whether it is deleted. Readers take the latest version
    /// per name, so a deletion is a row too.
    async fn write_entry(
        &self,
        table: &str,
        site: &str,
        entry: &[(&str, &str)],
        deleted: bool,
    ) -> Result<(), RegistryError> {
        let columns: Vec<&str> = entry.iter().map(|(column, _)| *column).collect();
        let mut insert = self.client.query(&format!(
            "INSERT INTO {}.{table} (site, {}, deleted, version, changed_at) \
             VALUES (?, {}, ?, ?, now())",
            self.db,
            columns.join(", "),
            vec!["?"; entry.len()].join(", ")
        ));
        insert = insert.bind(site);
        for (_, value) in entry {
            insert = insert.bind(value);
        }
        insert
            .bind(u8::from(deleted))
            .bind(version_now())
            .execute()
            .await?;
        Ok(())
    }
}

/// The configured sites, then the stored ones (a stored site with a configured domain is
/// ignored: the configuration wins), each with its stored goals and links.
fn merge(
    configured: &[Site],
    stored: &[StoredSite],
    goals: &[StoredGoal],
    links: &[StoredLink],
) -> Sites {
    let mut sites = Sites::new(configured);
    for s in stored {
        if sites.get(&s.domain).is_some() {
            continue;
        }
        let config = SiteConfig {
            timezone: s.timezone.clone(),
            goals: goals
                .iter()
                .filter(|g| g.site == s.domain)
                .map(|g| g.goal.clone())
                .collect(),
            ..SiteConfig::new(s.domain.clone())
        };
        match Site::parse(config) {
            Ok(mut site) => {
                site.renamed_to = (!s.renamed_to.is_empty()).then(|| s.renamed_to.clone());
                site.shared_links = links
                    .iter()
                    .filter(|l| l.site == s.domain)
                    .map(|l| SharedLink {
                        name: l.name.clone(),
                        token: l.token.clone(),
                    })
                    .collect();
                sites.add_if_absent(site);
            }
            Err(error) => tracing::warn!(%error, "a stored site is skipped"),
        }
    }
    sites
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(domain: &str, timezone: &str) -> StoredSite {
        StoredSite {
            domain: domain.into(),
            timezone: timezone.into(),
            renamed_to: String::new(),
        }
    }

    #[test]
    fn stored_sites_join_the_configured_ones_which_win() {
        let configured = [Site::new("conf.example")];
        let goals = [
            StoredGoal {
                site: "shop.example".into(),
                goal: "Visit /checkout".into(),
            },
            StoredGoal {
                site: "conf.example".into(),
                goal: "Ignored".into(),
            },
        ];
        let links = [StoredLink {
            site: "shop.example".into(),
            name: "press".into(),
            token: "t0123456789abcdef".into(),
        }];
        let sites = merge(
            &configured,
            &[
                stored("conf.example", "Asia/Tokyo"),
                stored("shop.example", "Europe/Berlin"),
            ],
            &goals,
            &links,
        );
        assert_eq!(sites.len(), 2);
        let conf = sites.get("conf.example").unwrap();
        assert_eq!(conf.timezone, "UTC", "the configuration wins");
        assert!(conf.goals.is_empty());
        let shop = sites.get("shop.example").unwrap();
        assert_eq!(shop.timezone, "Europe/Berlin");
        assert_eq!(shop.goals.len(), 1);
        assert_eq!(shop.goals[0].name, "Visit /checkout");
        assert!(shop.accepts_share_token("t0123456789abcdef"));
    }

    #[test]
    fn a_stored_row_that_does_not_parse_is_skipped_not_fatal() {
        let sites = merge(
            &[],
            &[
                stored("ok.example", "UTC"),
                stored("bad.example", "Mars/Base"),
            ],
            &[],
            &[],
        );
        assert!(sites.get("ok.example").is_some());
        assert!(sites.get("bad.example").is_none());
    }
}
