//! The ClickHouse sink: one `INSERT … FORMAT RowBinary` per batch.

use std::sync::{Arc, OnceLock};

use super::{Sink, SinkError};
use glimpse_core::schema::{EventRow, Flavor, EVENTS_TABLE};

/// Writes batches into the events table of one database.
#[derive(Clone)]
pub struct ClickHouseSink {
    client: clickhouse::Client,
    /// The server's flavor once migrations have detected it (decides deduplication tokens).
    flavor: Arc<OnceLock<Flavor>>,
}

/// How long `stored_rows` waits for a running insert of the batch to finish; past it the
/// count is taken anyway (and a re-send with the same query id is refused while it runs).
const RUNNING_INSERT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The query id of a batch's inserts.
fn batch_query_id(batch_id: u64) -> String {
    format!("glimpse-batch-{batch_id:016x}")
}

impl ClickHouseSink {
    pub fn new(client: clickhouse::Client, database: &str, flavor: Arc<OnceLock<Flavor>>) -> Self {
        Self {
            client: client.with_database(database),
            flavor,
        }
    }
}

impl ClickHouseSink {
    async fn insert(&self, rows: &[EventRow], token: Option<u64>) -> Result<(), SinkError> {
        let fail = |e: clickhouse::error::Error| SinkError {
            rows: rows.len(),
            source: Box::new(e),
        };
        // A whole batch is one block (far below max_insert_block_size), so ClickHouse
        // stores all of it or none of it. Its query id names the batch: ClickHouse refuses a
        // second query with the id of one still running, and `stored_rows` waits for it.
        let client = match token {
            Some(batch_id) => self
                .client
                .clone()
                .with_setting("query_id", batch_query_id(batch_id)),
            None => self.client.clone(),
        };
        let mut insert = client
            .insert::<EventRow>(EVENTS_TABLE)
            .await
            .map_err(fail)?;
        if let (Some(token), Some(Flavor::Modern)) = (token, self.flavor.get()) {
            insert = insert.with_setting("insert_deduplication_token", token.to_string());
        }
        for row in rows {
            insert.write(row).await.map_err(fail)?;
        }
        insert.end().await.map_err(fail)
    }
}

impl Sink for ClickHouseSink {
    async fn write(&self, rows: &[EventRow]) -> Result<(), SinkError> {
        self.insert(rows, None).await
    }

    async fn write_batch(&self, batch_id: u64, rows: &[EventRow]) -> Result<(), SinkError> {
        self.insert(rows, Some(batch_id)).await
    }

    async fn stored_rows(&self, batch_id: u64) -> Result<u64, SinkError> {
        let fail = |e: clickhouse::error::Error| SinkError {
            rows: 0,
            source: Box::new(e),
        };
        // An insert of this batch by a process that died (or an attempt whose answer was
        // lost) can still be running in ClickHouse and land after a count of 0: wait until
        // none is, so the count is final.
        let deadline = tokio::time::Instant::now() + RUNNING_INSERT_WAIT;
        loop {
            let running = self
                .client
                .query("SELECT count() FROM system.processes WHERE query_id = ?")
                .bind(batch_query_id(batch_id))
                .fetch_one::<u64>()
                .await
                .map_err(fail)?;
            if running == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.client
            .query(&format!(
                "SELECT count() FROM {EVENTS_TABLE} WHERE batch_id = ?"
            ))
            .bind(batch_id)
            .fetch_one::<u64>()
            .await
            .map_err(fail)
    }
}
