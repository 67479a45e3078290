//! Where each table lives on a ClickHouse cluster (`clickhouse_cluster`), decided here and
//! nowhere else.
//!
//! **One schema, placed.** The migrations stay the one definition of every table: on a cluster
//! each of their statements is *placed* by [`place`] instead of being run as written.
//! - The tables holding a site's data ([`SHARDED`]: events and the other tables that grow
//!   with traffic) become a `Replicated*MergeTree` table `<name>_local` on every server
//!   (ZooKeeper path per `{shard}`, replica `{replica}`) under a `Distributed` table with
//!   today's name, so that `glimpse.events` is what the collector writes and the query service
//!   and analysts read. Rows are sharded by [`SHARDED`]'s key: one visitor's events on one
//!   shard, so that a visit never spans shards (its rows all carry its first visitor id), and
//!   a question about sessions can be answered per shard (`distributed_product_mode = local`,
//!   see `db::connect`).
//! - Every other table (the site registry, keys, accounts, the audit log, the migrations'
//!   bookkeeping) is small and read on every request: it is a `Replicated*MergeTree` with one
//!   ZooKeeper path for the whole cluster, so every server holds all of it. Reads stay local
//!   (no fan-out, no `GLOBAL IN` when a sharded query looks up a site or key), a write on any
//!   server reaches the others within moments, and any single server can die.
//! - `CREATE` runs `ON CLUSTER` (ClickHouse waits until every server has run it, by default up
//!   to 180 s); `INSERT … SELECT` runs once, on the server Glimpse is connected to (the
//!   replicated tables take it to the others).
//!
//! **Why replay the migrations rather than a separate "final" schema.** A cluster install is
//! always fresh (there is no upgrade from one server to a cluster in place: copy the data with
//! `INSERT … SELECT … FROM remote()`), so it could create the final shape directly; but a
//! second copy of every table's columns would drift. Replaying the same migrations, placed,
//! keeps one definition, and the bookkeeping (`schema_migrations`) works as on one server.
//! A future migration of a shape [`place`] does not know (an `ALTER`) fails the unit test
//! below until it is taught here (an `ALTER` of a sharded table must change `<name>_local`
//! and the `Distributed` table, both `ON CLUSTER`).

use crate::config::ClusterName;

/// The sharded tables and their sharding keys; every other table is replicated to every server.
/// The sites' small tables of counts are sharded by site, like their readers join them
/// (`rollup_daily` with `rollup_days` of the same site on the same shard).
pub const SHARDED: &[(&str, &str)] = &[
    (super::EVENTS_TABLE, "cityHash64(site, visitor_id)"),
    ("dropped_events", "cityHash64(site)"),
    (super::IMPORTED_TABLE, "cityHash64(site)"),
    ("rollup_daily", "cityHash64(site)"),
    ("rollup_days", "cityHash64(site)"),
];

/// The suffix of a sharded table's replicated table on each server.
pub const LOCAL_SUFFIX: &str = "_local";

/// The table that holds a sharded table's rows on each server (`events` → `events_local`), for
/// the statements that must go to the rows themselves (`ALTER … DELETE`, `DROP PARTITION`):
/// the table itself on one server.
pub fn local_table(table: &str, cluster: Option<&ClusterName>) -> String {
    match cluster {
        Some(_) if sharding_key(table).is_some() => format!("{table}{LOCAL_SUFFIX}"),
        _ => table.to_string(),
    }
}

/// The start of an `ALTER TABLE` that changes `table`'s rows (`DELETE`, `DROP PARTITION`)
/// where they are: `<db>.<table>` on one server; on a cluster, for a sharded table (a
/// `Distributed` table holds no rows), `<db>.<table>_local ON CLUSTER <cluster>`, which
/// ClickHouse runs on one replica of each shard and replication takes to the others; for a
/// table replicated to every server the table itself, whose replicas all apply the change.
pub fn alter_table(db: &str, table: &str, cluster: Option<&ClusterName>) -> String {
    match cluster {
        Some(cluster) if sharding_key(table).is_some() => {
            format!("ALTER TABLE {db}.{table}{LOCAL_SUFFIX} ON CLUSTER {cluster}")
        }
        _ => format!("ALTER TABLE {db}.{table}"),
    }
}

/// The sharding key of a sharded table; `None` for a table replicated to every server.
pub fn sharding_key(table: &str) -> Option<&'static str> {
    SHARDED
        .iter()
        .find(|(name, _)| *name == table)
        .map(|(_, key)| *key)
}

/// A migration statement [`place`] cannot put on a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no cluster form for this statement (teach schema::cluster::place): {0}")]
pub struct Unplaced(pub String);

/// The statements that do on cluster `cluster` what `statement` does on one server.
pub fn place(statement: &str, db: &str, cluster: &ClusterName) -> Result<Vec<String>, Unplaced> {
    let unplaced = || Unplaced(statement.chars().take(120).collect());
    if statement == format!("CREATE DATABASE IF NOT EXISTS {db}") {
        return Ok(vec![format!("{statement} ON CLUSTER {cluster}")]);
    }
    if statement.starts_with("INSERT INTO ") {
        return Ok(vec![statement.to_string()]);
    }
    let create = CreateTable::parse(statement, db).ok_or_else(unplaced)?;
    Ok(match sharding_key(create.table) {
        Some(key) => {
            let local = format!("{}{LOCAL_SUFFIX}", create.table);
            let path = format!("/clickhouse/tables/{{shard}}/{db}/{local}");
            vec![
                create.replicated(&local, cluster, &path, "{replica}"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} {columns}) \
                     ENGINE = Distributed({cluster}, {db}, {local}, {key})",
                    table = create.table,
                    columns = create.columns,
                ),
            ]
        }
        // Replica names must be unique per path: `{replica}` alone often repeats per shard.
        None => {
            let path = format!("/clickhouse/tables/all/{db}/{}", create.table);
            vec![create.replicated(create.table, cluster, &path, "{shard}-{replica}")]
        }
    })
}

/// `CREATE TABLE IF NOT EXISTS <db>.<table> (<columns>) ENGINE = <engine>(<args>)<rest>`, the
/// one shape the migrations create tables in.
struct CreateTable<'a> {
    db: &'a str,
    table: &'a str,
    /// From the opening parenthesis to the last column, without the closing parenthesis.
    columns: &'a str,
    engine: &'a str,
    args: &'a str,
    /// `PARTITION BY`, `ORDER BY`, `SETTINGS`.
    rest: &'a str,
}

impl<'a> CreateTable<'a> {
    fn parse(statement: &'a str, db: &'a str) -> Option<Self> {
        let body = statement
            .strip_prefix("CREATE TABLE IF NOT EXISTS ")?
            .strip_prefix(db)?
            .strip_prefix('.')?;
        let (table, after) = body.split_once(' ')?;
        let (columns, engine) = after.rsplit_once(") ENGINE = ")?;
        let (engine, after_engine) = engine.split_once('(')?;
        let (args, rest) = after_engine.split_once(')')?;
        let known = ["MergeTree", "ReplacingMergeTree", "SummingMergeTree"];
        (columns.starts_with('(') && known.contains(&engine)).then_some(Self {
            db,
            table,
            columns,
            engine,
            args,
            rest,
        })
    }

    /// The table as `Replicated<engine>` named `name`, created on every server.
    fn replicated(&self, name: &str, cluster: &ClusterName, path: &str, replica: &str) -> String {
        let args = if self.args.trim().is_empty() {
            String::new()
        } else {
            format!(", {}", self.args)
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} {columns}) \
             ENGINE = Replicated{engine}('{path}', '{replica}'{args}){rest}",
            db = self.db,
            columns = self.columns,
            engine = self.engine,
            rest = self.rest,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{migration_statements, Flavor};

    fn cluster() -> ClusterName {
        ClusterName::parse("c2x2").unwrap()
    }

    #[test]
    fn every_migration_statement_has_a_cluster_form() {
        for flavor in [Flavor::Legacy, Flavor::Modern] {
            for statement in migration_statements(flavor, "glimpse") {
                let placed = place(&statement, "glimpse", &cluster()).unwrap();
                for s in placed.iter().filter(|s| s.starts_with("CREATE TABLE")) {
                    assert!(s.contains(" ON CLUSTER c2x2 "), "{s}");
                    assert!(
                        s.contains("ENGINE = Replicated") || s.contains("ENGINE = Distributed("),
                        "{s}"
                    );
                }
            }
        }
    }

    #[test]
    fn sharded_tables_are_distributed_over_replicated_local_tables() {
        let all = migration_statements(Flavor::Legacy, "glimpse")
            .iter()
            .flat_map(|s| place(s, "glimpse", &cluster()).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains(
            "CREATE TABLE IF NOT EXISTS glimpse.events_local ON CLUSTER c2x2 (\n    site String,"
        ));
        assert!(all.contains(
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/glimpse/events_local', \
             '{replica}')\nPARTITION BY toYYYYMM(timestamp)"
        ));
        assert!(all.contains(
            "ENGINE = Distributed(c2x2, glimpse, events_local, cityHash64(site, visitor_id))"
        ));
        assert!(all.contains(
            "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/glimpse/dropped_events_local', '{replica}')"
        ));
        for (table, _) in SHARDED {
            assert!(
                all.contains(&format!("glimpse.{table} ON CLUSTER c2x2 (")),
                "{table}"
            );
            assert_eq!(
                local_table(table, Some(&cluster())),
                format!("{table}_local")
            );
            assert_eq!(local_table(table, None), *table);
        }
        // Small tables: one path for the whole cluster, every server a replica.
        assert!(all.contains(
            "glimpse.site_registry ON CLUSTER c2x2 (\n    domain String,\n    timezone String,\n    \
             deleted UInt8,\n    version UInt64,\n    changed_at DateTime\n) ENGINE = \
             ReplicatedReplacingMergeTree('/clickhouse/tables/all/glimpse/site_registry', \
             '{shard}-{replica}', version)\nORDER BY domain"
        ));
        assert!(all.contains(
            "CREATE TABLE IF NOT EXISTS glimpse.schema_migrations ON CLUSTER c2x2 (version UInt32, \
             name String, applied_at DateTime) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/glimpse/schema_migrations', '{shard}-{replica}') ORDER BY version"
        ));
        assert!(!all.contains("site_registry_local"));
        assert_eq!(
            local_table("site_registry", Some(&cluster())),
            "site_registry"
        );
        assert!(all.contains("CREATE DATABASE IF NOT EXISTS glimpse ON CLUSTER c2x2"));
    }

    #[test]
    fn alters_go_to_the_rows() {
        let c = cluster();
        assert_eq!(alter_table("g", "events", None), "ALTER TABLE g.events");
        assert_eq!(
            alter_table("g", "events", Some(&c)),
            "ALTER TABLE g.events_local ON CLUSTER c2x2"
        );
        assert_eq!(
            alter_table("g", "site_registry", Some(&c)),
            "ALTER TABLE g.site_registry"
        );
    }

    #[test]
    fn unknown_shapes_are_refused() {
        for statement in [
            "ALTER TABLE glimpse.events ADD COLUMN x UInt8",
            "CREATE TABLE IF NOT EXISTS other.events (x UInt8) ENGINE = MergeTree() ORDER BY x",
            "CREATE TABLE IF NOT EXISTS glimpse.t (x UInt8) ENGINE = Log",
        ] {
            assert!(
                place(statement, "glimpse", &cluster()).is_err(),
                "{statement}"
            );
        }
    }
}
