//! GeoIP reload without restart: the database in use sits behind an atomic pointer the
//! pipeline reads per beacon, and a background task checks the files every
//! `geoip_check_secs`. When they have changed (size, modification time, inode) and stayed
//! unchanged for one more check (a copy in progress is not read half-way), the new files are
//! opened and checked like at start-up, then swapped in whole. A file that cannot be used
//! keeps the database in memory answering; both outcomes are logged and counted in
//! `glimpse_geoip_reloads_total{result}`. GeoLite2 changes twice a week, DB-IP monthly.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;

use super::geo::{GeoIp, Location};
use glimpse_core::config::Config;
use glimpse_core::geoip::Source;

/// The GeoIP database in use (or none), swapped whole on reload. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct LiveGeoIp(Arc<ArcSwapOption<GeoIp>>);

impl LiveGeoIp {
    pub fn new(geo: Option<GeoIp>) -> Self {
        Self(Arc::new(ArcSwapOption::from(geo.map(Arc::new))))
    }

    /// Where `ip` is, by the database in use; unknown without one. A lock-free load: a reload
    /// never makes a beacon wait.
    pub fn lookup(&self, ip: IpAddr) -> Location {
        self.0
            .load()
            .as_deref()
            .map(|geo| geo.lookup(ip))
            .unwrap_or_default()
    }

    /// The database in use.
    pub fn current(&self) -> Option<Arc<GeoIp>> {
        self.0.load_full()
    }

    /// Puts `geo` in use; lookups under way finish with the old one.
    pub fn replace(&self, geo: GeoIp) {
        self.0.store(Some(Arc::new(geo)));
    }
}

/// What identifies the files' contents without reading them: per path, its size,
/// modification time and inode (`None` when it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<(PathBuf, Option<FileStat>)>);

/// Size, modification time and inode of a file.
type FileStat = (u64, SystemTime, u64);

impl Fingerprint {
    pub fn of(source: Option<&Source>) -> Self {
        let paths = source.map(|s| s.paths.as_slice()).unwrap_or_default();
        Self(
            paths
                .iter()
                .map(|path| {
                    let stat = std::fs::metadata(path)
                        .ok()
                        .and_then(|m| Some((m.len(), m.modified().ok()?, inode(&m))));
                    (path.clone(), stat)
                })
                .collect(),
        )
    }
}

#[cfg(unix)]
fn inode(metadata: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(metadata)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// Checks the configured (or installed default) GeoIP files every `config.collector.geoip_check_secs`
/// until `stop`, and reloads `live` when they changed. `loaded` is the fingerprint of what
/// `live` was opened from.
pub async fn watch(
    config: Arc<Config>,
    live: LiveGeoIp,
    mut loaded: Fingerprint,
    stop: CancellationToken,
) {
    if config.collector.geoip_check_secs == 0 {
        return;
    }
    let every = Duration::from_secs(config.collector.geoip_check_secs);
    let mut last = loaded.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let source = Source::of(&config);
        let now = Fingerprint::of(source.as_ref());
        if now != last {
            // Changed since the last check: wait until it holds still.
            last = now;
            continue;
        }
        if now == loaded {
            continue;
        }
        loaded = now;
        let Some(source) = source else {
            tracing::warn!(
                "the GeoIP database files are gone; the database loaded before stays in use"
            );
            continue;
        };
        // Reading and checking a 100 MB file takes a while: off the async threads.
        let paths = source.paths.clone();
        let opened = tokio::select! {
            opened = tokio::task::spawn_blocking(move || GeoIp::open_all(&paths)) => opened,
            _ = stop.cancelled() => return,
        };
        match opened {
            Ok(Ok(geo)) => {
                tracing::info!(
                    path = %geo.path().display(),
                    kind = geo.database_type(),
                    edition = source.edition.map(|e| e.name),
                    "GeoIP database reloaded"
                );
                live.replace(geo);
                metrics::counter!("glimpse_geoip_reloads_total", "result" => "ok").increment(1);
            }
            Ok(Err(error)) => {
                tracing::error!(
                    %error,
                    "GeoIP database changed but cannot be used; the one loaded before stays in use"
                );
                metrics::counter!("glimpse_geoip_reloads_total", "result" => "failed").increment(1);
            }
            Err(error) => {
                tracing::error!(%error, "GeoIP reload failed; the database loaded before stays in use");
                metrics::counter!("glimpse_geoip_reloads_total", "result" => "failed").increment(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::geo::test_dbs::{self, Kind, PLACES};
    use super::*;

    #[test]
    fn replace_swaps_the_answers_and_a_fingerprint_sees_a_renamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let city = test_dbs::write(dir.path(), Kind::MaxMindCity);
        let live = LiveGeoIp::new(None);
        let london: IpAddr = PLACES[0].address.parse().unwrap();
        assert_eq!(live.lookup(london), Location::default());
        live.replace(GeoIp::open(&city).unwrap());
        assert_eq!(live.lookup(london).city, "London");

        let source = Source {
            paths: vec![city.clone()],
            edition: None,
        };
        let before = Fingerprint::of(Some(&source));
        assert_eq!(before, Fingerprint::of(Some(&source)));
        let country = test_dbs::write(dir.path(), Kind::MaxMindCountry);
        std::fs::rename(&country, &city).unwrap();
        assert_ne!(before, Fingerprint::of(Some(&source)));
        live.replace(GeoIp::open(&city).unwrap());
        assert_eq!(live.lookup(london).city, "");
        assert_eq!(live.lookup(london).country, "GB");
    }
}
