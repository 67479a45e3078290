//! The ClickHouse sink: one `INSERT … FORMAT RowBinary` per batch.

use super::{Sink, SinkError};
use crate::config::Config;
use crate::schema::{EventRow, EVENTS_TABLE};

/// A client for the configured ClickHouse, not bound to a database (migrations create it).
///
/// Validation is off: it needs `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 lacks. The
/// row type is checked against the DDL by tests on 18.16 and on current ClickHouse instead.
pub fn connect(config: &Config, url: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_user(&config.clickhouse_user)
        .with_password(&config.clickhouse_password)
        .with_validation(false)
}

/// Writes batches into the events table of one database.
#[derive(Clone)]
pub struct ClickHouseSink {
    client: clickhouse::Client,
}

impl ClickHouseSink {
    pub fn new(client: clickhouse::Client, database: &str) -> Self {
        Self {
            client: client.with_database(database),
        }
    }
}

impl Sink for ClickHouseSink {
    async fn write(&self, rows: &[EventRow]) -> Result<(), SinkError> {
        let fail = |e: clickhouse::error::Error| SinkError {
            rows: rows.len(),
            source: Box::new(e),
        };
        // A whole batch is one block (far below max_insert_block_size), so ClickHouse
        // stores all of it or none of it.
        let mut insert = self
            .client
            .insert::<EventRow>(EVENTS_TABLE)
            .await
            .map_err(fail)?;
        for row in rows {
            insert.write(row).await.map_err(fail)?;
        }
        insert.end().await.map_err(fail)
    }
}
