//! A visitor's own data: the rows recorded under the pseudonymous ids their browser has today
//! and yesterday (the only days on which they can be linked at all), for access, export and
//! erasure from that browser. Nobody can ask for another visitor's rows: the ids are computed
//! from the request's own address and user agent, never taken from the request.
//!
//! Everyone behind the same address with the same browser (an office, a household, a carrier
//! NAT, an IPv6 /64) has the same ids, so by default a visitor is shown a [`SiteSummary`] per
//! site (how many events on which days), computed by ClickHouse: no page, referrer or time
//! even leaves the database. The event list ([`fetch`]) is for `visitor_data_detail = "full"`.
//!
//! Erasures are queued ([`EraseQueue`]) and sent as one `ALTER TABLE … DELETE` for all the
//! requests of a short interval: each mutation rewrites data parts, so one per request would
//! let a burst of requests keep ClickHouse busy.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::ingest::pseudonym::DailySalts;
use glimpse_core::config::ClusterName;
use glimpse_core::schema::cluster::alter_table;

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

/// The summary of one site's `ids`; binds: the site, then the first second that counts.
/// Day numbers since 1970 (UTC) rather than toDate(): independent of the server's time zone.
pub fn summary_sql(db: &str, ids: &[u64]) -> String {
    format!(
        "SELECT countIf(name = 'pageview') AS pageviews, \
         countIf(name = 'engagement') AS engagement_reports, \
         countIf(name NOT IN ('pageview', 'engagement')) AS other_events, \
         uniqExact(intDiv(toUInt32(timestamp), 86400)) AS days, \
         toUInt32(min(intDiv(toUInt32(timestamp), 86400))) AS first_day, \
         toUInt32(max(intDiv(toUInt32(timestamp), 86400))) AS last_day \
         FROM {db}.events WHERE site = ? AND {} AND timestamp >= toDateTime(?)",
        condition(ids)
    )
}

/// One mutation deleting the events of `pairs` `(site, visitor id)` pairs; binds: each pair's
/// site and id, then the first second that counts.
/// On a cluster, the mutation runs on every shard.
pub fn erase_sql(db: &str, cluster: Option<&ClusterName>, pairs: usize) -> String {
    let tuples = vec!["(?, ?)"; pairs].join(", ");
    format!(
        "{} DELETE WHERE (site, visitor_id) IN ({tuples}) AND timestamp >= toDateTime(?)",
        alter_table(db, "events", cluster)
    )
}

/// How much one site holds about a visitor, at day granularity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteSummary {
    pub site: String,
    pub pageviews: u64,
    /// Time-on-page and scroll reports sent when a page is left.
    pub engagement_reports: u64,
    /// Custom events (sign-ups, downloads, outbound links…).
    pub other_events: u64,
    /// Distinct UTC days with events (at most two: ids change daily).
    pub days: u64,
    /// First and last of those days, `YYYY-MM-DD` (UTC).
    pub first_day: String,
    pub last_day: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct SummaryRow {
    pageviews: u64,
    engagement_reports: u64,
    other_events: u64,
    days: u64,
    first_day: u32,
    last_day: u32,
}

/// Per site that holds any: how many events of which kind on which days. Aggregated in
/// ClickHouse, so no path, referrer or timestamp is ever read.
pub async fn summary(
    client: &clickhouse::Client,
    db: &str,
    keys: &VisitorKeys,
) -> Result<Vec<SiteSummary>, clickhouse::error::Error> {
    let mut all = Vec::new();
    for (site, ids) in &keys.by_site {
        let row: SummaryRow = client
            .query(&summary_sql(db, ids))
            .bind(site)
            .bind(keys.since)
            .fetch_one()
            .await?;
        if row.pageviews + row.engagement_reports + row.other_events == 0 {
            continue;
        }
        all.push(SiteSummary {
            site: site.clone(),
            pageviews: row.pageviews,
            engagement_reports: row.engagement_reports,
            other_events: row.other_events,
            days: row.days,
            first_day: day(row.first_day),
            last_day: day(row.last_day),
        });
    }
    Ok(all)
}

fn day(number: u32) -> String {
    jiff::Timestamp::from_second(i64::from(number) * 86_400)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// How many events are recorded under the visitor's ids.
pub async fn count(
    client: &clickhouse::Client,
    db: &str,
    keys: &VisitorKeys,
) -> Result<u64, clickhouse::error::Error> {
    let mut total = 0;
    for (site, ids) in &keys.by_site {
        total += client
            .query(&format!(
                "SELECT count() FROM {db}.events WHERE site = ? AND {} AND timestamp >= toDateTime(?)",
                condition(ids)
            ))
            .bind(site)
            .bind(keys.since)
            .fetch_one::<u64>()
            .await?;
    }
    Ok(total)
}

/// What the visitor pages read and erase through: ClickHouse, the database, and the
/// [`EraseQueue`]. Built once when the collector starts and kept in the server's state.
#[derive(Clone)]
pub struct VisitorData {
    client: clickhouse::Client,
    db: String,
    erasures: EraseQueue,
}

impl VisitorData {
    /// Starts the erase queue (one mutation per `erase_interval`).
    pub fn start(
        client: clickhouse::Client,
        db: String,
        cluster: Option<ClusterName>,
        erase_interval: Duration,
    ) -> Self {
        let erasures = EraseQueue::start(client.clone(), db.clone(), cluster, erase_interval);
        Self {
            client,
            db,
            erasures,
        }
    }

    /// See [`summary`].
    pub async fn summary(
        &self,
        keys: &VisitorKeys,
    ) -> Result<Vec<SiteSummary>, clickhouse::error::Error> {
        summary(&self.client, &self.db, keys).await
    }

    /// See [`fetch`].
    pub async fn fetch(
        &self,
        keys: &VisitorKeys,
    ) -> Result<Vec<VisitorEvent>, clickhouse::error::Error> {
        fetch(&self.client, &self.db, keys).await
    }

    /// See [`count`].
    pub async fn count(&self, keys: &VisitorKeys) -> Result<u64, clickhouse::error::Error> {
        count(&self.client, &self.db, keys).await
    }

    /// See [`EraseQueue::erase`].
    pub async fn erase(&self, keys: VisitorKeys) -> Result<(), EraseError> {
        self.erasures.erase(keys).await
    }
}

/// Most erase requests waiting; more get `503` (a flood, not visitors).
const ERASE_QUEUE_CAPACITY: usize = 1024;
/// Most requests in one mutation, which keeps its statement a reasonable size.
const ERASE_BATCH_MAX: usize = 500;

struct EraseRequest {
    keys: VisitorKeys,
    done: oneshot::Sender<Result<(), EraseError>>,
}

/// Why an erase request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EraseError {
    #[error("too many erase requests are waiting")]
    Busy,
    #[error("the erase queue has stopped")]
    Stopped,
    #[error("ClickHouse refused the deletion: {0}")]
    ClickHouse(String),
}

/// Collects erase requests and sends those of each `interval` as one mutation. Cloned by the
/// request handlers; the task ends when the last clone is dropped.
#[derive(Clone)]
pub struct EraseQueue {
    tx: mpsc::Sender<EraseRequest>,
}

impl EraseQueue {
    pub fn start(
        client: clickhouse::Client,
        db: String,
        cluster: Option<ClusterName>,
        interval: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(ERASE_QUEUE_CAPACITY);
        tokio::spawn(run_erasures(rx, client, db, cluster, interval));
        Self { tx }
    }

    /// Waits until ClickHouse has accepted the mutation deleting these ids' events (it keeps
    /// mutations on disk and applies them within moments); at most about one interval later
    /// than a request of its own would have.
    pub async fn erase(&self, keys: VisitorKeys) -> Result<(), EraseError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .try_send(EraseRequest { keys, done })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EraseError::Busy,
                mpsc::error::TrySendError::Closed(_) => EraseError::Stopped,
            })?;
        answer.await.map_err(|_| EraseError::Stopped)?
    }
}

async fn run_erasures(
    mut rx: mpsc::Receiver<EraseRequest>,
    client: clickhouse::Client,
    db: String,
    cluster: Option<ClusterName>,
    interval: Duration,
) {
    while let Some(first) = rx.recv().await {
        // Let the interval's other requests arrive, then take them all.
        tokio::time::sleep(interval).await;
        let mut batch = vec![first];
        while batch.len() < ERASE_BATCH_MAX {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let keys: Vec<&VisitorKeys> = batch.iter().map(|r| &r.keys).collect();
        let result = erase_all(&client, &db, cluster.as_ref(), &keys)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, requests = batch.len(), "visitor erase failed");
                EraseError::ClickHouse(e.to_string())
            });
        metrics::counter!("glimpse_erase_mutations_total").increment(1);
        for request in batch {
            let _ = request.done.send(result.clone());
        }
    }
}

/// One mutation deleting the events of every `(site, id)` in `keys`.
async fn erase_all(
    client: &clickhouse::Client,
    db: &str,
    cluster: Option<&ClusterName>,
    keys: &[&VisitorKeys],
) -> Result<(), clickhouse::error::Error> {
    let pairs: Vec<(&str, u64)> = keys
        .iter()
        .flat_map(|k| k.by_site.iter())
        .flat_map(|(site, ids)| ids.iter().map(move |id| (site.as_str(), *id)))
        .collect();
    let Some(since) = keys.iter().map(|k| k.since).min() else {
        return Ok(());
    };
    if pairs.is_empty() {
        return Ok(());
    }
    let mut query = client.query(&erase_sql(db, cluster, pairs.len()));
    for (site, id) in pairs {
        query = query.bind(site).bind(id);
    }
    query.bind(since).execute().await
}
