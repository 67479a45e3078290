//! Pseudonymous visitor ids: a keyed hash (BLAKE3 keyed with a 32-byte salt) of the site, the
//! client network and the user agent. The salt is random, changes at midnight UTC and is
//! destroyed after it has served its day and the next (48 h at most), so ids cannot be linked
//! across days by anyone, the operator included.
//!
//! Salts are kept in memory and, so that ids stay stable across a restart within the day and
//! are the same on every collector, in files `<salt_dir>/<day>.salt` (mode 0600). Several
//! collectors share one salt directory (a shared volume): the first to need a day's salt
//! creates the file atomically, the others read it. An expired salt's file is overwritten with
//! zeros, synced and removed.
//!
//! On a cluster with `salt_key`, the salts come from the cluster instead
//! ([`super::shared_salts`]) and no salt is written to `salt_dir`.
//!
//! Rotation runs on a timer ([`rotate_daily`]), not only when an event needs a salt: an idle
//! collector would otherwise keep a salt in memory and on disk for as long as nobody visits.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use glimpse_core::ip_prefix::hashing_network;

pub use super::salt::{day_of, Day};
use super::salt::{random_salt, Salt, SALT_LEN, SECONDS_PER_DAY};
use super::shared_salts::{SharedSaltError, SharedSalts, PREPARE_AHEAD_SECS};

/// The salts in force on one day: its own, and the previous day's (kept only to continue
/// visits that cross midnight).
pub struct DailySalts {
    pub day: Day,
    today: Salt,
    yesterday: Option<Salt>,
}

/// Never prints the salts themselves.
impl std::fmt::Debug for DailySalts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DailySalts")
            .field("day", &self.day)
            .field("yesterday", &self.yesterday.is_some())
            .finish_non_exhaustive()
    }
}

impl DailySalts {
    /// Salts that exist only in memory, for tests and for `salt_dir`-less use.
    pub fn ephemeral(day: Day) -> Self {
        Self {
            day,
            today: random_salt(),
            yesterday: None,
        }
    }

    /// Today's visitor id.
    pub fn visitor_id(&self, site: &str, ip: IpAddr, user_agent: &str) -> u64 {
        visitor_hash(&self.today, site, ip, user_agent)
    }

    /// The id the same visitor had yesterday, if yesterday's salt is still kept.
    pub fn previous_visitor_id(&self, site: &str, ip: IpAddr, user_agent: &str) -> Option<u64> {
        self.yesterday
            .as_ref()
            .map(|salt| visitor_hash(salt, site, ip, user_agent))
    }
}

fn visitor_hash(salt: &[u8; SALT_LEN], site: &str, ip: IpAddr, user_agent: &str) -> u64 {
    let mut hasher = blake3::Hasher::new_keyed(salt);
    // Length-prefixed fields, so no two different inputs hash the same bytes.
    for part in [site.as_bytes(), user_agent.as_bytes()] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    match hashing_network(ip) {
        IpAddr::V4(v4) => hasher.update(&v4.octets()),
        IpAddr::V6(v6) => hasher.update(&v6.octets()),
    };
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[derive(Debug, thiserror::Error)]
pub enum SaltError {
    #[error("salt directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("salt file {0} is damaged (not {SALT_LEN} bytes)")]
    Damaged(PathBuf),
}

/// Where a collector's salts come from.
#[derive(Debug)]
enum Source {
    /// Files in `salt_dir` (one server, or collectors sharing a volume).
    Files(PathBuf),
    /// Agreed through the ClickHouse cluster (`clickhouse_cluster` with `salt_key`).
    Cluster(Arc<SharedSalts>),
}

/// The salts of the current day, rotated at midnight UTC.
#[derive(Debug)]
pub struct SaltStore {
    source: Source,
    current: RwLock<Arc<DailySalts>>,
}

impl SaltStore {
    /// Opens (creating if needed) the salt directory and loads or creates the salts for `day`,
    /// destroying any older salt files.
    pub fn open(dir: &Path, day: Day) -> Result<Self, SaltError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        restrict_dir(dir)?;
        let salts = load_day(dir, day)?;
        Ok(Self {
            source: Source::Files(dir.to_path_buf()),
            current: RwLock::new(Arc::new(salts)),
        })
    }

    /// Salts agreed through the cluster: today's (and yesterday's, if still kept) agreed now,
    /// trying for up to `patience`. A cluster unreachable that long leaves this collector on a
    /// salt of its own until it is reachable again ([`rotate_daily`] then adopts the agreed
    /// one): visitor ids differ between collectors meanwhile, never across days.
    pub async fn open_shared(shared: Arc<SharedSalts>, day: Day, patience: Duration) -> Self {
        let deadline = tokio::time::Instant::now() + patience;
        let today = loop {
            match shared.agree(day).await {
                Ok(salt) => break salt,
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    tracing::error!(
                        %error,
                        "visitor-id salt not agreed with the cluster; using one of this \
                         collector's own until it is"
                    );
                    break random_salt();
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        // Yesterday's only if it exists: proposing a salt for a day that is over is pointless.
        let yesterday = match day.checked_sub(1) {
            Some(prev) => shared.recheck(prev).await.ok().flatten(),
            None => None,
        };
        Self {
            source: Source::Cluster(shared),
            current: RwLock::new(Arc::new(DailySalts {
                day,
                today,
                yesterday,
            })),
        }
    }

    /// The salts for the day of `unix_secs`, rotating first if that day has begun.
    pub fn salts_at(&self, unix_secs: u64) -> Result<Arc<DailySalts>, SaltError> {
        let day = day_of(unix_secs);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            // An event stamped just before midnight, handled just after, uses the new day too.
            if current.day >= day {
                return Ok(current.clone());
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.day < day {
            let next = match &self.source {
                Source::Files(dir) => load_day(dir, day)?,
                Source::Cluster(shared) => {
                    // Agreed ahead of midnight ([`rotate_daily`]); else this collector's own
                    // until the cluster answers.
                    let today = shared.known(day).unwrap_or_else(|| {
                        tracing::error!(
                            day,
                            "no agreed visitor-id salt for the new day; using one of this \
                             collector's own until the cluster answers"
                        );
                        random_salt()
                    });
                    let yesterday = (current.day + 1 == day).then(|| current.today.clone());
                    DailySalts {
                        day,
                        today,
                        yesterday,
                    }
                }
            };
            *current = Arc::new(next);
            metrics::counter!("glimpse_salt_rotations_total").increment(1);
            tracing::info!(day, "visitor-id salt rotated");
        }
        Ok(current.clone())
    }

    /// Replaces today's salt by the cluster's winner when they differ (a late proposal won).
    fn adopt(&self, day: Day, today: Salt) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.day == day && current.today.as_ref() != today.as_ref() {
            let yesterday = current.yesterday.clone();
            *current = Arc::new(DailySalts {
                day,
                today,
                yesterday,
            });
            metrics::counter!("glimpse_salt_changes_total").increment(1);
            tracing::warn!(
                day,
                "visitor-id salt changed to the one the cluster agreed on"
            );
        }
    }

    /// The salt directory, for salts kept in files.
    pub fn dir(&self) -> Option<&Path> {
        match &self.source {
            Source::Files(dir) => Some(dir),
            Source::Cluster(_) => None,
        }
    }
}

/// One minute's upkeep of cluster salts at `now`: today's winner checked again, tomorrow's
/// agreed once [`PREPARE_AHEAD_SECS`] before midnight, days before yesterday deleted.
async fn upkeep(store: &SaltStore, shared: &SharedSalts, now: u64) -> Result<(), SharedSaltError> {
    let day = day_of(now);
    if let Some(winner) = shared.recheck(day).await? {
        store.adopt(day, winner);
    } else if shared.known(day).is_none() {
        // Started without the cluster: agree now, and use the agreed salt from now on.
        let agreed = shared.agree(day).await?;
        store.adopt(day, agreed);
    }
    let tomorrow = day + 1;
    if u64::from(tomorrow) * SECONDS_PER_DAY - now <= PREPARE_AHEAD_SECS {
        if shared.known(tomorrow).is_none() {
            shared.agree(tomorrow).await?;
        } else {
            shared.recheck(tomorrow).await?;
        }
    }
    shared.destroy_before(day.saturating_sub(1)).await
}

/// The wall clock the salts follow, so that tests can move it.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn unix_now(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// Longest sleep between two looks at the clock: a wall clock that jumps (a suspended machine,
/// an NTP step) is noticed within this, not only at the midnight the timer was set for.
const MAX_ROTATION_SLEEP: Duration = Duration::from_secs(60);

/// Rotates the salts at each midnight UTC of `clock` until `stop`, with or without traffic: a
/// day's salt is then gone from memory and from `salt_dir` when the day after it ends (48 h
/// after it began), not when the next event happens to arrive. A rotation that fails (the
/// salt directory unwritable) is logged and retried every few seconds.
pub async fn rotate_daily(salts: Arc<SaltStore>, clock: Arc<dyn Clock>, stop: CancellationToken) {
    loop {
        let now = clock.unix_now();
        let mut wait = match salts.salts_at(now) {
            Ok(_) => {
                let next_day = (now / SECONDS_PER_DAY + 1) * SECONDS_PER_DAY;
                Duration::from_secs(next_day - now).min(MAX_ROTATION_SLEEP)
            }
            Err(error) => {
                tracing::error!(%error, "visitor-id salt rotation failed; retrying");
                Duration::from_secs(5)
            }
        };
        if let Source::Cluster(shared) = &salts.source {
            let upkeep = upkeep(&salts, shared, now);
            tokio::select! {
                result = upkeep => if let Err(error) = result {
                    tracing::error!(%error, "visitor-id salts on the cluster: upkeep failed; retrying");
                    wait = wait.min(Duration::from_secs(5));
                },
                _ = stop.cancelled() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Today's salt (created if absent) and yesterday's (if its file exists); everything older is
/// destroyed.
fn load_day(dir: &Path, day: Day) -> Result<DailySalts, SaltError> {
    let today = read_or_create(&salt_path(dir, day))?;
    let yesterday = match day.checked_sub(1) {
        Some(prev) => read_existing(&salt_path(dir, prev))?,
        None => None,
    };
    destroy_older_than(dir, day.saturating_sub(1))?;
    Ok(DailySalts {
        day,
        today,
        yesterday,
    })
}

fn salt_path(dir: &Path, day: Day) -> PathBuf {
    dir.join(format!("{day}.salt"))
}

fn read_existing(path: &Path) -> Result<Option<Salt>, SaltError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let mut salt = Zeroizing::new([0u8; SALT_LEN]);
    let mut extra = [0u8; 1];
    file.read_exact(salt.as_mut())
        .map_err(|_| SaltError::Damaged(path.into()))?;
    if file.read(&mut extra).map_err(io(path))? != 0 {
        return Err(SaltError::Damaged(path.into()));
    }
    Ok(Some(salt))
}

/// Creates the salt file atomically (write a private temp file, then hard-link it into place,
/// which fails if another collector got there first), or reads the one that exists.
fn read_or_create(path: &Path) -> Result<Salt, SaltError> {
    if let Some(salt) = read_existing(path)? {
        return Ok(salt);
    }
    let salt = random_salt();
    let dir = path.parent().unwrap_or(Path::new("."));
    let unique = getrandom::u64().map_err(|e| io(dir)(std::io::Error::other(e)))?;
    let tmp = dir.join(format!(".{unique:016x}.tmp"));
    let mut file = private_create(&tmp)?;
    let written = file.write_all(salt.as_ref()).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        // A full disk: leave no temp file behind (one per attempt would pile up).
        shred(&tmp);
        return Err(io(&tmp)(e));
    }
    match fs::hard_link(&tmp, path) {
        Ok(()) => {
            // The temp name and the salt file are one inode now: unlink, don't overwrite.
            let _ = fs::remove_file(&tmp);
            sync_dir(dir);
            Ok(salt)
        }
        Err(e) => {
            shred(&tmp);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                read_existing(path)?.ok_or_else(|| SaltError::Damaged(path.into()))
            } else {
                Err(io(path)(e))
            }
        }
    }
}

/// Destroys every salt file of a day before `keep_from`, and stray temp files.
fn destroy_older_than(dir: &Path, keep_from: Day) -> Result<(), SaltError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let expired = match name.strip_suffix(".salt").map(str::parse::<Day>) {
            Some(Ok(day)) => day < keep_from,
            _ => name.starts_with('.') && name.ends_with(".tmp"),
        };
        if expired {
            shred(&entry.path());
            tracing::info!(file = %name, "expired visitor-id salt destroyed");
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Overwrites a file with zeros, syncs, then removes it, so the salt does not linger in the
/// file's old blocks on ordinary (non-copy-on-write) file systems.
fn shred(path: &Path) {
    if let Ok(mut file) = OpenOptions::new().write(true).open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(SALT_LEN as u64);
        let _ = file.write_all(&vec![0u8; len as usize]);
        let _ = file.sync_all();
    }
    let _ = fs::remove_file(path);
}

fn private_create(path: &Path) -> Result<File, SaltError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(io(path))
}

fn restrict_dir(dir: &Path) -> Result<(), SaltError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SaltError + '_ {
    move |source| SaltError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn stable_within_a_day_and_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let day = 20_000;
        let a = SaltStore::open(dir.path(), day).unwrap();
        let id = a.salts_at(day as u64 * 86_400 + 10).unwrap().visitor_id(
            "e.com",
            ip("81.2.69.142"),
            UA,
        );
        let later = a
            .salts_at(day as u64 * 86_400 + 80_000)
            .unwrap()
            .visitor_id("e.com", ip("81.2.69.142"), UA);
        assert_eq!(id, later);
        drop(a);
        let restarted = SaltStore::open(dir.path(), day).unwrap();
        assert_eq!(
            restarted
                .salts_at(day as u64 * 86_400 + 50)
                .unwrap()
                .visitor_id("e.com", ip("81.2.69.142"), UA),
            id
        );
    }

    #[test]
    fn two_collectors_sharing_a_directory_agree() {
        let dir = tempfile::tempdir().unwrap();
        let a = SaltStore::open(dir.path(), 100).unwrap();
        let b = SaltStore::open(dir.path(), 100).unwrap();
        let t = 100 * 86_400 + 5;
        assert_eq!(
            a.salts_at(t)
                .unwrap()
                .visitor_id("e.com", ip("1.2.3.4"), UA),
            b.salts_at(t)
                .unwrap()
                .visitor_id("e.com", ip("1.2.3.4"), UA)
        );
    }

    #[test]
    fn differs_across_days_sites_networks_and_agents() {
        let dir = tempfile::tempdir().unwrap();
        let store = SaltStore::open(dir.path(), 10).unwrap();
        let day10 = store.salts_at(10 * 86_400).unwrap();
        let base = day10.visitor_id("e.com", ip("1.2.3.4"), UA);
        assert_ne!(base, day10.visitor_id("other.com", ip("1.2.3.4"), UA));
        assert_ne!(base, day10.visitor_id("e.com", ip("1.2.3.5"), UA));
        assert_ne!(base, day10.visitor_id("e.com", ip("1.2.3.4"), "curl/8"));
        let day11 = store.salts_at(11 * 86_400).unwrap();
        assert_eq!(day11.day, 11);
        assert_ne!(base, day11.visitor_id("e.com", ip("1.2.3.4"), UA));
        // Yesterday's id is still computable on the next day (visits across midnight)...
        assert_eq!(
            day11.previous_visitor_id("e.com", ip("1.2.3.4"), UA),
            Some(base)
        );
    }

    #[test]
    fn ipv6_privacy_addresses_in_one_64_are_one_visitor() {
        let salts = DailySalts::ephemeral(1);
        assert_eq!(
            salts.visitor_id("e.com", ip("2001:db8:1:2:aaaa::1"), UA),
            salts.visitor_id("e.com", ip("2001:db8:1:2:bbbb:cccc::9"), UA)
        );
        assert_ne!(
            salts.visitor_id("e.com", ip("2001:db8:1:2::1"), UA),
            salts.visitor_id("e.com", ip("2001:db8:1:3::1"), UA)
        );
    }

    #[test]
    fn old_salt_is_nowhere_on_disk_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = SaltStore::open(dir.path(), 500).unwrap();
        let old = *store.salts_at(500 * 86_400).unwrap().today;
        assert!(
            disk_contains(dir.path(), &old),
            "salt is persisted while in use"
        );
        // Next day: still kept for visits crossing midnight.
        let next = store.salts_at(501 * 86_400).unwrap();
        assert_eq!(next.yesterday.as_deref(), Some(&old));
        assert!(disk_contains(dir.path(), &old));
        // Two days on: destroyed, in memory (no longer reachable) and on disk.
        let later = store.salts_at(502 * 86_400).unwrap();
        assert_ne!(later.yesterday.as_deref(), Some(&old));
        assert!(!disk_contains(dir.path(), &old), "old salt still on disk");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.contains(&"500.salt".to_string()), "{names:?}");
        // A restart after a long pause loads no stale salt either.
        drop((store, next, later));
        let reopened = SaltStore::open(dir.path(), 900).unwrap();
        let salts = reopened.salts_at(900 * 86_400).unwrap();
        assert!(salts.yesterday.is_none());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A wall clock that follows tokio's (paused) time from `start`.
    struct PausedClock {
        start_unix: u64,
        start: tokio::time::Instant,
    }

    impl Clock for PausedClock {
        fn unix_now(&self) -> u64 {
            self.start_unix + self.start.elapsed().as_secs()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_collector_destroys_old_salts_on_time() {
        let dir = tempfile::tempdir().unwrap();
        let day = 1_000;
        // 17:00 on `day`: the collector starts, sees one event, then nothing ever again.
        let start_unix = day as u64 * 86_400 + 17 * 3_600;
        let start = tokio::time::Instant::now();
        let clock = Arc::new(PausedClock { start_unix, start });
        let store = Arc::new(SaltStore::open(dir.path(), day).unwrap());
        let old = *store.salts_at(start_unix).unwrap().today;
        let stop = CancellationToken::new();
        let task = tokio::spawn(rotate_daily(store.clone(), clock.clone(), stop.clone()));
        let at = |unix: u64| start + Duration::from_secs(unix - start_unix);

        // During the next day the salt is still kept, as yesterday's (visits across midnight).
        tokio::time::sleep_until(at((day as u64 + 1) * 86_400 + 60)).await;
        let current = store.current.read().unwrap().clone();
        assert_eq!(current.day, day + 1);
        assert_eq!(current.yesterday.as_deref(), Some(&old));
        drop(current);

        // 48 h after its day began (and a minute): gone from memory and disk, with no traffic.
        tokio::time::sleep_until(at((day as u64 + 2) * 86_400 + 60)).await;
        let current = store.current.read().unwrap().clone();
        assert_eq!(current.day, day + 2);
        assert_ne!(*current.today, old);
        assert_ne!(current.yesterday.as_deref(), Some(&old));
        assert!(!disk_contains(dir.path(), &old), "old salt still on disk");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["1001.salt", "1002.salt"]);
        drop(current);

        // A long idle stretch: only the last two days' salts ever exist.
        tokio::time::sleep_until(at((day as u64 + 10) * 86_400 + 60)).await;
        assert_eq!(store.current.read().unwrap().day, day + 10);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);

        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn damaged_salt_file_is_an_error_not_a_new_salt() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("7.salt"), b"short").unwrap();
        let err = SaltStore::open(dir.path(), 7).unwrap_err().to_string();
        assert!(err.contains("7.salt"), "{err}");
    }

    /// Whether any file below `dir` contains `needle` (raw) or its hex form.
    fn disk_contains(dir: &Path, needle: &[u8]) -> bool {
        let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let bytes = fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle)
                    || bytes.windows(hex.len()).any(|w| w == hex.as_bytes())
                {
                    return true;
                }
            }
        }
        false
    }
}
