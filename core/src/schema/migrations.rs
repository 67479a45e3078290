//! Versioned, idempotent migrations. Each migration's statements may run more than once (two
//! collectors starting together both apply them), so every statement is `IF NOT EXISTS` or
//! otherwise repeatable; `schema_migrations` records what has been applied.

use std::collections::HashSet;

use super::cluster::{self, Unplaced};
use super::{Flavor, ServerVersion};
use crate::config::ClusterName;

/// One schema change, in the order applied.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// The statements for a server flavor and database name.
    pub statements: fn(Flavor, &str) -> Vec<String>,
}

/// Every migration, oldest first. Append; never edit one that has shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create events",
        statements: create_events,
    },
    Migration {
        version: 2,
        name: "create dropped_events",
        statements: create_dropped_events,
    },
    Migration {
        version: 10,
        name: "create api_keys",
        statements: create_api_keys,
    },
    Migration {
        version: 11,
        name: "create sites",
        statements: create_sites,
    },
    Migration {
        version: 12,
        name: "create imported_daily",
        statements: create_imported_daily,
    },
    Migration {
        version: 13,
        name: "create rollup_daily and rollup_days",
        statements: create_rollups,
    },
    Migration {
        version: 14,
        name: "create the live site registry",
        statements: create_site_registry,
    },
    Migration {
        version: 15,
        name: "create accounts",
        statements: create_accounts,
    },
    Migration {
        version: 16,
        name: "create audit_log",
        statements: create_audit_log,
    },
    Migration {
        version: 17,
        name: "create invitations",
        statements: create_invitations,
    },
    Migration {
        version: 18,
        name: "create site_domains",
        statements: create_site_domains,
    },
    Migration {
        version: 19,
        name: "create site_funnels",
        statements: create_site_funnels,
    },
    Migration {
        version: 20,
        name: "create visitor_salts",
        statements: create_visitor_salts,
    },
];

/// The daily visitor-id salts collectors share on a cluster (`clickhouse_cluster` with
/// `salt_key`; one server keeps them in files instead): each collector proposes a salt for a
/// day, sealed with `salt_key`, and every collector uses the proposal with the smallest
/// `proposal` number. Expired days are deleted by a mutation; the files of the parts it
/// replaces are deleted within about a minute (`old_parts_lifetime`, `cleanup_delay_period`:
/// 8 minutes and 30 s by default) rather than lingering. One partition per day: a day's rows
/// never share a part with another day's.
fn create_visitor_salts(_flavor: Flavor, db: &str) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.visitor_salts (
    day UInt32,
    proposal UInt64,
    sealed String,
    proposed_at DateTime
) ENGINE = MergeTree()
PARTITION BY day
ORDER BY (day, proposal)
SETTINGS old_parts_lifetime = 30, cleanup_delay_period = 10, cleanup_delay_period_random_add = 5"
    )]
}

/// Saved funnels (`/api/v1/sites/funnels`): a name per site and its steps as the API's JSON
/// list (`[{"page": "/pricing"}, {"event": "Signup"}]`). Versioned like the site's goals:
/// readers take the newest row per `(site, name)`; saving under a name replaces its steps.
fn create_site_funnels(_flavor: Flavor, db: &str) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.site_funnels (
    site String,
    name String,
    steps String,
    deleted UInt8,
    version UInt64,
    changed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (site, name)"
    )]
}

/// The domain a stored site goes by since it was renamed (`PUT /api/v1/sites/:site_id`
/// `{domain}`). A site's data, goals, links, members and keys stay keyed by the domain it was
/// created with (its id, `site_registry.domain`): renaming is one row here, instant and
/// lossless, with nothing to copy. An empty `domain` means "not renamed" (written when the
/// site is deleted, so a site added again under its id starts with its own name).
fn create_site_domains(_flavor: Flavor, db: &str) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.site_domains (
    site String,
    domain String,
    version UInt64,
    changed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY site"
    )]
}

/// Invitations to a site (`PUT /api/v1/sites/guests` for an e-mail with no user yet): the
/// token only as its BLAKE3 hash, the role it gives, until when it may be accepted. Versioned
/// rows like the accounts' tables: readers take the newest row per `token_hash`; a new token
/// for the same site and e-mail replaces the old one by marking it `deleted`.
fn create_invitations(_flavor: Flavor, db: &str) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.invitations (
    token_hash String,
    site String,
    email String,
    role String,
    expires_at DateTime,
    accepted UInt8,
    deleted UInt8,
    version UInt64,
    changed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY token_hash"
    )]
}

/// Every administrative change (who, what, when, on which site), for owners and site admins
/// to read (`GET /api/v1/sites/audit`). Never visitor data, never a secret: keys and links
/// are named by their ids and names.
fn create_audit_log(_flavor: Flavor, db: &str) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.audit_log (
    time DateTime,
    actor String,
    action String,
    site String,
    detail String,
    request_id String
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (site, time)"
    )]
}

/// Stats API keys, stored only as BLAKE3 hashes of the random keys. Append-only: revoking a
/// key inserts a row with `revoked = 1`, and readers take `max(revoked)` per key.
/// `site = '*'` is an operator key for every site.
fn create_api_keys(_flavor: Flavor, db: &str) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.api_keys (
    key_hash String,
    key_id String,
    site String,
    name String,
    created_at DateTime,
    revoked UInt8
) ENGINE = MergeTree()
ORDER BY (key_hash, created_at)"
    )]
}

/// Accounts (the query service's `accounts` module): users, their roles per site, sign-in
/// sessions and the scope of API keys. Small tables written append-only: every change is a new
/// row with a larger `version` (nanoseconds since the epoch), readers take `argMax(col,
/// version)` per key, and `ReplacingMergeTree` drops superseded rows as it merges. Secrets are
/// never stored: passwords as argon2id PHC strings, session tokens as BLAKE3 hashes. A key with
/// no `api_key_scopes` row has scope `stats` (18.16 cannot add a column to `api_keys` with
/// `IF NOT EXISTS`, so the scope lives beside it).
fn create_accounts(_flavor: Flavor, db: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.users (
    email String,
    password_hash String,
    owner UInt8,
    deleted UInt8,
    version UInt64,
    changed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY email"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.site_members (
    site String,
    email String,
    role String,
    deleted UInt8,
    version UInt64,
    changed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (email, site)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.sessions (
    token_hash String,
    email String,
    created_at DateTime,
    expires_at DateTime,
    revoked UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY token_hash"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.api_key_scopes (
    key_hash String,
    scope String,
    created_at DateTime
) ENGINE = MergeTree()
ORDER BY (key_hash, created_at)"
        ),
    ]
}

/// Sites added with `glimpse site add`, merged by the query service with the configured
/// ones (the configuration wins). The newest row per domain counts.
fn create_sites(_flavor: Flavor, db: &str) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.sites (
    domain String,
    timezone String,
    created_at DateTime
) ENGINE = MergeTree()
ORDER BY (domain, created_at)"
    )]
}

/// The sites, goals and shared links managed at run time (the Sites API, the dashboard,
/// `glimpse site add`), which every collector and query service reloads every few seconds
/// (`crate::registry`). Versioned rows, never updated in place: a change or a deletion appends
/// a row with a higher `version` (nanoseconds since 1970), readers take the newest row per key
/// (`argMax`), and merges drop the older ones. The last statement carries over the sites
/// `glimpse site add` stored before (repeatable: the copies have the same version).
fn create_site_registry(_flavor: Flavor, db: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.site_registry (
    domain String,
    timezone String,
    deleted UInt8,
    version UInt64,
    changed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY domain"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.site_goals (
    site String,
    goal String,
    deleted UInt8,
    version UInt64,
    changed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (site, goal)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.shared_links (
    site String,
    name String,
    token String,
    deleted UInt8,
    version UInt64,
    changed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (site, name)"
        ),
        format!(
            "INSERT INTO {db}.site_registry (domain, timezone, deleted, version, changed_at) \
             SELECT domain, argMax(timezone, created_at), 0, \
             toUInt64(max(created_at)) * 1000000000, max(created_at) \
             FROM {db}.sites GROUP BY domain"
        ),
    ]
}

/// Daily aggregates imported from another analytics product (Plausible's CSV export): one row
/// per site, day, table of the export (`kind`) and that table's dimension values. The stats
/// API adds them to its own figures when asked (`with_imported=true`). No visitor data: the
/// export holds only counts.
fn create_imported_daily(flavor: Flavor, db: &str) -> Vec<String> {
    let lc = flavor.low_cardinality_string();
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.imported_daily (
    site {lc},
    import_id UInt64,
    date Date,
    kind {lc},
    hostname String,
    page String,
    entry_page String,
    exit_page String,
    source String,
    referrer String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    utm_term String,
    utm_content String,
    country {lc},
    region {lc},
    device {lc},
    browser {lc},
    browser_version {lc},
    os {lc},
    os_version {lc},
    name String,
    visitors UInt64,
    visits UInt64,
    pageviews UInt64,
    bounces UInt64,
    visit_duration UInt64,
    events UInt64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (site, kind, date)"
    )]
}

/// Per-day figures the query service derives from `events` so that long periods need not be
/// read row by row (`glimpse_query::rollup`). A day is a UTC day of visit starts, which is also
/// the day of the visitor-id salt: visitor ids of different days never meet, so visitors of
/// whole days add up exactly. `rollup_daily` holds one row per site, day, build (`version`),
/// property (`''` for the totals) and key; `rollup_days` says which build of a day is complete
/// and of which events (`rows`, `checksum`), so readers never see half a build and the job can
/// tell when the events changed. Counts only: no visitor data.
fn create_rollups(flavor: Flavor, db: &str) -> Vec<String> {
    let lc = flavor.low_cardinality_string();
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.rollup_daily (
    site {lc},
    property {lc},
    day Date,
    version UInt64,
    key String,
    visitors UInt64,
    pageviews UInt64,
    events UInt64,
    visits UInt64,
    visit_pageviews UInt64,
    bounces Int64,
    duration UInt64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (site, property, day, version, key)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.rollup_days (
    site {lc},
    day Date,
    version UInt64,
    rows UInt64,
    checksum UInt64
) ENGINE = MergeTree()
ORDER BY (site, day, version)"
        ),
    ]
}

/// Filtered-traffic counts per site, day and reason; rows with one key are summed by merges,
/// so readers use `sum(count)`.
fn create_dropped_events(flavor: Flavor, db: &str) -> Vec<String> {
    let lc = flavor.low_cardinality_string();
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.dropped_events (
    site {lc},
    date Date,
    reason {lc},
    count UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (site, date, reason)"
    )]
}

fn create_events(flavor: Flavor, db: &str) -> Vec<String> {
    let lc = flavor.low_cardinality_string();
    let settings = flavor.events_table_settings();
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.events (
    site {lc},
    timestamp DateTime,
    name {lc},
    hostname {lc},
    pathname String,
    entry_page String,
    referrer String,
    referrer_source {lc},
    utm_source {lc},
    utm_medium {lc},
    utm_campaign {lc},
    utm_term String,
    utm_content String,
    visit_referrer String,
    visit_referrer_source {lc},
    visit_utm_source {lc},
    visit_utm_medium {lc},
    visit_utm_campaign {lc},
    visit_utm_term String,
    visit_utm_content String,
    visitor_id UInt64,
    session_id UInt64,
    visit_start DateTime,
    visit_entry UInt8,
    visit_bounce Int8,
    visit_duration UInt32,
    browser {lc},
    browser_version {lc},
    os {lc},
    os_version {lc},
    device {lc},
    country {lc},
    region {lc},
    city {lc},
    screen_width UInt16,
    ip_prefix String,
    interactive UInt8,
    scroll_depth UInt8,
    engagement_ms UInt32,
    prop_keys Array(String),
    prop_values Array(String),
    batch_id UInt64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(timestamp)
ORDER BY (site, toDate(timestamp), name, visitor_id, timestamp){settings}"
    )]
}

/// The statements that create the database and the bookkeeping table.
fn bootstrap_statements(db: &str) -> Vec<String> {
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
             (version UInt32, name String, applied_at DateTime) \
             ENGINE = MergeTree() ORDER BY version"
        ),
    ]
}

/// Every statement a fresh install runs, in order: for checking the DDL on other servers.
pub fn migration_statements(flavor: Flavor, db: &str) -> Vec<String> {
    let mut all = bootstrap_statements(db);
    for m in MIGRATIONS {
        all.extend((m.statements)(flavor, db));
    }
    all
}

/// [`migration_statements`] for one server (`cluster` unset) or placed on a cluster
/// (`schema::cluster`).
pub fn migration_statements_on(
    flavor: Flavor,
    db: &str,
    cluster: Option<&ClusterName>,
) -> Result<Vec<String>, Unplaced> {
    placed(migration_statements(flavor, db), db, cluster)
}

/// `statements` as they run where the tables live.
fn placed(
    statements: Vec<String>,
    db: &str,
    cluster: Option<&ClusterName>,
) -> Result<Vec<String>, Unplaced> {
    let Some(cluster) = cluster else {
        return Ok(statements);
    };
    let mut all = Vec::new();
    for statement in statements {
        all.extend(cluster::place(&statement, db, cluster)?);
    }
    Ok(all)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot ask ClickHouse for its version: {0}")]
    Version(#[source] clickhouse::error::Error),
    #[error("ClickHouse reported a version Glimpse cannot read: {0:?}")]
    UnknownVersion(String),
    #[error("migration {version} ({name}) failed: {source}")]
    Statement {
        version: u32,
        name: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("cannot read or record applied migrations: {0}")]
    Bookkeeping(#[source] clickhouse::error::Error),
    #[error("migration {version} ({name}) cannot run on a cluster: {source}")]
    Unplaced {
        version: u32,
        name: &'static str,
        #[source]
        source: Unplaced,
    },
}

/// Asks the server for its version.
pub async fn server_version(
    client: &clickhouse::Client,
) -> Result<(ServerVersion, String), MigrationError> {
    let text: String = client
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(MigrationError::Version)?;
    let version =
        ServerVersion::parse(&text).ok_or_else(|| MigrationError::UnknownVersion(text.clone()))?;
    Ok((version, text))
}

/// Brings database `db` on one server up to the latest schema. `client` must not be bound to
/// `db` (it may not exist yet). Returns the server's flavor.
pub async fn migrate(client: &clickhouse::Client, db: &str) -> Result<Flavor, MigrationError> {
    migrate_on(client, db, None).await
}

/// Brings database `db` up to the latest schema, on one server or, with `cluster`, on every
/// server of that cluster (`schema::cluster`; `client` may be connected to any of them).
/// `client` must not be bound to `db` (it may not exist yet). Returns the server's flavor.
pub async fn migrate_on(
    client: &clickhouse::Client,
    db: &str,
    cluster: Option<&ClusterName>,
) -> Result<Flavor, MigrationError> {
    let (version, text) = server_version(client).await?;
    let flavor = version.flavor();
    tracing::info!(server_version = %text, ?flavor, cluster = ?cluster.map(ClusterName::as_str), "ClickHouse version detected");

    // A fresh install creates the database and the bookkeeping first; later starts skip that,
    // because on a cluster it is `ON CLUSTER` DDL, which waits for every server (a server that
    // is down would hold up every start). Asked of `system.tables`: a query of a missing table
    // is an exception, after which ClickHouse 18.16 may drop the connection under the next
    // request.
    let bookkeeping: u64 = client
        .query(
            "SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'",
        )
        .bind(db)
        .fetch_one()
        .await
        .map_err(MigrationError::Bookkeeping)?;
    if bookkeeping == 0 {
        let bootstrap = placed(bootstrap_statements(db), db, cluster).map_err(|source| {
            MigrationError::Unplaced {
                version: 0,
                name: "bootstrap",
                source,
            }
        })?;
        for statement in bootstrap {
            client.query(&statement).execute().await.map_err(|source| {
                MigrationError::Statement {
                    version: 0,
                    name: "bootstrap",
                    source,
                }
            })?;
        }
    }
    let applied = applied_versions(client, db)
        .await
        .map_err(MigrationError::Bookkeeping)?;

    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tracing::info!(version = m.version, name = m.name, "applying migration");
        let statements = placed((m.statements)(flavor, db), db, cluster).map_err(|source| {
            MigrationError::Unplaced {
                version: m.version,
                name: m.name,
                source,
            }
        })?;
        for statement in statements {
            client.query(&statement).execute().await.map_err(|source| {
                MigrationError::Statement {
                    version: m.version,
                    name: m.name,
                    source,
                }
            })?;
        }
        client
            .query(&format!(
                "INSERT INTO {db}.schema_migrations (version, name, applied_at) \
                 VALUES (?, ?, now())"
            ))
            .bind(m.version)
            .bind(m.name)
            .execute()
            .await
            .map_err(MigrationError::Bookkeeping)?;
    }
    Ok(flavor)
}

/// The versions recorded as applied (on a cluster: in the connected server's replica).
async fn applied_versions(
    client: &clickhouse::Client,
    db: &str,
) -> Result<HashSet<u32>, clickhouse::error::Error> {
    Ok(client
        .query(&format!("SELECT version FROM {db}.schema_migrations"))
        .fetch_all::<u32>()
        .await?
        .into_iter()
        .collect())
}

/// The newest version `db` has applied (0 for none), for readiness checks.
pub async fn applied_version(
    client: &clickhouse::Client,
    db: &str,
) -> Result<u32, clickhouse::error::Error> {
    client
        .query(&format!("SELECT max(version) FROM {db}.schema_migrations"))
        .fetch_one::<u32>()
        .await
}

/// The newest migration version, which a fully migrated database has applied.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(latest_version(), *versions.last().unwrap());
    }

    #[test]
    fn flavors_differ_only_where_they_must() {
        let legacy = migration_statements(Flavor::Legacy, "glimpse").join("\n");
        let modern = migration_statements(Flavor::Modern, "glimpse").join("\n");
        assert!(!legacy.contains("LowCardinality"));
        assert!(modern.contains("LowCardinality(String)"));
        assert_eq!(
            legacy,
            modern
                .replace("LowCardinality(String)", "String")
                .replace(Flavor::Modern.events_table_settings(), ""),
            "legacy DDL should be the modern DDL minus LowCardinality and table settings"
        );
    }

    #[test]
    fn every_row_field_is_a_column() {
        let ddl = migration_statements(Flavor::Modern, "glimpse").join("\n");
        let events = <super::super::EventRow as clickhouse::Row>::COLUMN_NAMES;
        let imported = <super::super::ImportedRow as clickhouse::Row>::COLUMN_NAMES;
        for field in events.iter().chain(imported) {
            assert!(
                ddl.contains(&format!("\n    {field} ")),
                "no column {field}"
            );
        }
    }
}
