//! What differs between the ClickHouse versions Glimpse runs on, decided from the server's
//! version in this one place. 18.16 (Debian's package) lacks TTL and needs an experimental
//! setting for `LowCardinality`, a setting current versions reject as unknown.

use std::fmt;

/// A ClickHouse server version as reported by `SELECT version()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// Parses `18.16.1`, `25.8.2.29` and the like.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self { major, minor })
    }

    pub fn flavor(self) -> Flavor {
        // 19.x made LowCardinality non-experimental and added TTL (19.6); every release since
        // 20.1 has both, so we call 20+ "modern" and treat anything older like 18.16.
        if self.major >= 20 {
            Flavor::Modern
        } else {
            Flavor::Legacy
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The SQL dialect a server speaks, as far as Glimpse's DDL and queries care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// ClickHouse before 20.1, e.g. Debian's 18.16: no TTL, no LowCardinality by default.
    Legacy,
    /// ClickHouse 20.1 and later (tested with 26.x via chdb).
    Modern,
}

impl Flavor {
    /// The column type for a short, often-repeated string (browser, country, …).
    pub fn low_cardinality_string(self) -> &'static str {
        match self {
            // Plain String on 18.16 rather than enabling an experimental type there.
            Flavor::Legacy => "String",
            Flavor::Modern => "LowCardinality(String)",
        }
    }

    /// Settings of the events table. Current versions deduplicate a re-sent insert with the
    /// same `insert_deduplication_token` on plain MergeTree only with this window; 18.16 has
    /// neither (the spool checks `batch_id` before re-sending instead).
    pub fn events_table_settings(self) -> &'static str {
        match self {
            Flavor::Legacy => "",
            Flavor::Modern => "\nSETTINGS non_replicated_deduplication_window = 1000",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            ServerVersion::parse("18.16.1"),
            Some(ServerVersion {
                major: 18,
                minor: 16
            })
        );
        assert_eq!(
            ServerVersion::parse("26.9.2.1\n").map(ServerVersion::flavor),
            Some(Flavor::Modern)
        );
        assert_eq!(
            ServerVersion::parse("19.17.4.11").map(ServerVersion::flavor),
            Some(Flavor::Legacy)
        );
        assert_eq!(ServerVersion::parse("garbage"), None);
        assert_eq!(ServerVersion::parse(""), None);
    }
}
