//! A visitor's own data: the rows recorded under the pseudonymous ids their browser has today
//! and yesterday (the only days on which they can be linked at all), for access, export and
//! erasure from that browser. Nobody can ask for another visitor's rows: the ids are computed
//! from the request's own address and user agent, never taken from the request.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ingest::pseudonym::DailySalts;

/// What a visitor sees of one of their events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct VisitorEvent {
    pub site: String,
    /// Unix seconds, UTC.
    pub timestamp: u32,
    pub name: String,
    pub hostname: String,
    pub pathname: String,
    pub referrer_source: String,
    pub browser: String,
    pub os: String,
    pub device: String,
    pub country: String,
    pub region: String,
    pub city: String,
}

/// The ids a visitor has on each site: today's and yesterday's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitorKeys {
    pub by_site: Vec<(String, Vec<u64>)>,
    /// Start of yesterday (UTC): nothing older can belong to these ids.
    pub since: u32,
}

pub fn keys(sites: &[String], salts: &DailySalts, ip: IpAddr, user_agent: &str) -> VisitorKeys {
    let by_site = sites
        .iter()
        .map(|site| {
            let mut ids = vec![salts.visitor_id(site, ip, user_agent)];
            ids.extend(salts.previous_visitor_id(site, ip, user_agent));
            (site.clone(), ids)
        })
        .collect();
    VisitorKeys {
        by_site,
        since: (salts.day.saturating_sub(1)) * 86_400,
    }
}

fn condition(ids: &[u64]) -> String {
    // Ids are numbers we computed, never text from the request.
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("visitor_id IN ({})", list.join(", "))
}

/// The visitor's events, oldest first.
pub async fn fetch(
    client: &clickhouse::Client,
    db: &str,
    keys: &VisitorKeys,
) -> Result<Vec<VisitorEvent>, clickhouse::error::Error> {
    let mut all = Vec::new();
    for (site, ids) in &keys.by_site {
        let rows: Vec<VisitorEvent> = client
            .query(&format!(
                "SELECT ?fields FROM {db}.events WHERE site = ? AND {} \
                 AND timestamp >= toDateTime(?) ORDER BY timestamp",
                condition(ids)
            ))
            .bind(site)
            .bind(keys.since)
            .fetch_all()
            .await?;
        all.extend(rows);
    }
    all.sort_by_key(|r| r.timestamp);
    Ok(all)
}

/// Schedules deletion of the visitor's events; returns how many there were.
pub async fn erase(
    client: &clickhouse::Client,
    db: &str,
    keys: &VisitorKeys,
) -> Result<u64, clickhouse::error::Error> {
    let mut total = 0;
    for (site, ids) in &keys.by_site {
        let n: u64 = client
            .query(&format!(
                "SELECT count() FROM {db}.events WHERE site = ? AND {} AND timestamp >= toDateTime(?)",
                condition(ids)
            ))
            .bind(site)
            .bind(keys.since)
            .fetch_one()
            .await?;
        if n > 0 {
            client
                .query(&format!(
                    "ALTER TABLE {db}.events DELETE WHERE site = ? AND {} AND timestamp >= toDateTime(?)",
                    condition(ids)
                ))
                .bind(site)
                .bind(keys.since)
                .execute()
                .await?;
            total += n;
        }
    }
    Ok(total)
}
