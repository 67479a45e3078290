//! Where accepted rows go: a bounded queue drained by one writer task into a [`Sink`].

mod clickhouse;
pub mod dead_letter;
pub mod drops;
mod queue;
mod retry;
pub mod spool;
mod writer;

pub use self::clickhouse::ClickHouseSink;
pub use dead_letter::DeadLetter;
pub use drops::DropCounts;
pub use queue::{queue, Queue, QueueError};
pub use writer::{spawn_writer, WriterConfig, WriterControl, WriterReport};

use std::future::Future;

use glimpse_core::schema::EventRow;

/// Where a handler puts an accepted beacon's rows: the in-memory queue, or the disk spool.
#[derive(Clone)]
pub enum Ingest {
    Memory(Queue),
    Spool(spool::Spool),
}

/// Why rows could not be accepted; each maps to a `503`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("the collector is overloaded; retry later")]
    Overloaded,
    #[error("the spool is full while ClickHouse catches up; retry later")]
    SpoolFull,
    #[error("the collector's disk is full while ClickHouse catches up; retry later")]
    DiskFull,
    #[error("the collector is shutting down; retry later")]
    ShuttingDown,
    #[error("the event could not be stored; retry later")]
    Failed,
}

impl IngestError {
    pub fn label(self) -> &'static str {
        match self {
            IngestError::Overloaded => "queue_full",
            IngestError::SpoolFull => "spool_full",
            IngestError::DiskFull => "disk_full",
            IngestError::ShuttingDown => "shutting_down",
            IngestError::Failed => "spool_write_failed",
        }
    }

    /// Seconds a client should wait before retrying.
    pub fn retry_after_secs(self) -> u32 {
        match self {
            IngestError::Overloaded => 1,
            // Space comes back when the shipper deletes segments ClickHouse has taken.
            IngestError::SpoolFull | IngestError::DiskFull => 30,
            IngestError::ShuttingDown | IngestError::Failed => 5,
        }
    }
}

impl Ingest {
    /// Accepts rows: queued in memory, or durable in the spool, when this returns `Ok`.
    pub async fn submit(&self, rows: Vec<EventRow>) -> Result<(), IngestError> {
        match self {
            Ingest::Memory(queue) => queue.try_push(rows).map_err(|e| match e {
                QueueError::Full => IngestError::Overloaded,
                QueueError::Closed => IngestError::ShuttingDown,
            }),
            Ingest::Spool(spool) => spool.append(rows).await.map_err(|e| match e {
                spool::SpoolError::Full => IngestError::SpoolFull,
                spool::SpoolError::Busy => IngestError::Overloaded,
                spool::SpoolError::Closed => IngestError::ShuttingDown,
                // The appender logged it, once per failed write.
                spool::SpoolError::DiskFull(_) => IngestError::DiskFull,
                other => {
                    tracing::error!(error = %other, "spool write failed");
                    IngestError::Failed
                }
            }),
        }
    }

    /// Whether new events can be accepted now (for `/ready`).
    pub fn has_room(&self) -> bool {
        match self {
            Ingest::Memory(queue) => queue.depth() < queue.capacity(),
            Ingest::Spool(spool) => !spool.is_full() && !spool.disk_full(),
        }
    }

    /// A short description of the buffer for `/ready`.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            Ingest::Memory(queue) => serde_json::json!({"queue_depth": queue.depth()}),
            Ingest::Spool(spool) => serde_json::json!({
                "spool_bytes": spool.bytes(),
                "disk_full": spool.disk_full(),
            }),
        }
    }
}

/// Somewhere batches of rows are written. A write either stores the whole batch or fails, on
/// one server; on a cluster a failed write may have stored the part of some shards (see
/// [`Sink::resend_completes_partial`]).
pub trait Sink: Send + Sync + 'static {
    fn write(&self, rows: &[EventRow]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Writes a batch whose rows carry `batch_id`, asking the store to drop it if it has seen
    /// the same batch before (where the store can).
    fn write_batch(
        &self,
        batch_id: u64,
        rows: &[EventRow],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = batch_id;
        self.write(rows)
    }

    /// How many rows of batch `batch_id` the store holds.
    fn stored_rows(&self, batch_id: u64) -> impl Future<Output = Result<u64, SinkError>> + Send;

    /// Whether sending a batch again stores none of the rows the store already holds from it,
    /// so that a batch stored in part is completed by sending all of it again: true on a
    /// cluster, whose replicated tables recognise each shard's block of a re-sent batch.
    fn resend_completes_partial(&self) -> bool {
        false
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a write (or a question) to the store failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// May succeed later (store unreachable, overloaded, restarting, timed out, or an error
    /// we do not know): retried with backoff, never dropped.
    #[error("{}: {source}", describe(.rows))]
    Transient {
        /// Rows of the failed write; 0 for a failed question (e.g. `stored_rows`).
        rows: usize,
        #[source]
        source: BoxError,
    },
    /// The store refuses this batch as it is (malformed data, a type or column it does not
    /// have…): sending it again cannot help, so it goes to the dead-letter directory.
    #[error("{} for good: {source}", describe(.rows))]
    Permanent {
        rows: usize,
        #[source]
        source: BoxError,
    },
}

fn describe(rows: &usize) -> String {
    if *rows == 0 {
        "asking the store failed".to_string()
    } else {
        format!("writing {rows} rows failed")
    }
}

impl SinkError {
    pub fn transient(rows: usize, source: impl Into<BoxError>) -> Self {
        SinkError::Transient {
            rows,
            source: source.into(),
        }
    }

    pub fn permanent(rows: usize, source: impl Into<BoxError>) -> Self {
        SinkError::Permanent {
            rows,
            source: source.into(),
        }
    }

    /// Whether sending the same thing again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Permanent { .. })
    }

    /// Rows of the failed write; 0 for a failed question.
    pub fn rows(&self) -> usize {
        match self {
            SinkError::Transient { rows, .. } | SinkError::Permanent { rows, .. } => *rows,
        }
    }
}

/// An in-memory sink for tests of the HTTP layer and the writer.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    pub rows: std::sync::Arc<std::sync::Mutex<Vec<EventRow>>>,
    /// Batches received, for checking the batching policy.
    pub batches: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    /// While set, writes fail (to exercise retries).
    pub failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While set, writes fail permanently (a batch the store refuses as it is).
    pub refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Sink for MemorySink {
    async fn write(&self, rows: &[EventRow]) -> Result<(), SinkError> {
        if self.refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SinkError::permanent(
                rows.len(),
                "memory sink set to refuse",
            ));
        }
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SinkError::transient(rows.len(), "memory sink set to fail"));
        }
        self.batches.lock().unwrap().push(rows.len());
        self.rows.lock().unwrap().extend_from_slice(rows);
        Ok(())
    }

    async fn stored_rows(&self, batch_id: u64) -> Result<u64, SinkError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SinkError::transient(0, "memory sink set to fail"));
        }
        let rows = self.rows.lock().unwrap();
        Ok(rows.iter().filter(|r| r.batch_id == batch_id).count() as u64)
    }
}
