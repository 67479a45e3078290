//! The daily salts shared through a ClickHouse cluster (`clickhouse_cluster` with `salt_key`),
//! so that collectors with separate data directories give a visitor the same id.
//!
//! **Agreement.** A day's salt is chosen among proposals in `visitor_salts` (a table replicated
//! to every server): each collector that finds no proposal for a day inserts one (a random
//! salt and a random `proposal` number), waits [`SharedSalts::settle`] for the other
//! collectors' proposals to replicate, then reads the winner: the proposal with the smallest
//! number. Every collector reads the same winner once it sees the same rows, so two collectors
//! starting at once agree. Tomorrow's salt is agreed [`PREPARE_AHEAD_SECS`] before midnight
//! and kept in memory, so the day starts on the agreed salt even if the cluster is unreachable
//! at midnight. Each minute the collector reads today's winner again: a late proposal (from a
//! collector whose server saw no row) that wins is adopted by everyone within a minute
//! (`glimpse_salt_changes_total`).
//!
//! **Sealing.** The table holds the salt XORed with a keystream derived from `salt_key` (the
//! same on every collector, never in ClickHouse) and a tag that detects a collector with
//! another key; a reader of ClickHouse without the key cannot compute visitor ids. Rows are
//! written as RowBinary, never in a statement's text (which ClickHouse may log).
//!
//! **Destruction.** Days before yesterday are deleted (`ALTER … DELETE`, a mutation) by the
//! first collector to see them each minute; the mutation is replicated to every server, which
//! rewrites its parts without them and deletes the old parts' files after the table's
//! `old_parts_lifetime` (migration 20).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::salt::{random_salt, Day, Salt, SALT_LEN};

/// How long before midnight UTC tomorrow's salt is agreed: time for every collector to see
/// the proposals, and for an unreachable cluster to come back, before the day starts.
pub const PREPARE_AHEAD_SECS: u64 = 2 * 3_600;

const TABLE: &str = "visitor_salts";
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SharedSaltError {
    #[error("visitor_salts in ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error(
        "a salt in visitor_salts was sealed with another salt_key (every collector needs the same)"
    )]
    WrongKey,
    #[error("a salt in visitor_salts is damaged")]
    Damaged,
    #[error("no salt proposal for day {0} is visible after proposing one")]
    NoProposal(Day),
}

#[derive(Debug, Serialize, Deserialize, clickhouse::Row)]
struct ProposalRow {
    day: u32,
    proposal: u64,
    sealed: String,
    proposed_at: u32,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Winner {
    proposal: u64,
    sealed: String,
}

/// The salts of the cluster, as agreed, and the means to agree on more.
pub struct SharedSalts {
    client: clickhouse::Client,
    db: String,
    seal_key: Zeroizing<[u8; 32]>,
    settle: Duration,
    /// The agreed salts this collector knows, by day (yesterday, today, tomorrow at most).
    agreed: Mutex<BTreeMap<Day, Salt>>,
}

/// Never prints the key or the salts.
impl std::fmt::Debug for SharedSalts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSalts")
            .field("db", &self.db)
            .field("settle", &self.settle)
            .finish_non_exhaustive()
    }
}

impl SharedSalts {
    /// `client` reaches any server of the cluster; `salt_key` is the collectors' shared secret.
    pub fn new(client: clickhouse::Client, db: &str, salt_key: &str, settle: Duration) -> Self {
        Self {
            client,
            db: db.to_string(),
            seal_key: Zeroizing::new(blake3::derive_key(
                "glimpse 2026-12 visitor-id salt sealing",
                salt_key.as_bytes(),
            )),
            settle,
            agreed: Mutex::new(BTreeMap::new()),
        }
    }

    /// How long a collector waits after proposing before it reads the winner: longer than
    /// replication between two servers takes, so that it sees every concurrent proposal.
    pub fn settle(&self) -> Duration {
        self.settle
    }

    /// The agreed salt of `day` this collector already knows, without asking ClickHouse.
    pub(crate) fn known(&self, day: Day) -> Option<Salt> {
        self.lock().get(&day).cloned()
    }

    /// Agrees on `day`'s salt: the winner if there are proposals, else this collector's
    /// proposal and, after [`Self::settle`], the winner among all. Remembered in memory.
    pub async fn agree(&self, day: Day) -> Result<Salt, SharedSaltError> {
        let salt = match self.winner(day).await? {
            Some(salt) => salt,
            None => {
                self.propose(day).await?;
                tokio::time::sleep(self.settle).await;
                self.winner(day)
                    .await?
                    .ok_or(SharedSaltError::NoProposal(day))?
            }
        };
        self.lock().insert(day, salt.clone());
        Ok(salt)
    }

    /// Reads `day`'s winner again (no proposal); returns it if it differs from the one known.
    pub(crate) async fn recheck(&self, day: Day) -> Result<Option<Salt>, SharedSaltError> {
        let Some(winner) = self.winner(day).await? else {
            return Ok(None);
        };
        let mut agreed = self.lock();
        if agreed
            .get(&day)
            .is_some_and(|s| s.as_ref() == winner.as_ref())
        {
            return Ok(None);
        }
        agreed.insert(day, winner.clone());
        Ok(Some(winner))
    }

    /// Drops every day before `keep_from` from the cluster and from memory.
    pub async fn destroy_before(&self, keep_from: Day) -> Result<(), SharedSaltError> {
        self.lock().retain(|day, _| *day >= keep_from);
        let expired: Vec<u32> = self
            .client
            .query(&format!(
                "SELECT DISTINCT day FROM {}.{TABLE} WHERE day < ?",
                self.db
            ))
            .bind(keep_from)
            .fetch_all()
            .await?;
        if !expired.is_empty() {
            // A mutation, not `DROP PARTITION`: ClickHouse 18.16 sends a partition drop from a
            // replica that is not the leader to the leader without the cluster's credentials.
            // Replicated to every server through ZooKeeper's log, a server that is down
            // included (it applies it when it comes back).
            self.client
                .query(&format!(
                    "ALTER TABLE {}.{TABLE} DELETE WHERE day < ?",
                    self.db
                ))
                .bind(keep_from)
                .execute()
                .await?;
            tracing::info!(days = ?expired, "expired visitor-id salts deleted from the cluster");
        }
        Ok(())
    }

    async fn winner(&self, day: Day) -> Result<Option<Salt>, SharedSaltError> {
        let row = self
            .client
            .query(&format!(
                "SELECT proposal, sealed FROM {}.{TABLE} WHERE day = ? \
                 ORDER BY proposal, sealed LIMIT 1",
                self.db
            ))
            .bind(day)
            .fetch_optional::<Winner>()
            .await?;
        row.map(|w| self.unseal(day, w.proposal, &w.sealed))
            .transpose()
    }

    async fn propose(&self, day: Day) -> Result<(), SharedSaltError> {
        let salt = random_salt();
        let proposal = getrandom::u64().map_err(|_| SharedSaltError::Damaged)?;
        let row = ProposalRow {
            day,
            proposal,
            sealed: self.seal(day, proposal, &salt),
            proposed_at: glimpse_core::clock::unix_now(),
        };
        // The crate quotes the name whole: the database goes on the client.
        let mut insert = self
            .client
            .clone()
            .with_database(&self.db)
            .insert::<ProposalRow>(TABLE)
            .await?;
        insert.write(&row).await?;
        insert.end().await?;
        Ok(())
    }

    /// `hex(salt XOR keystream ‖ tag)`; the keystream and tag depend on the day and proposal.
    pub fn seal(&self, day: Day, proposal: u64, salt: &[u8; SALT_LEN]) -> String {
        let mut sealed = self.keystream(day, proposal);
        for (byte, s) in sealed.iter_mut().zip(salt) {
            *byte ^= s;
        }
        let tag = self.tag(day, proposal, &sealed);
        let mut hex = String::with_capacity(2 * (SALT_LEN + TAG_LEN));
        for byte in sealed.iter().chain(&tag) {
            hex.push_str(&format!("{byte:02x}"));
        }
        hex
    }

    /// The salt in a sealed text, checked against its tag.
    pub fn unseal(&self, day: Day, proposal: u64, hex: &str) -> Result<Salt, SharedSaltError> {
        let bytes = decode_hex(hex).ok_or(SharedSaltError::Damaged)?;
        if bytes.len() != SALT_LEN + TAG_LEN {
            return Err(SharedSaltError::Damaged);
        }
        let (sealed, tag) = bytes.split_at(SALT_LEN);
        let mut sealed_arr = [0u8; SALT_LEN];
        sealed_arr.copy_from_slice(sealed);
        // Not secret-dependent timing worth guarding: the tag only tells keys apart.
        if self.tag(day, proposal, &sealed_arr) != tag {
            return Err(SharedSaltError::WrongKey);
        }
        let mut salt = self.keystream(day, proposal);
        for (byte, s) in salt.iter_mut().zip(sealed) {
            *byte ^= s;
        }
        Ok(salt)
    }

    fn keystream(&self, day: Day, proposal: u64) -> Salt {
        let mut hasher = blake3::Hasher::new_keyed(&self.seal_key);
        hasher.update(b"keystream");
        hasher.update(&day.to_le_bytes());
        hasher.update(&proposal.to_le_bytes());
        let mut stream = Zeroizing::new([0u8; SALT_LEN]);
        hasher.finalize_xof().fill(stream.as_mut());
        stream
    }

    fn tag(&self, day: Day, proposal: u64, sealed: &[u8; SALT_LEN]) -> [u8; TAG_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.seal_key);
        hasher.update(b"tag");
        hasher.update(&day.to_le_bytes());
        hasher.update(&proposal.to_le_bytes());
        hasher.update(sealed);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_LEN]);
        tag
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Day, Salt>> {
        self.agreed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn decode_hex(hex: &str) -> Option<Zeroizing<Vec<u8>>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(Zeroizing::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salts(key: &str) -> SharedSalts {
        SharedSalts::new(
            clickhouse::Client::default(),
            "glimpse",
            key,
            Duration::ZERO,
        )
    }

    #[test]
    fn sealing_round_trips_hides_the_salt_and_tells_keys_apart() {
        let a = salts("a key of at least thirty-two characters");
        let salt = random_salt();
        let sealed = a.seal(7, 42, &salt);
        assert_eq!(sealed.len(), 2 * (SALT_LEN + TAG_LEN));
        let hex: String = salt.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!sealed.contains(&hex[..16]));
        assert_eq!(*a.unseal(7, 42, &sealed).unwrap(), *salt);
        // Another day or proposal number is another keystream: the tag does not match.
        assert!(matches!(
            a.unseal(8, 42, &sealed),
            Err(SharedSaltError::WrongKey)
        ));
        let b = salts("another key of at least thirty-two characters");
        assert!(matches!(
            b.unseal(7, 42, &sealed),
            Err(SharedSaltError::WrongKey)
        ));
        assert!(matches!(
            a.unseal(7, 42, "zz"),
            Err(SharedSaltError::Damaged)
        ));
    }
}
