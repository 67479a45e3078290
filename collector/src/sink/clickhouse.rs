//! The ClickHouse sink: one `INSERT … FORMAT RowBinary` per batch, and which of ClickHouse's
//! errors are worth retrying.

use std::sync::{Arc, OnceLock};

use super::{Sink, SinkError};
use glimpse_core::db::server_error::server_code;
use glimpse_core::schema::{EventRow, Flavor, EVENTS_TABLE};

/// Writes batches into the events table of one database.
#[derive(Clone)]
pub struct ClickHouseSink {
    client: clickhouse::Client,
    /// The server's flavor once migrations have detected it (decides deduplication tokens).
    flavor: Arc<OnceLock<Flavor>>,
    /// On a cluster: the events are in replicated tables, which recognise a re-sent block.
    replicated: bool,
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
            replicated: false,
        }
    }

    /// For a cluster (`clickhouse_cluster`): the events table is `Distributed` over replicated
    /// tables, so a batch whose insert reached only some shards is completed by sending it
    /// again (each shard's replicated table drops the block it already has).
    pub fn on_cluster(mut self, cluster: bool) -> Self {
        self.replicated = cluster;
        self
    }
}

impl ClickHouseSink {
    /// A failed request as a [`SinkError`] of the right kind.
    fn error(&self, rows: usize, error: clickhouse::error::Error) -> SinkError {
        // Until migrations have run (at the first start, or the start of an upgrade that adds
        // a column), a missing database, table or column is what they are about to create:
        // wait for them instead of setting batches aside.
        if self.flavor.get().is_some() && is_permanent(&error) {
            SinkError::permanent(rows, error)
        } else {
            SinkError::transient(rows, error)
        }
    }

    async fn insert(&self, rows: &[EventRow], token: Option<u64>) -> Result<(), SinkError> {
        let fail = |e| self.error(rows.len(), e);
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

    fn resend_completes_partial(&self) -> bool {
        self.replicated
    }

    async fn stored_rows(&self, batch_id: u64) -> Result<u64, SinkError> {
        let fail = |e| self.error(0, e);
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

/// ClickHouse error codes that say the data or its shape is wrong: the same insert fails
/// again however often it is sent. Every other code (network, timeouts, `TOO_MANY_PARTS`,
/// memory limits, authentication, a query id still running…) is transient — and so is a
/// missing table or database (`UNKNOWN_TABLE` 60, `UNKNOWN_DATABASE` 81): that is the
/// server's state, not the batch's fault (a table detached for maintenance, a restore under
/// way), and the same batch lands once it is back (`tests/durability.rs` detaches the table).
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    8,   // THERE_IS_NO_COLUMN
    10,  // NOT_FOUND_COLUMN_IN_BLOCK
    16,  // NO_SUCH_COLUMN_IN_TABLE
    20,  // NUMBER_OF_COLUMNS_DOESNT_MATCH
    25,  // CANNOT_PARSE_ESCAPE_SEQUENCE
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    62,  // SYNTAX_ERROR
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    130, // CANNOT_READ_ARRAY_FROM_TEXT
    131, // TOO_LARGE_STRING_SIZE
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    469, // VIOLATED_CONSTRAINT
];

/// Whether ClickHouse refused the request for a reason that sending it again cannot cure.
/// When in doubt, no: a transient error is retried, never dropped.
fn is_permanent(error: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match error {
        Error::BadResponse(text) => {
            server_code(text).is_some_and(|code| PERMANENT_CODES.contains(&code))
                && !is_from_another_server(text)
        }
        Error::SchemaMismatch(_) => true,
        _ => false,
    }
}

/// Whether the exception is one a server relayed from another server of the cluster: a
/// `Distributed` insert whose connection to a shard's replica broke (the replica was killed)
/// fails with `ATTEMPT_TO_READ_AFTER_EOF` (32) or `CANNOT_READ_ALL_DATA` (33) "while receiving
/// packet from" it — the codes of a truncated batch, but the batch is fine and the same insert
/// succeeds through the next replica. Setting it aside lost acknowledged rows (issue 19).
fn is_from_another_server(text: &str) -> bool {
    text.contains("while receiving packet from")
}

#[cfg(test)]
mod tests {
    use clickhouse::error::Error;

    use super::*;

    fn bad(text: &str) -> Error {
        Error::BadResponse(text.to_string())
    }

    #[test]
    fn data_and_shape_errors_are_permanent() {
        for text in [
            "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \\t before: x",
            "Code: 27. DB::Exception: Cannot parse input: expected '\\t' before: 'x'. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)",
            "Code: 53, e.displayText() = DB::Exception: Type mismatch, e.what() = DB::Exception",
            "Code: 53. DB::Exception: Type mismatch. (TYPE_MISMATCH) (version 26.1.1.1)",
            "Code: 16, e.displayText() = DB::Exception: No such column x in table glimpse.events",
            "Code: 16. DB::Exception: No such column x in table glimpse.events. (NO_SUCH_COLUMN_IN_TABLE)",
            "Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position 1",
            "Code: 62. DB::Exception: Syntax error: failed at position 1. (SYNTAX_ERROR)",
            "Code: 117. DB::Exception: Incorrect data. (INCORRECT_DATA)",
            "Code: 33. DB::Exception: Cannot read all data. Bytes read: 3. (CANNOT_READ_ALL_DATA)",
            "Code: 53",
        ] {
            assert!(is_permanent(&bad(text)), "{text}");
        }
        assert!(is_permanent(&Error::SchemaMismatch("x".into())));
    }

    #[test]
    fn everything_else_is_transient() {
        for text in [
            "Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts.",
            "Code: 252. DB::Exception: Too many parts (3001). (TOO_MANY_PARTS)",
            "Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)",
            "Code: 159. DB::Exception: Timeout exceeded. (TIMEOUT_EXCEEDED)",
            "Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)",
            "Code: 216. DB::Exception: Query with id = glimpse-batch-1 is already running. (QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING)",
            "Code: 81. DB::Exception: Database glimpse does not exist. (UNKNOWN_DATABASE)",
            "Code: 60, e.displayText() = DB::Exception: Table glimpse.events doesn't exist.",
            "Code: 60. DB::Exception: Table glimpse.events does not exist. (UNKNOWN_TABLE)",
            "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)",
            "Code: 193, e.displayText() = DB::Exception: Wrong password for user default",
            "Code: 242. DB::Exception: Table is in readonly mode. (TABLE_IS_READ_ONLY)",
            "Poco::Exception. Code: 1000, e.code() = 111, e.displayText() = Connection refused",
            // A shard's replica killed during a `Distributed` insert (18.16's text).
            "Code: 32, e.displayText() = DB::Exception: Attempt to read after eof: while receiving packet from 127.0.0.1:36015: Insertion status:\nWrote 1 blocks and 237 rows on shard 0 replica 0, 127.0.0.1:36015 (average 3 ms per block)\n, e.what() = DB::Exception",
            "Code: 33. DB::Exception: Cannot read all data. Bytes read: 0. Bytes expected: 8.: while receiving packet from 10.0.0.2:9000. (CANNOT_READ_ALL_DATA)",
            "503 Service Unavailable",
            "502 Bad Gateway",
            "400 Bad Request",
            "something nobody has seen before",
        ] {
            assert!(!is_permanent(&bad(text)), "{text}");
        }
        assert!(!is_permanent(&Error::TimedOut));
        assert!(!is_permanent(&Error::Network("connection reset".into())));
        assert!(!is_permanent(&Error::Other("?".into())));
    }

    #[test]
    fn nothing_is_permanent_before_migrations_have_run() {
        let flavor = Arc::new(OnceLock::new());
        let sink = ClickHouseSink::new(clickhouse::Client::default(), "glimpse", flavor.clone());
        let missing_column =
            || bad("Code: 16. DB::Exception: No such column x in table glimpse.events");
        assert!(!sink.error(3, missing_column()).is_permanent());
        flavor.set(Flavor::Legacy).unwrap();
        let error = sink.error(3, missing_column());
        assert!(error.is_permanent());
        assert_eq!(error.rows(), 3);
        assert!(
            error.to_string().contains("writing 3 rows failed for good"),
            "{error}"
        );
    }
}
