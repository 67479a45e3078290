//! The shipper: inserts sealed segments into ClickHouse in order, one segment per insert, and
//! deletes a segment only after the insert succeeded.
//!
//! Exactly once: every row carries its segment's random `batch_id`. A segment's first insert
//! is sent as is (with `insert_deduplication_token` = batch id on current ClickHouse). Any
//! further attempt — a retry after an error whose outcome is unknown, or a replay after a
//! crash — first asks ClickHouse how many rows of that batch it has: all of them means the
//! earlier attempt landed, so the segment is just deleted; none means it is sent again. A batch
//! is one block within one partition (segments never span a UTC day), so ClickHouse stores
//! all of it or none of it, and the count is never partial. An insert of a process killed
//! mid-request can still be running inside ClickHouse and land after a count of 0: inserts
//! carry the batch as their query id, the count waits until no query with it is running, and
//! ClickHouse refuses a second query with the id of a running one. This works on 18.16, which
//! has no deduplication for plain MergeTree tables. On a cluster an insert that failed may
//! have reached some shards: a partly stored batch is sent again whole, and each shard's
//! replicated table recognises the block it already holds (`Sink::resend_completes_partial`).
//!
//! A segment ClickHouse refuses for good (a permanent error) is not retried: its rows go to the
//! dead-letter directory, and only once that file is on disk is the segment deleted. Transient
//! errors are retried with backoff (`sink::retry`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use super::{segment, DiskUsage, SpoolConfig};
use crate::sink::retry::{retry, Backoff};
use crate::sink::{DeadLetter, Sink, SinkError, WriterControl};
use glimpse_core::schema::EventRow;

/// What the shipper did, once it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShipReport {
    pub rows_written: u64,
    /// Segments left on disk at shutdown (ClickHouse unreachable until the deadline); they are
    /// shipped at the next start.
    pub segments_left: u64,
    pub rows_left: u64,
}

/// Short enough that ingest resumes within seconds of ClickHouse coming back.
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(3),
};

pub(super) async fn run<S: Sink>(
    config: SpoolConfig,
    sink: S,
    recovered: Vec<u64>,
    mut sealed: UnboundedReceiver<u64>,
    usage: DiskUsage,
    control: WriterControl,
) -> ShipReport {
    let SpoolConfig {
        dir,
        drain_rows_per_sec,
        dead_letter_dir,
        ..
    } = config;
    let dead_letter = DeadLetter::new(dead_letter_dir);
    let mut report = ShipReport::default();
    // (segment, whether an earlier attempt may have landed)
    let mut pending: VecDeque<(u64, bool)> = recovered.into_iter().map(|s| (s, true)).collect();
    let mut open = true;
    loop {
        while let Ok(seq) = sealed.try_recv() {
            pending.push_back((seq, false));
        }
        metrics::gauge!("glimpse_spool_segments_pending").set(pending.len() as f64);
        let Some(&(seq, maybe_sent)) = pending.front() else {
            if !open {
                break;
            }
            match sealed.recv().await {
                Some(seq) => pending.push_back((seq, false)),
                None => open = false,
            }
            continue;
        };
        let path = segment::path(&dir, seq, true);
        let read_path = path.clone();
        let contents = match tokio::task::spawn_blocking(move || segment::scan(&read_path)).await {
            Ok(Ok(contents)) => contents,
            Ok(Err(error)) => {
                tracing::error!(%error, "spool segment unreadable; set aside");
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if std::fs::rename(&path, path.with_extension("damaged")).is_ok() {
                    // Set aside for a person to look at: no longer the spool's to ship.
                    release(&usage.bytes, size);
                }
                pending.pop_front();
                continue;
            }
            Err(_) => break,
        };
        if !contents.skipped.is_empty() {
            let lost = contents.skipped.len() as u64;
            tracing::error!(
                segment = %path.display(),
                damaged_stretches = lost,
                damaged_bytes = contents.damaged_bytes,
                shipped_rows = contents.rows.len(),
                "spool segment has damaged records in the middle; shipping every valid record around them"
            );
            metrics::counter!("glimpse_rows_lost_total").increment(lost);
            metrics::counter!("glimpse_spool_damaged_bytes_total")
                .increment(contents.damaged_bytes);
        }
        let mut rows = contents.rows;
        for row in &mut rows {
            row.batch_id = contents.batch_id;
        }
        let started = Instant::now();
        let Some(shipped) = ship(
            &sink,
            contents.batch_id,
            &rows,
            maybe_sent,
            &dead_letter,
            &control,
        )
        .await
        else {
            // Abandoned at the shutdown deadline: everything pending stays on disk (the
            // caller counts what is left).
            return report;
        };
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::error!(%error, segment = %path.display(), "cannot delete a shipped spool segment");
        }
        release(&usage.bytes, size);
        // Space is back: let `/ready` say so before the next append proves it.
        usage.disk_full.store(false, Ordering::Relaxed);
        if shipped == Shipped::Inserted {
            report.rows_written += rows.len() as u64;
        }
        pending.pop_front();
        // While a backlog drains, pace inserts so live traffic keeps ClickHouse's attention.
        if drain_rows_per_sec > 0 && pending.len() > 1 {
            let budget = Duration::from_secs_f64(rows.len() as f64 / drain_rows_per_sec as f64);
            if let Some(rest) = budget.checked_sub(started.elapsed()) {
                tokio::select! {
                    _ = tokio::time::sleep(rest) => {}
                    _ = control.abandon.cancelled() => {}
                }
            }
        }
    }
    report
}

/// Takes a segment's size off the spool's byte count.
fn release(bytes: &AtomicU64, size: u64) {
    let _ = bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
        Some(b.saturating_sub(size))
    });
    metrics::gauge!("glimpse_spool_bytes").set(bytes.load(Ordering::Relaxed) as f64);
}

/// Where a segment's rows ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shipped {
    Inserted,
    /// Refused for good, and safely in the dead-letter directory.
    DeadLettered,
}

/// Inserts one segment exactly once, or sets it aside if ClickHouse refuses it for good;
/// `None` if abandoned before either.
async fn ship<S: Sink>(
    sink: &S,
    batch_id: u64,
    rows: &[EventRow],
    maybe_sent: bool,
    dead_letter: &DeadLetter,
    control: &WriterControl,
) -> Option<Shipped> {
    let maybe_sent = AtomicBool::new(maybe_sent);
    let attempt = || async {
        let result = attempt(sink, batch_id, rows, maybe_sent.load(Ordering::Relaxed)).await;
        match &result {
            Ok(()) => {
                metrics::counter!("glimpse_batches_total").increment(1);
                metrics::counter!("glimpse_rows_written_total").increment(rows.len() as u64);
            }
            Err(_) => {
                // The insert may or may not have landed: check before the next attempt.
                maybe_sent.store(true, Ordering::Relaxed);
                metrics::counter!("glimpse_insert_errors_total").increment(1);
            }
        }
        result.map(|()| Shipped::Inserted)
    };
    let set_aside = |error: SinkError| {
        if error.rows() == 0 {
            // The question "is it stored already?" was refused: an earlier attempt may have
            // landed, so say how to check before replaying.
            tracing::warn!(
                batch_id,
                "the refused batch may already be in ClickHouse: check its batch_id before replaying it"
            );
        }
        dead_letter
            .set_aside(rows, error)
            .map(|_| Shipped::DeadLettered)
    };
    let on_retry = |error: &SinkError, wait: Duration| {
        tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "spool: batch not shipped yet");
    };
    retry(BACKOFF, &control.abandon, attempt, set_aside, on_retry).await
}

/// One try at a segment: if an earlier one may have landed, asks ClickHouse first.
async fn attempt<S: Sink>(
    sink: &S,
    batch_id: u64,
    rows: &[EventRow],
    maybe_sent: bool,
) -> Result<(), SinkError> {
    if maybe_sent {
        let stored = sink.stored_rows(batch_id).await?;
        if stored >= rows.len() as u64 {
            tracing::info!(
                batch_id,
                rows = rows.len(),
                "batch already in ClickHouse; not sending it again"
            );
            return Ok(());
        }
        if stored > 0 && sink.resend_completes_partial() {
            // A cluster's insert that reached some shards: the others get their part now.
            tracing::warn!(
                batch_id,
                stored,
                rows = rows.len(),
                "batch partly stored (some shards); sending it again, the rest is recognised"
            );
        } else if stored > 0 {
            // Cannot happen for single-partition batches on one server; say so loudly if it does.
            tracing::error!(
                batch_id,
                stored,
                rows = rows.len(),
                "batch partly stored; sending it again would duplicate, keeping what is there"
            );
            return Ok(());
        }
    }
    let started = Instant::now();
    sink.write_batch(batch_id, rows).await?;
    metrics::histogram!("glimpse_insert_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A store of two "shards" (even and odd visitor ids) that deduplicates a shard's part of a
    /// re-sent batch, as a cluster's replicated tables do, or not (one server).
    struct TwoShards {
        deduplicates: bool,
        stored: Mutex<Vec<EventRow>>,
    }

    impl Sink for TwoShards {
        async fn write(&self, rows: &[EventRow]) -> Result<(), SinkError> {
            let mut stored = self.stored.lock().unwrap();
            for row in rows {
                let duplicate = self.deduplicates && stored.contains(row);
                if !duplicate {
                    stored.push(row.clone());
                }
            }
            Ok(())
        }

        async fn stored_rows(&self, batch_id: u64) -> Result<u64, SinkError> {
            let stored = self.stored.lock().unwrap();
            Ok(stored.iter().filter(|r| r.batch_id == batch_id).count() as u64)
        }

        fn resend_completes_partial(&self) -> bool {
            self.deduplicates
        }
    }

    fn batch() -> Vec<EventRow> {
        (0..6)
            .map(|i| EventRow {
                visitor_id: i,
                batch_id: 9,
                ..EventRow::default()
            })
            .collect()
    }

    /// The even shard took its part before the insert failed.
    fn partly_stored(deduplicates: bool) -> TwoShards {
        let even = batch().into_iter().filter(|r| r.visitor_id % 2 == 0);
        TwoShards {
            deduplicates,
            stored: Mutex::new(even.collect()),
        }
    }

    #[tokio::test]
    async fn a_batch_partly_stored_on_a_cluster_is_completed_once() {
        let sink = partly_stored(true);
        attempt(&sink, 9, &batch(), true).await.unwrap();
        let mut ids: Vec<u64> = sink
            .stored
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.visitor_id)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_batch_partly_stored_on_one_server_is_not_sent_again() {
        let sink = partly_stored(false);
        attempt(&sink, 9, &batch(), true).await.unwrap();
        assert_eq!(sink.stored.lock().unwrap().len(), 3, "no duplicates");
    }
}
