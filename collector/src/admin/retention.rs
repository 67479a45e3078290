//! Retention: events older than their site's `retention_days` are deleted, on every ClickHouse
//! version. Whole monthly partitions in which every site's data has expired are dropped (cheap,
//! immediate); the rest is deleted row-wise per site (`ALTER TABLE … DELETE`, a mutation that
//! ClickHouse applies in the background). The filtered-traffic counts and imported daily
//! aggregates follow the same rule.
//! Runs daily inside the collector and on demand with `glimpse retention apply`.

use std::collections::HashMap;

use serde::Deserialize;

use glimpse_core::config::ClusterName;
use glimpse_core::schema::cluster::alter_table;
use glimpse_core::schema::IMPORTED_TABLE;
use glimpse_core::site::Site;

/// Retention for data of a site no longer configured.
pub const DEFAULT_RETENTION_DAYS: u32 = 180;

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Monthly partitions (`YYYYMM`) dropped from the events table (on a cluster: emptied by
    /// one mutation each).
    pub partitions_dropped: Vec<u32>,
    /// Sites whose older rows were scheduled for deletion, with the number of rows.
    pub rows_scheduled: Vec<(String, u64)>,
    /// Sites whose older imported daily aggregates were scheduled for deletion, with the
    /// number of rows.
    pub imported_rows_scheduled: Vec<(String, u64)>,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct PartitionSite {
    partition: u32,
    site: String,
    newest: u32,
}

/// The oldest timestamp (Unix seconds) a site keeps at `now`: the start of the UTC day
/// `retention_days` ago.
pub fn cutoff(retention_days: u32, now: u32) -> u32 {
    let today = now - now % 86_400;
    today.saturating_sub(retention_days * 86_400)
}

/// Applies retention for `sites` to database `db` (on every shard of `cluster`).
pub async fn apply(
    client: &clickhouse::Client,
    db: &str,
    cluster: Option<&ClusterName>,
    sites: &[Site],
    now: u32,
) -> Result<RetentionReport, clickhouse::error::Error> {
    let days: HashMap<&str, u32> = sites
        .iter()
        .map(|s| (s.domain.as_str(), s.retention_days))
        .collect();
    let cutoff_of = |site: &str| {
        cutoff(
            days.get(site).copied().unwrap_or(DEFAULT_RETENTION_DAYS),
            now,
        )
    };
    let mut report = RetentionReport::default();

    // Partitions in which every site's newest event is past its cutoff.
    let rows: Vec<PartitionSite> = client
        .query(&format!(
            "SELECT toUInt32(toYYYYMM(timestamp)) AS partition, site, \
             toUInt32(max(timestamp)) AS newest FROM {db}.events GROUP BY partition, site"
        ))
        .fetch_all()
        .await?;
    let mut expired: HashMap<u32, bool> = HashMap::new();
    for r in &rows {
        let all = expired.entry(r.partition).or_insert(true);
        *all &= r.newest < cutoff_of(&r.site);
    }
    let mut partitions: Vec<u32> = expired
        .into_iter()
        .filter_map(|(p, all)| all.then_some(p))
        .collect();
    partitions.sort_unstable();
    for partition in &partitions {
        let events = alter_table(db, "events", cluster);
        let statement = match cluster {
            None => format!("{events} DROP PARTITION {partition}"),
            // ClickHouse 18.16 passes a DROP PARTITION that reaches a replica other than the
            // shard's leader on to the leader as user `default` without a password, which a
            // secured cluster refuses; a mutation goes through ZooKeeper instead.
            Some(_) => format!("{events} DELETE WHERE toYYYYMM(timestamp) = {partition}"),
        };
        client.query(&statement).execute().await?;
    }
    report.partitions_dropped = partitions;

    // Row-wise deletes for what remains past each site's cutoff.
    let mut site_names: Vec<String> = rows.iter().map(|r| r.site.clone()).collect();
    let imported_sites: Vec<String> = client
        .query(&format!("SELECT DISTINCT site FROM {db}.{IMPORTED_TABLE}"))
        .fetch_all()
        .await?;
    site_names.extend(imported_sites);
    site_names.sort();
    site_names.dedup();
    for site in site_names {
        let cut = cutoff_of(&site);
        let old: u64 = client
            .query(&format!(
                "SELECT count() FROM {db}.events WHERE site = ? AND timestamp < toDateTime(?)"
            ))
            .bind(&site)
            .bind(cut)
            .fetch_one()
            .await?;
        if old > 0 {
            client
                .query(&format!(
                    "{} DELETE WHERE site = ? AND timestamp < toDateTime(?)",
                    alter_table(db, "events", cluster)
                ))
                .bind(&site)
                .bind(cut)
                .execute()
                .await?;
            report.rows_scheduled.push((site.clone(), old));
        }
        // Daily tables: the filtered-traffic counts and imported aggregates.
        for table in ["dropped_events", IMPORTED_TABLE] {
            let old_days: u64 = client
                .query(&format!(
                    "SELECT count() FROM {db}.{table} WHERE site = ? AND date < toDate(toDateTime(?))"
                ))
                .bind(&site)
                .bind(cut)
                .fetch_one()
                .await?;
            if old_days > 0 {
                client
                    .query(&format!(
                        "{} DELETE WHERE site = ? AND date < toDate(toDateTime(?))",
                        alter_table(db, table, cluster)
                    ))
                    .bind(&site)
                    .bind(cut)
                    .execute()
                    .await?;
                if table == IMPORTED_TABLE {
                    report
                        .imported_rows_scheduled
                        .push((site.clone(), old_days));
                }
            }
        }
    }
    Ok(report)
}

/// Waits until the events of `site` older than `cutoff` that [`apply`] scheduled for deletion
/// are gone (`true`), or `timeout` passes first (`false`): deletes are mutations ClickHouse
/// applies in the background.
pub async fn wait_for_events_deleted(
    client: &clickhouse::Client,
    db: &str,
    site: &str,
    cutoff: u32,
    timeout: std::time::Duration,
) -> Result<bool, clickhouse::error::Error> {
    let sql = format!(
        "SELECT count() FROM {db}.events WHERE site = ? AND timestamp < toDateTime({cutoff})"
    );
    super::wait_until_zero(client, &sql, &[site], timeout).await
}

/// [`wait_for_events_deleted`] for the imported daily aggregates.
pub async fn wait_for_imported_deleted(
    client: &clickhouse::Client,
    db: &str,
    site: &str,
    cutoff: u32,
    timeout: std::time::Duration,
) -> Result<bool, clickhouse::error::Error> {
    let sql = format!(
        "SELECT count() FROM {db}.{IMPORTED_TABLE} WHERE site = ? \
         AND date < toDate(toDateTime({cutoff}))"
    );
    super::wait_until_zero(client, &sql, &[site], timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_the_start_of_a_utc_day() {
        let now = 1_700_000_000; // 2023-11-14 22:13:20 UTC
        assert_eq!(cutoff(0, now), 1_699_920_000);
        assert_eq!(cutoff(1, now), 1_699_920_000 - 86_400);
        assert_eq!(cutoff(180, now), 1_699_920_000 - 180 * 86_400);
    }
}
