//! Filtered-traffic counts: how many events were dropped per site, day and reason (bots,
//! opt-outs, spam…), so the dashboard can say "N filtered". Only these aggregates are kept;
//! nothing about the dropped events themselves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Name of the table the counts are summed into.
pub const DROPPED_TABLE: &str = "dropped_events";

/// One count, as stored (`SummingMergeTree` adds rows with the same key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct DroppedRow {
    pub site: String,
    /// Days since the Unix epoch (ClickHouse `Date`).
    pub date: u16,
    pub reason: String,
    pub count: u64,
}

/// Counts accumulated in memory between flushes.
#[derive(Debug, Default)]
pub struct DropCounts {
    counts: Mutex<HashMap<(String, u16, &'static str), u64>>,
}

impl DropCounts {
    pub fn record(&self, site: &str, unix_secs: u32, reason: &'static str) {
        let date = (unix_secs / 86_400) as u16;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((site.to_string(), date, reason)).or_default() += 1;
    }

    /// Takes every count accumulated so far.
    pub fn take(&self) -> Vec<DroppedRow> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .drain()
            .map(|((site, date, reason), count)| DroppedRow {
                site,
                date,
                reason: reason.to_string(),
                count,
            })
            .collect()
    }

    /// Puts counts back after a failed write, so they are not lost.
    pub fn restore(&self, rows: Vec<DroppedRow>) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for row in rows {
            let reason = crate::ingest::pipeline::DropReason::label_from_str(&row.reason);
            *counts.entry((row.site, row.date, reason)).or_default() += row.count;
        }
    }
}

/// Writes the counts to ClickHouse every `interval` and once more when `stop` fires.
pub async fn flush_periodically(
    client: clickhouse::Client,
    counts: std::sync::Arc<DropCounts>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.cancelled() => true,
        };
        let rows = counts.take();
        if !rows.is_empty() {
            if let Err(error) = write(&client, &rows).await {
                tracing::warn!(%error, "filtered-traffic counts not written; will retry");
                counts.restore(rows);
            }
        }
        if stopping {
            return;
        }
    }
}

async fn write(client: &clickhouse::Client, rows: &[DroppedRow]) -> clickhouse::error::Result<()> {
    let mut insert = client.insert::<DroppedRow>(DROPPED_TABLE).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_site_day_and_reason() {
        let counts = DropCounts::default();
        counts.record("a.com", 86_400 * 3 + 5, "bot");
        counts.record("a.com", 86_400 * 3 + 9, "bot");
        counts.record("a.com", 86_400 * 3 + 9, "dnt");
        counts.record("b.com", 86_400 * 4, "bot");
        let mut rows = counts.take();
        rows.sort_by(|x, y| (&x.site, x.date, &x.reason).cmp(&(&y.site, y.date, &y.reason)));
        let summary: Vec<_> = rows
            .iter()
            .map(|r| (r.site.as_str(), r.date, r.reason.as_str(), r.count))
            .collect();
        assert_eq!(
            summary,
            [
                ("a.com", 3, "bot", 2),
                ("a.com", 3, "dnt", 1),
                ("b.com", 4, "bot", 1)
            ]
        );
        assert!(counts.take().is_empty());
        counts.restore(rows);
        assert_eq!(counts.take().len(), 3);
    }
}
