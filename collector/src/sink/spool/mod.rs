//! The disk spool: every accepted event is appended to a checksummed segment log before its
//! `202` (group commit), and shipped to ClickHouse from there; a segment is deleted only after
//! ClickHouse acknowledged all of it. A crash, a ClickHouse outage or a shutdown deadline leaves
//! accepted events on disk, and the next start ships them first.
//!
//! - `segment`: the file format (self-delimiting checksummed records, damage detection and
//!   resynchronisation).
//! - `appender`: one OS thread that owns the open segment: appends, fsyncs per policy, acks,
//!   seals segments (one segment = one insert batch, within one UTC day); a failed write or
//!   fsync refuses its appends and leaves no torn record that later ones follow.
//! - `shipper`: one task that inserts sealed segments in order, exactly once, and sets aside
//!   in the dead-letter directory a segment ClickHouse refuses for good (see there).
//!
//! The spool holds processed rows only: no raw IP address or user agent ever reaches it.

mod appender;
pub mod segment;
mod shipper;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use shipper::ShipReport;

use super::{Sink, WriterControl};
use glimpse_core::schema::EventRow;

pub use glimpse_core::config::FsyncPolicy;

/// How the spool behaves, from the configuration.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Disk budget: past it, beacons get `503` until the shipper catches up.
    pub max_bytes: u64,
    /// Free space left on the spool's file system: below it, beacons get `503` (0: none).
    pub min_free_bytes: u64,
    pub fsync: FsyncPolicy,
    /// A segment is sealed (becomes an insert batch) at this many rows...
    pub segment_max_rows: usize,
    /// ...or this age.
    pub segment_max_age: Duration,
    /// Appends waiting for the appender thread; past it, `503`.
    pub queue_capacity: usize,
    /// Cap on rows per second shipped while a backlog drains, so catching up after an outage
    /// does not crowd out live traffic. 0: no cap.
    pub drain_rows_per_sec: u64,
    /// Where segments ClickHouse refuses for good go (`<data_dir>/dead-letter`).
    pub dead_letter_dir: PathBuf,
}

impl SpoolConfig {
    /// The spool's settings (directory `<data_dir>/spool`).
    pub fn from_config(config: &glimpse_core::Config) -> Self {
        SpoolConfig {
            dir: config.data_dir.join("spool"),
            max_bytes: config.collector.spool_max_bytes,
            min_free_bytes: config.collector.spool_min_free_bytes,
            fsync: config.spool_fsync_policy(),
            segment_max_rows: config.collector.batch_max_rows,
            segment_max_age: config.batch_max_delay(),
            queue_capacity: config.collector.queue_capacity,
            drain_rows_per_sec: config.collector.spool_drain_rows_per_sec,
            dead_letter_dir: config.dead_letter_dir(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the spool is over its disk budget (spool_max_bytes)")]
    Full,
    #[error("the spool is busy")]
    Busy,
    #[error("the spool is closed")]
    Closed,
    #[error("writing to the spool failed: {0}")]
    Write(String),
    #[error("the spool's disk is full: {0}")]
    DiskFull(String),
}

/// Why the appender refused an append (nothing of it is on disk).
#[derive(Debug, Clone)]
struct WriteFailure {
    message: String,
    /// `ENOSPC` or `EDQUOT`: space may come back (the shipper frees it), so clients should retry.
    disk_full: bool,
}

impl WriteFailure {
    fn other(message: String) -> Self {
        Self {
            message,
            disk_full: false,
        }
    }
}

/// What the spool holds on disk, shared by the handlers, the appender and the shipper.
struct DiskUsage {
    /// Bytes of segment files.
    bytes: Arc<AtomicU64>,
    /// The last write found the disk full.
    disk_full: Arc<AtomicBool>,
}

/// One append: a beacon's rows, encoded, and who to tell once it is durable.
struct Append {
    record: Vec<u8>,
    rows: usize,
    day: u32,
    ack: oneshot::Sender<Result<(), WriteFailure>>,
}

/// The handlers' end of the spool. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    tx: std::sync::mpsc::SyncSender<Append>,
    bytes: Arc<AtomicU64>,
    max_bytes: u64,
    disk_full: Arc<AtomicBool>,
}

impl Spool {
    /// Appends a beacon's rows; returns once they are as durable as the fsync policy says.
    pub async fn append(&self, rows: Vec<EventRow>) -> Result<(), SpoolError> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.is_full() {
            return Err(SpoolError::Full);
        }
        let (ack, acked) = oneshot::channel();
        let append = Append {
            record: segment::encode_record(&rows),
            day: rows[0].timestamp / 86_400,
            rows: rows.len(),
            ack,
        };
        self.tx.try_send(append).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => SpoolError::Busy,
            std::sync::mpsc::TrySendError::Disconnected(_) => SpoolError::Closed,
        })?;
        match acked.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.disk_full => Err(SpoolError::DiskFull(e.message)),
            Ok(Err(e)) => Err(SpoolError::Write(e.message)),
            Err(_) => Err(SpoolError::Closed),
        }
    }

    pub fn is_full(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) >= self.max_bytes
    }

    /// Bytes of segments on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the last write found the disk full (until a write, a probe or a shipped
    /// segment shows space again).
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }
}

/// The spool's background workers; [`SpoolTasks::finish`] waits for them.
pub struct SpoolTasks {
    dir: PathBuf,
    appender: std::thread::JoinHandle<()>,
    shipper: JoinHandle<ShipReport>,
}

impl SpoolTasks {
    /// Waits for the appender to seal the open segment (it stops once every [`Spool`] handle
    /// is dropped) and the shipper to ship what it can before `control.abandon` fires.
    pub async fn finish(self) -> ShipReport {
        let appender = self.appender;
        let _ = tokio::task::spawn_blocking(move || appender.join()).await;
        let mut report = self.shipper.await.unwrap_or_default();
        // Whatever is still on disk now is what the next start ships.
        let (segments, rows) = count_left(&self.dir);
        report.segments_left = segments;
        report.rows_left = rows;
        if rows > 0 {
            tracing::warn!(
                segments,
                rows,
                "ClickHouse unreachable at shutdown: events stay in the spool for the next start"
            );
        }
        report
    }
}

/// Segments and rows in the spool directory.
fn count_left(dir: &Path) -> (u64, u64) {
    let (mut segments, mut rows) = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if let Some((seq, sealed)) = segment::parse_name(&name.to_string_lossy()) {
            if let Ok(contents) = segment::scan(&segment::path(dir, seq, sealed)) {
                segments += 1;
                rows += contents.rows.len() as u64;
            }
        }
    }
    (segments, rows)
}

/// Opens the spool in `config.dir`: recovers what an earlier run left (keeping the valid
/// prefix of damaged segments), then starts the appender and the shipper, which ships the
/// recovered segments first.
pub fn open<S: Sink>(
    config: SpoolConfig,
    sink: S,
    control: WriterControl,
) -> Result<(Spool, SpoolTasks), SpoolError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SpoolError::Io { path, source }
    };
    std::fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
    let recovered = recover(&config.dir).map_err(io(&config.dir))?;
    let bytes = Arc::new(AtomicU64::new(recovered.bytes));
    if !recovered.segments.is_empty() {
        tracing::info!(
            segments = recovered.segments.len(),
            bytes = recovered.bytes,
            "spool: unshipped segments from an earlier run will be shipped first"
        );
    }
    let (sealed_tx, sealed_rx) = mpsc::unbounded_channel();
    let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_capacity);
    let disk_full = Arc::new(AtomicBool::new(false));
    let appender = appender::spawn(
        &config,
        recovered.next_seq,
        rx,
        sealed_tx,
        bytes.clone(),
        disk_full.clone(),
    )
    .map_err(io(&config.dir))?;
    let shipper = tokio::spawn(shipper::run(
        config.clone(),
        sink,
        recovered.segments,
        sealed_rx,
        DiskUsage {
            bytes: bytes.clone(),
            disk_full: disk_full.clone(),
        },
        control,
    ));
    Ok((
        Spool {
            tx,
            bytes,
            max_bytes: config.max_bytes,
            disk_full,
        },
        SpoolTasks {
            dir: config.dir.clone(),
            appender,
            shipper,
        },
    ))
}

struct Recovered {
    /// Sealed segment numbers to ship, oldest first.
    segments: Vec<u64>,
    next_seq: u64,
    bytes: u64,
}

/// Seals segments an earlier run left open (truncating a torn tail to its valid prefix) and
/// lists every segment still to ship.
fn recover(dir: &Path) -> std::io::Result<Recovered> {
    let mut found: Vec<(u64, bool)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(parsed) = segment::parse_name(&name.to_string_lossy()) {
            found.push(parsed);
        }
    }
    found.sort_unstable();
    let mut segments = Vec::new();
    let mut bytes = 0;
    let mut next_seq = 0;
    for (seq, sealed) in found {
        next_seq = next_seq.max(seq + 1);
        let path = segment::path(dir, seq, sealed);
        match segment::scan(&path) {
            Ok(contents) => {
                // Damage in the middle is left for the shipper, which ships around it.
                let tail = std::fs::metadata(&path)?
                    .len()
                    .saturating_sub(contents.valid_len);
                if tail > 0 {
                    tracing::error!(
                        segment = %path.display(),
                        kept_rows = contents.rows.len(),
                        damaged_bytes = tail,
                        "spool segment has a torn or corrupt tail; keeping its valid records"
                    );
                    metrics::counter!("glimpse_spool_damaged_bytes_total").increment(tail);
                    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                    file.set_len(contents.valid_len)?;
                    file.sync_all()?;
                }
                if contents.rows.is_empty() {
                    std::fs::remove_file(&path)?;
                    continue;
                }
                let sealed_path = segment::path(dir, seq, true);
                if !sealed {
                    std::fs::rename(&path, &sealed_path)?;
                }
                bytes += std::fs::metadata(&sealed_path)?.len();
                segments.push(seq);
            }
            Err(error) => {
                // A segment whose header is unreadable holds nothing we can trust; keep the
                // file aside for a person to look at rather than deleting it.
                tracing::error!(%error, "unreadable spool segment set aside");
                std::fs::rename(&path, path.with_extension("damaged"))?;
            }
        }
    }
    appender::sync_dir(dir);
    Ok(Recovered {
        segments,
        next_seq,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::sink::MemorySink;

    fn config(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 30,
            min_free_bytes: 0,
            fsync: FsyncPolicy::Always,
            segment_max_rows: 3,
            segment_max_age: Duration::from_millis(50),
            queue_capacity: 100,
            drain_rows_per_sec: 0,
            dead_letter_dir: dir.join("dead-letter"),
        }
    }

    fn row(i: u32) -> EventRow {
        EventRow {
            site: "example.com".into(),
            timestamp: 1_700_000_000 + i,
            pathname: format!("/p/{i}"),
            ..EventRow::default()
        }
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    async fn stop(spool: Spool, tasks: SpoolTasks) -> ShipReport {
        drop(spool);
        tasks.finish().await
    }

    #[tokio::test]
    async fn appended_rows_are_shipped_in_batches_and_segments_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let sink = MemorySink::default();
        let (spool, tasks) =
            open(config(dir.path()), sink.clone(), WriterControl::default()).unwrap();
        for i in 0..7 {
            spool.append(vec![row(i)]).await.unwrap();
        }
        let report = stop(spool, tasks).await;
        assert_eq!(report.rows_written, 7);
        let rows = sink.rows.lock().unwrap();
        let paths: Vec<_> = rows.iter().map(|r| r.pathname.as_str()).collect();
        assert_eq!(
            paths,
            ["/p/0", "/p/1", "/p/2", "/p/3", "/p/4", "/p/5", "/p/6"]
        );
        assert_eq!(
            *sink.batches.lock().unwrap(),
            [3, 3, 1],
            "one batch per segment"
        );
        let ids: std::collections::HashSet<u64> = rows.iter().map(|r| r.batch_id).collect();
        assert_eq!(ids.len(), 3);
        assert!(!ids.contains(&0));
        assert!(
            segment_files(dir.path()).is_empty(),
            "shipped segments are deleted"
        );
    }

    #[tokio::test]
    async fn unshipped_segments_survive_and_ship_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let down = MemorySink::default();
        down.failing.store(true, Ordering::SeqCst);
        let control = WriterControl::default();
        let (spool, tasks) = open(config(dir.path()), down.clone(), control.clone()).unwrap();
        for i in 0..5 {
            spool.append(vec![row(i)]).await.unwrap();
        }
        drop(spool);
        tokio::time::sleep(Duration::from_millis(300)).await;
        control.abandon.cancel();
        let report = tasks.finish().await;
        assert_eq!(report.rows_written, 0);
        assert_eq!(report.rows_left, 5);
        assert_eq!(segment_files(dir.path()).len(), 2);

        let up = MemorySink::default();
        let (spool, tasks) =
            open(config(dir.path()), up.clone(), WriterControl::default()).unwrap();
        let report = stop(spool, tasks).await;
        assert_eq!(report.rows_written, 5);
        assert_eq!(up.rows.lock().unwrap().len(), 5);
        assert!(segment_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_batch_that_already_landed_is_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        // A crash after ClickHouse stored the batch but before the segment was deleted.
        let path = segment::path(dir.path(), 4, true);
        let mut file = segment::create(&path, 777).unwrap();
        file.write_all(&segment::encode_record(&[row(1), row(2)]))
            .unwrap();
        drop(file);
        let sink = MemorySink::default();
        sink.rows
            .lock()
            .unwrap()
            .extend([row(1), row(2)].map(|r| EventRow { batch_id: 777, ..r }));
        let (spool, tasks) =
            open(config(dir.path()), sink.clone(), WriterControl::default()).unwrap();
        let report = stop(spool, tasks).await;
        assert_eq!(sink.rows.lock().unwrap().len(), 2, "no duplicates");
        assert_eq!(report.rows_written, 2);
        assert!(segment_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_torn_open_segment_is_recovered_to_its_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment::path(dir.path(), 9, false);
        let mut file = segment::create(&path, 55).unwrap();
        file.write_all(&segment::encode_record(&[row(1)])).unwrap();
        file.write_all(&segment::encode_record(&[row(2)])).unwrap();
        let torn = segment::encode_record(&[row(3)]);
        file.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(file);
        std::fs::write(dir.path().join("00000000000000000010.seg"), b"garbage").unwrap();

        let sink = MemorySink::default();
        let (spool, tasks) =
            open(config(dir.path()), sink.clone(), WriterControl::default()).unwrap();
        // New appends go to a segment numbered after the recovered ones.
        spool.append(vec![row(4)]).await.unwrap();
        let report = stop(spool, tasks).await;
        let paths: Vec<String> = sink
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.pathname.clone())
            .collect();
        assert_eq!(paths, ["/p/1", "/p/2", "/p/4"]);
        assert_eq!(report.rows_written, 3);
        assert_eq!(segment_files(dir.path()), ["00000000000000000010.damaged"]);
    }

    #[tokio::test]
    async fn over_budget_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let down = MemorySink::default();
        down.failing.store(true, Ordering::SeqCst);
        let mut c = config(dir.path());
        c.max_bytes = 400;
        let control = WriterControl::default();
        let (spool, tasks) = open(c, down, control.clone()).unwrap();
        let mut refused = false;
        for i in 0..50 {
            match spool.append(vec![row(i)]).await {
                Ok(()) => {}
                Err(SpoolError::Full) => {
                    refused = true;
                    break;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(refused);
        assert!(spool.bytes() >= 400);
        control.abandon.cancel();
        stop(spool, tasks).await;
    }

    /// A sealed segment with a torn record in the middle (what a write behind a torn record
    /// used to leave): every valid record after it is shipped, the torn one counted as lost.
    #[test]
    fn a_torn_record_in_the_middle_does_not_lose_the_records_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment::path(dir.path(), 3, true);
        let mut file = segment::create(&path, 42).unwrap();
        for i in 1..=2 {
            file.write_all(&segment::encode_record(&[row(i)])).unwrap();
        }
        let torn = segment::encode_record(&[row(3)]);
        file.write_all(&torn[..torn.len() / 2]).unwrap();
        for i in 4..=5 {
            file.write_all(&segment::encode_record(&[row(i)])).unwrap();
        }
        drop(file);

        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let sink = MemorySink::default();
        let report = metrics::with_local_recorder(&recorder, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (spool, tasks) =
                    open(config(dir.path()), sink.clone(), WriterControl::default()).unwrap();
                stop(spool, tasks).await
            })
        });
        let paths: Vec<String> = sink
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.pathname.clone())
            .collect();
        assert_eq!(paths, ["/p/1", "/p/2", "/p/4", "/p/5"]);
        assert_eq!(report.rows_written, 4);
        assert!(segment_files(dir.path()).is_empty());
        let rendered = handle.render();
        assert!(rendered.contains("glimpse_rows_lost_total 1"), "{rendered}");
    }

    fn dead_letter_rows(dir: &Path) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                text.lines()
                    .map(|l| serde_json::from_str::<EventRow>(l).unwrap().pathname)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_refused_segment_goes_to_the_dead_letter_file_and_later_ones_ship() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&dir.path().join("spool"));
        // Beside the spool, as under a data directory.
        c.dead_letter_dir = dir.path().join("dead-letter");
        let dead_letter_dir = c.dead_letter_dir.clone();
        let sink = MemorySink::default();
        sink.refusing.store(true, Ordering::SeqCst);
        let (spool, tasks) = open(c, sink.clone(), WriterControl::default()).unwrap();
        for i in 0..3 {
            spool.append(vec![row(i)]).await.unwrap();
        }
        // The full segment is sealed and refused: it is set aside, not retried forever.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while dead_letter_rows(&dead_letter_dir).len() < 3 {
            assert!(std::time::Instant::now() < deadline, "not dead-lettered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sink.refusing.store(false, Ordering::SeqCst);
        for i in 3..5 {
            spool.append(vec![row(i)]).await.unwrap();
        }
        let report = stop(spool, tasks).await;
        assert_eq!(dead_letter_rows(&dead_letter_dir), ["/p/0", "/p/1", "/p/2"]);
        let stored: Vec<String> = sink
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.pathname.clone())
            .collect();
        assert_eq!(stored, ["/p/3", "/p/4"]);
        assert_eq!(report.rows_written, 2);
        assert_eq!(report.rows_left, 0);
        assert!(segment_files(&dir.path().join("spool")).is_empty());
    }

    /// Until the dead-letter file is on disk, the refused segment stays in the spool.
    #[tokio::test]
    async fn a_refused_segment_stays_in_the_spool_while_it_cannot_be_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&dir.path().join("spool"));
        // A file where the dead-letter directory should be: every write there fails.
        c.dead_letter_dir = dir.path().join("blocked");
        std::fs::write(&c.dead_letter_dir, b"").unwrap();
        let sink = MemorySink::default();
        sink.refusing.store(true, Ordering::SeqCst);
        let control = WriterControl::default();
        let (spool, tasks) = open(c, sink.clone(), control.clone()).unwrap();
        for i in 0..3 {
            spool.append(vec![row(i)]).await.unwrap();
        }
        drop(spool);
        tokio::time::sleep(Duration::from_millis(500)).await;
        control.abandon.cancel();
        let report = tasks.finish().await;
        assert_eq!(report.rows_left, 3);
        assert_eq!(segment_files(&dir.path().join("spool")).len(), 1);
    }
}
