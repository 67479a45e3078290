//! The one task that drains the queue into the sink in batches: a batch is flushed when it
//! holds `max_rows` rows or its oldest row has waited `max_delay`. Transient failures are
//! retried with backoff, never dropped while the process may still succeed; a batch ClickHouse
//! refuses for good goes to the dead-letter directory and the writer moves on.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::retry::{retry, Backoff};
use super::{DeadLetter, Sink, SinkError};
use glimpse_core::schema::EventRow;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub max_rows: usize,
    pub max_delay: Duration,
    /// First retry delay after a transient failure; doubles (with jitter) up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Where batches ClickHouse refuses for good go (`<data_dir>/dead-letter`).
    pub dead_letter_dir: std::path::PathBuf,
}

impl WriterConfig {
    pub fn from_config(config: &glimpse_core::config::Config) -> Self {
        Self {
            max_rows: config.collector.batch_max_rows,
            max_delay: config.batch_max_delay(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            dead_letter_dir: config.dead_letter_dir(),
        }
    }
}

/// How the owner steers the writer through shutdown.
#[derive(Debug, Clone, Default)]
pub struct WriterControl {
    /// Stop taking new rows, write what is queued, then finish.
    pub close: CancellationToken,
    /// Give up retrying: the shutdown deadline has passed. Unwritten rows are logged as lost.
    pub abandon: CancellationToken,
}

/// What the writer did, returned when it finishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterReport {
    pub rows_written: u64,
    pub rows_lost: u64,
}

pub fn spawn_writer<S: Sink>(
    sink: S,
    rx: mpsc::Receiver<EventRow>,
    config: WriterConfig,
    control: WriterControl,
) -> JoinHandle<WriterReport> {
    tokio::spawn(run(sink, rx, config, control))
}

async fn run<S: Sink>(
    sink: S,
    mut rx: mpsc::Receiver<EventRow>,
    config: WriterConfig,
    control: WriterControl,
) -> WriterReport {
    let mut report = WriterReport::default();
    let dead_letter = DeadLetter::new(config.dead_letter_dir.clone());
    let mut batch: Vec<EventRow> = Vec::with_capacity(config.max_rows);
    let mut closing = false;
    loop {
        // Wait for the first row of a batch.
        tokio::select! {
            received = rx.recv_many(&mut batch, config.max_rows) => {
                if received == 0 {
                    break; // closed and drained
                }
            }
            _ = control.close.cancelled(), if !closing => {
                closing = true;
                rx.close(); // handlers now get "closed"; queued rows are still received
                continue;
            }
        }
        // Fill it until it is full or old enough.
        let deadline = Instant::now() + config.max_delay;
        while batch.len() < config.max_rows {
            let room = config.max_rows - batch.len();
            tokio::select! {
                biased;
                _ = sleep_until(deadline), if !closing => break,
                received = rx.recv_many(&mut batch, room) => {
                    if received == 0 {
                        break;
                    }
                }
                _ = control.close.cancelled(), if !closing => {
                    closing = true;
                    rx.close();
                }
            }
        }
        metrics::gauge!("glimpse_queue_depth").set(rx.len() as f64);
        match write_with_retry(&sink, &batch, &config, &dead_letter, &control).await {
            Written::Inserted => report.rows_written += batch.len() as u64,
            Written::DeadLettered => {}
            Written::Abandoned => report.rows_lost += batch.len() as u64,
        }
        batch.clear();
    }
    metrics::gauge!("glimpse_queue_depth").set(0.0);
    if report.rows_lost > 0 {
        tracing::error!(
            rows = report.rows_lost,
            "rows were not written before shutdown"
        );
    }
    report
}

/// Where a batch ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Inserted,
    /// Refused for good, and safely in the dead-letter directory.
    DeadLettered,
    /// `abandon` fired before either.
    Abandoned,
}

/// Writes one batch, retrying transient failures with backoff until it succeeds or `abandon`
/// fires; a batch refused for good goes to the dead-letter directory instead.
async fn write_with_retry<S: Sink>(
    sink: &S,
    batch: &[EventRow],
    config: &WriterConfig,
    dead_letter: &DeadLetter,
    control: &WriterControl,
) -> Written {
    let backoff = Backoff {
        initial: config.initial_backoff,
        max: config.max_backoff,
    };
    let attempt = || async {
        let started = std::time::Instant::now();
        let written = sink.write(batch).await;
        if written.is_ok() {
            metrics::histogram!("glimpse_insert_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("glimpse_batches_total").increment(1);
            metrics::counter!("glimpse_rows_written_total").increment(batch.len() as u64);
            tracing::debug!(rows = batch.len(), "batch written");
        } else {
            metrics::counter!("glimpse_insert_errors_total").increment(1);
        }
        written.map(|()| Written::Inserted)
    };
    let set_aside = |error| {
        dead_letter
            .set_aside(batch, error)
            .map(|_| Written::DeadLettered)
    };
    let on_retry = |error: &SinkError, wait: Duration| {
        tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "batch write failed");
    };
    match retry(backoff, &control.abandon, attempt, set_aside, on_retry).await {
        Some(written) => written,
        None => {
            metrics::counter!("glimpse_rows_lost_total").increment(batch.len() as u64);
            Written::Abandoned
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::sink::{queue, MemorySink};

    fn config(max_rows: usize, max_delay_ms: u64) -> WriterConfig {
        WriterConfig {
            max_rows,
            max_delay: Duration::from_millis(max_delay_ms),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            // Only written when a batch is refused for good (tests that do use their own).
            dead_letter_dir: std::env::temp_dir().join("glimpse-writer-tests-dead-letter"),
        }
    }

    fn row(i: u32) -> EventRow {
        EventRow {
            timestamp: i,
            ..EventRow::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_full_batches_at_once() {
        let sink = MemorySink::default();
        let (q, rx) = queue(100);
        let control = WriterControl::default();
        let writer = spawn_writer(sink.clone(), rx, config(10, 60_000), control.clone());
        q.try_push((0..25).map(row).collect()).unwrap();
        // Two full batches go out without waiting for the delay; 5 rows wait.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(*sink.batches.lock().unwrap(), [10, 10]);
        control.close.cancel();
        let report = writer.await.unwrap();
        assert_eq!(*sink.batches.lock().unwrap(), [10, 10, 5]);
        assert_eq!(report.rows_written, 25);
        let stored: Vec<u32> = sink
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.timestamp)
            .collect();
        assert_eq!(stored, (0..25).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_partial_batches_after_the_delay() {
        let sink = MemorySink::default();
        let (q, rx) = queue(100);
        let control = WriterControl::default();
        let _writer = spawn_writer(sink.clone(), rx, config(1000, 500), control.clone());
        q.try_push(vec![row(1), row(2)]).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(sink.batches.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*sink.batches.lock().unwrap(), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_sink_recovers() {
        let sink = MemorySink::default();
        sink.failing.store(true, Ordering::SeqCst);
        let (q, rx) = queue(100);
        let control = WriterControl::default();
        let writer = spawn_writer(sink.clone(), rx, config(10, 10), control.clone());
        q.try_push((0..3).map(row).collect()).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(sink.rows.lock().unwrap().is_empty());
        sink.failing.store(false, Ordering::SeqCst);
        control.close.cancel();
        let report = writer.await.unwrap();
        assert_eq!(report.rows_written, 3);
        assert_eq!(sink.rows.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_refuses_new_rows_but_writes_queued_ones() {
        let sink = MemorySink::default();
        sink.failing.store(true, Ordering::SeqCst);
        let (q, rx) = queue(100);
        let control = WriterControl::default();
        let writer = spawn_writer(sink.clone(), rx, config(2, 10), control.clone());
        q.try_push((0..5).map(row).collect()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        control.close.cancel();
        // Close is seen between writes: once the sink recovers, new rows are refused...
        sink.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            q.try_push(vec![row(9)]),
            Err(crate::sink::QueueError::Closed)
        );
        // ...and every row queued before the close is written.
        let report = writer.await.unwrap();
        assert_eq!(
            report,
            WriterReport {
                rows_written: 5,
                rows_lost: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn abandon_reports_lost_rows() {
        let sink = MemorySink::default();
        sink.failing.store(true, Ordering::SeqCst);
        let (q, rx) = queue(100);
        let control = WriterControl::default();
        let writer = spawn_writer(sink.clone(), rx, config(10, 10), control.clone());
        q.try_push((0..4).map(row).collect()).unwrap();
        control.close.cancel();
        tokio::time::sleep(Duration::from_secs(1)).await;
        control.abandon.cancel();
        let report = writer.await.unwrap();
        assert_eq!(
            report,
            WriterReport {
                rows_written: 0,
                rows_lost: 4
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_dead_lettered_once_and_the_writer_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let sink = MemorySink::default();
        sink.refusing.store(true, Ordering::SeqCst);
        let (q, rx) = queue(100);
        let control = WriterControl::default();
        let mut c = config(3, 10);
        c.dead_letter_dir = dir.path().join("dead-letter");
        let writer = spawn_writer(sink.clone(), rx, c, control.clone());
        q.try_push((0..3).map(row).collect()).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let files: Vec<_> = std::fs::read_dir(dir.path().join("dead-letter"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "one file, not one per retry: {files:?}");
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let timestamps: Vec<u32> = text
            .lines()
            .map(|l| serde_json::from_str::<EventRow>(l).unwrap().timestamp)
            .collect();
        assert_eq!(timestamps, [0, 1, 2]);
        // Later rows are written once the store takes them again.
        sink.refusing.store(false, Ordering::SeqCst);
        q.try_push((3..5).map(row).collect()).unwrap();
        control.close.cancel();
        let report = writer.await.unwrap();
        assert_eq!(
            report,
            WriterReport {
                rows_written: 2,
                rows_lost: 0
            }
        );
        let stored: Vec<u32> = sink
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.timestamp)
            .collect();
        assert_eq!(stored, [3, 4]);
    }
}
