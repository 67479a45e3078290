//! A process's current view of the sites, refreshed from the registry every few seconds, so
//! that a site added or deleted on one machine is accepted or refused on every other within
//! [`REFRESH_INTERVAL`] twice over, without a restart.
//!
//! The collector also keeps the stored sites in a file under its data directory: started
//! while ClickHouse is down, it still accepts (and spools) the beacons of sites added at run
//! time instead of refusing them until ClickHouse is back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::{merge, Registry, StoredSite};
use crate::site::{Site, Sites};

/// How often a process reads the registry again: a change made anywhere is seen everywhere
/// within this (plus one read).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// How long after start a failed read is expected (the schema is being made) and not warned of.
const STARTUP_GRACE: Duration = Duration::from_secs(30);

/// The sites in use now: the configured ones plus the registry's, swapped atomically.
pub struct LiveSites {
    configured: Vec<Site>,
    current: ArcSwap<Sites>,
}

impl LiveSites {
    /// Starts with the configured sites only.
    pub fn new(configured: Vec<Site>) -> Self {
        let current = ArcSwap::from_pointee(Sites::new(&configured));
        Self {
            configured,
            current,
        }
    }

    /// The sites as of now. Cheap (no lock, no allocation): call it per request.
    pub fn current(&self) -> arc_swap::Guard<Arc<Sites>> {
        self.current.load()
    }

    /// The configured sites (read-only at run time).
    pub fn configured(&self) -> &[Site] {
        &self.configured
    }

    /// Reads the registry and swaps the result in; `true` when the sites changed.
    pub async fn refresh(&self, registry: &Registry) -> Result<bool, clickhouse::error::Error> {
        Ok(self.refresh_reporting_removed(registry).await?.is_some())
    }

    async fn refresh_reporting_removed(
        &self,
        registry: &Registry,
    ) -> Result<Option<Vec<String>>, clickhouse::error::Error> {
        let sites = registry.sites(&self.configured).await?;
        Ok(self.swap_reporting_removed(sites))
    }

    fn swap(&self, sites: Sites) -> bool {
        self.swap_reporting_removed(sites).is_some()
    }

    /// Swaps `sites` in when they differ; `Some(domains that went away)` when they did.
    fn swap_reporting_removed(&self, sites: Sites) -> Option<Vec<String>> {
        let old = self.current.load_full();
        if same_sites(&old, &sites) {
            return None;
        }
        let removed = old
            .iter()
            .filter(|s| sites.get(&s.domain).is_none())
            .map(|s| s.domain.clone())
            .collect();
        self.current.store(Arc::new(sites));
        Some(removed)
    }

    /// The sites the registry added, as the snapshot file keeps them.
    fn stored(&self) -> Vec<StoredSite> {
        let configured = Sites::new(&self.configured);
        self.current
            .load()
            .iter()
            .filter(|s| configured.get(&s.domain).is_none())
            .map(|s| StoredSite {
                domain: s.domain.clone(),
                timezone: s.timezone.clone(),
                renamed_to: s.renamed_to.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// Puts the stored sites of a snapshot file in use (none when the file is missing or
    /// unreadable: it is only a fallback).
    pub fn restore(&self, path: &Path) {
        let stored: Vec<StoredSite> = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "the sites snapshot is unreadable; ignored");
                    return;
                }
            },
            Err(_) => return,
        };
        self.swap(merge(&self.configured, &stored, &[], &[]));
    }

    /// Refreshes every [`REFRESH_INTERVAL`] until `stop`; after each change, writes the
    /// stored sites to `snapshot` (when given). A failed read keeps the sites in use and is
    /// logged once per outage.
    pub async fn refresh_periodically(
        self: Arc<Self>,
        registry: Registry,
        snapshot: Option<PathBuf>,
        stop: CancellationToken,
    ) {
        let mut failing = false;
        // A process starting beside a fresh database reads before the migrations have made
        // the tables: that is not worth a warning.
        let started = std::time::Instant::now();
        loop {
            match self.refresh_reporting_removed(&registry).await {
                Ok(changed) => {
                    if failing {
                        tracing::info!("site registry readable again");
                        failing = false;
                    }
                    if let Some(removed) = changed {
                        if !removed.is_empty() {
                            tokio::spawn(erase_late_rows(
                                registry.clone(),
                                Sites::new(&self.configured),
                                stop.clone(),
                            ));
                        }
                        tracing::info!(sites = self.current().len(), "sites changed");
                        if let Some(path) = &snapshot {
                            if let Err(error) = write_snapshot(path, &self.stored()) {
                                tracing::warn!(path = %path.display(), %error, "cannot write the sites snapshot");
                            }
                        }
                    }
                }
                Err(error) if started.elapsed() < STARTUP_GRACE => {
                    tracing::debug!(%error, "site registry not readable yet");
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "cannot read the site registry; the sites in use stay");
                        failing = true;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// How long after seeing a site deleted a collector erases the rows that arrived for it since:
/// enough for the beacons it accepted just before to be written (batches leave within
/// seconds). Rows held back longer (ClickHouse down) are erased with retention.
pub const LATE_ROWS_GRACE: Duration = Duration::from_secs(15);

async fn erase_late_rows(registry: Registry, configured: Sites, stop: CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(LATE_ROWS_GRACE) => {}
        _ = stop.cancelled() => return,
    }
    match registry.erase_late_rows_of_deleted_sites(&configured).await {
        Ok(erased) if !erased.is_empty() => {
            tracing::info!(sites = ?erased, "late rows of deleted sites erased")
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "cannot erase late rows of deleted sites; retention will")
        }
    }
}

impl From<Sites> for LiveSites {
    /// Fixed sites (tests, and processes without ClickHouse).
    fn from(sites: Sites) -> Self {
        let configured: Vec<Site> = sites.iter().cloned().collect();
        Self::new(configured)
    }
}

fn same_sites(a: &Sites, b: &Sites) -> bool {
    a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x == y)
}

/// Written to a temporary file, synced and renamed, so a crash leaves the old or the new one.
fn write_snapshot(path: &Path, stored: &[StoredSite]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(&serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_restores_the_stored_sites_beside_the_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sites.json");
        let live = LiveSites::new(vec![Site::new("conf.example")]);
        assert!(live.swap(merge(
            live.configured(),
            &[StoredSite {
                domain: "added.example".into(),
                timezone: "Europe/Paris".into(),
                renamed_to: String::new(),
            }],
            &[],
            &[],
        )));
        write_snapshot(&path, &live.stored()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("added.example") && !text.contains("conf.example"),
            "{text}"
        );

        let restarted = LiveSites::new(vec![Site::new("conf.example")]);
        assert!(restarted.current().get("added.example").is_none());
        restarted.restore(&path);
        assert_eq!(
            restarted.current().get("added.example").unwrap().timezone,
            "Europe/Paris"
        );
        assert!(restarted.current().get("conf.example").is_some());
    }

    #[test]
    fn a_missing_or_broken_snapshot_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveSites::new(vec![Site::new("conf.example")]);
        live.restore(&dir.path().join("absent.json"));
        std::fs::write(dir.path().join("broken.json"), "{not json").unwrap();
        live.restore(&dir.path().join("broken.json"));
        assert_eq!(live.current().len(), 1);
    }

    #[test]
    fn swapping_equal_sites_is_no_change() {
        let live = LiveSites::new(vec![Site::new("a.example")]);
        assert!(!live.swap(Sites::new(&[Site::new("a.example")])));
        assert!(live.swap(Sites::new(&[])));
        assert!(live.current().is_empty());
    }
}
