//! Where accepted rows go: a bounded queue drained by one writer task into a [`Sink`].

mod clickhouse;
pub mod drops;
mod queue;
mod writer;

pub use self::clickhouse::{connect, ClickHouseSink};
pub use drops::DropCounts;
pub use queue::{queue, Queue, QueueError};
pub use writer::{spawn_writer, WriterConfig, WriterControl, WriterReport};

use std::future::Future;

use crate::schema::EventRow;

/// Somewhere batches of rows are written. A write either stores the whole batch or fails.
pub trait Sink: Send + Sync + 'static {
    fn write(&self, rows: &[EventRow]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

#[derive(Debug, thiserror::Error)]
#[error("writing {rows} rows failed: {source}")]
pub struct SinkError {
    pub rows: usize,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// An in-memory sink for tests of the HTTP layer and the writer.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    pub rows: std::sync::Arc<std::sync::Mutex<Vec<EventRow>>>,
    /// Batches received, for checking the batching policy.
    pub batches: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    /// While set, writes fail (to exercise retries).
    pub failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Sink for MemorySink {
    async fn write(&self, rows: &[EventRow]) -> Result<(), SinkError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SinkError {
                rows: rows.len(),
                source: "memory sink set to fail".into(),
            });
        }
        self.batches.lock().unwrap().push(rows.len());
        self.rows.lock().unwrap().extend_from_slice(rows);
        Ok(())
    }
}
