//! The appender: one OS thread (file I/O blocks) that owns the open segment. It takes every
//! append waiting in the queue as one group, writes the group, syncs it per the fsync policy,
//! then acknowledges each append (group commit). It seals a segment — sync, rename to `.seg`,
//! hand it to the shipper — when it reaches its row limit or age, or when the UTC day changes
//! (so a batch never spans two partitions and its insert stays atomic).
//!
//! Write errors (a full disk, most often) never leave a torn record that later records follow:
//! the appends that go into one segment are written with one `write`, and if it fails the
//! segment is cut back to its last good record (or, if even that fails, sealed as it is) and
//! every one of those appends is refused. A failed fsync is a lost write — after one, the page
//! cache cannot be trusted — so its appends are refused and the segment is sealed. A segment
//! whose seal fails stays in the appender and is sealed again later, never orphaned.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{segment, Append, FsyncPolicy, SpoolConfig, WriteFailure};

/// Most appends written as one group.
const MAX_GROUP: usize = 4096;

/// What the appender does to a segment file: a seam, so tests can inject write and fsync errors.
pub(super) trait SegmentFile: Send {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn sync_data(&mut self) -> std::io::Result<()>;
    fn sync_all(&mut self) -> std::io::Result<()>;
    fn set_len(&mut self, len: u64) -> std::io::Result<()>;
}

impl SegmentFile for File {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        Write::write_all(self, bytes)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        File::sync_data(self)
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        File::sync_all(self)
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)
    }
}

/// Creates a segment file with its header (the real one: [`segment::create`]).
pub(super) type Create = Box<dyn FnMut(&Path, u64) -> std::io::Result<Box<dyn SegmentFile>> + Send>;

fn create_file() -> Create {
    Box::new(|path, batch_id| Ok(Box::new(segment::create(path, batch_id)?)))
}

struct OpenSegment {
    seq: u64,
    file: Box<dyn SegmentFile>,
    /// Bytes of header and whole records on disk: where a failed write is cut back to.
    len: u64,
    rows: usize,
    day: u32,
    opened: Instant,
    /// Records written since the last fsync.
    dirty: bool,
}

struct Appender {
    dir: PathBuf,
    fsync: FsyncPolicy,
    min_free_bytes: u64,
    max_rows: usize,
    max_age: Duration,
    next_seq: u64,
    open: Option<OpenSegment>,
    /// Segments whose seal failed: retried on every tick until it works.
    unsealed: Vec<OpenSegment>,
    last_sync: Instant,
    sealed: UnboundedSender<u64>,
    bytes: Arc<AtomicU64>,
    /// Set while the disk is full (for `/ready`); cleared by a write that works.
    disk_full: Arc<AtomicBool>,
    /// Whether a failure was logged since the last write that worked: a full disk refuses
    /// every append, and one log line says it.
    failing: bool,
    create: Create,
}

pub(super) fn spawn(
    config: &SpoolConfig,
    next_seq: u64,
    rx: Receiver<Append>,
    sealed: UnboundedSender<u64>,
    bytes: Arc<AtomicU64>,
    disk_full: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut appender = Appender::new(config, next_seq, sealed, bytes, disk_full, create_file());
    std::thread::Builder::new()
        .name("glimpse-spool".into())
        .spawn(move || appender.run(rx))
}

impl Appender {
    fn new(
        config: &SpoolConfig,
        next_seq: u64,
        sealed: UnboundedSender<u64>,
        bytes: Arc<AtomicU64>,
        disk_full: Arc<AtomicBool>,
        create: Create,
    ) -> Self {
        Appender {
            dir: config.dir.clone(),
            fsync: config.fsync,
            min_free_bytes: config.min_free_bytes,
            max_rows: config.segment_max_rows.max(1),
            max_age: config.segment_max_age,
            next_seq,
            open: None,
            unsealed: Vec::new(),
            last_sync: Instant::now(),
            sealed,
            bytes,
            disk_full,
            failing: false,
            create,
        }
    }

    fn run(&mut self, rx: Receiver<Append>) {
        loop {
            match rx.recv_timeout(self.wait()) {
                Ok(first) => {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(more) => group.push(more),
                            Err(_) => break,
                        }
                    }
                    self.write_group(group);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.housekeeping();
        }
        // Every handle is gone: make the open segment durable and hand it over.
        self.seal();
        for open in std::mem::take(&mut self.unsealed) {
            self.seal_segment(open);
        }
        if !self.unsealed.is_empty() {
            tracing::error!(
                segments = self.unsealed.len(),
                "spool: sealing failed at shutdown; the segments are replayed at the next start"
            );
        }
    }

    /// How long to wait for the next append before sealing or syncing.
    fn wait(&self) -> Duration {
        let mut wait = Duration::from_millis(500);
        if let Some(open) = &self.open {
            wait = wait.min(self.max_age.saturating_sub(open.opened.elapsed()));
            if let (FsyncPolicy::Interval(every), true) = (self.fsync, open.dirty) {
                wait = wait.min(every.saturating_sub(self.last_sync.elapsed()));
            }
        }
        wait.max(Duration::from_millis(1))
    }

    /// Writes a group, one run of appends per segment it goes into, and acknowledges each
    /// run once it is as durable as the policy says — or refuses all of it.
    fn write_group(&mut self, group: Vec<Append>) {
        let mut rest = group.into_iter().peekable();
        while let Some(first) = rest.next() {
            let ready = self.segment_for(first.day);
            let room = match (&ready, &self.open) {
                // No segment to write to (a full disk): the rest of the day's appends are
                // refused together, not with one more attempt each.
                (Err(_), _) => usize::MAX,
                (Ok(()), Some(open)) => self.max_rows.saturating_sub(open.rows),
                (Ok(()), None) => 0,
            };
            let mut run_rows = first.rows;
            let mut run = vec![first];
            while let Some(next) = rest.peek() {
                if next.day != run[0].day || run_rows >= room {
                    break;
                }
                run_rows += next.rows;
                run.extend(rest.next());
            }
            let result = ready.and_then(|()| self.write_run(&run, run_rows));
            for append in run {
                let _ = append.ack.send(result.clone());
            }
        }
    }

    /// Makes sure the open segment can take records of `day`: seals a full or old one and
    /// opens a new one when needed.
    fn segment_for(&mut self, day: u32) -> Result<(), WriteFailure> {
        let fits = self
            .open
            .as_ref()
            .is_some_and(|open| open.day == day && open.rows < self.max_rows);
        if !fits {
            self.seal();
            self.open_segment(day)
                .map_err(|e| self.failure("creating a spool segment", e))?;
        }
        Ok(())
    }

    /// Writes one run into the open segment with a single write, syncing per policy. On an
    /// error the segment is left as it was before the run.
    fn write_run(&mut self, run: &[Append], rows: usize) -> Result<(), WriteFailure> {
        let always = self.fsync == FsyncPolicy::Always;
        let Some(seq) = self.open.as_ref().map(|open| open.seq) else {
            return Err(WriteFailure::other("no open spool segment".into()));
        };
        // One memcpy per record (the profile showed a byte-by-byte `flat_map` collect here).
        let mut bytes = Vec::with_capacity(run.iter().map(|a| a.record.len()).sum());
        for append in run {
            bytes.extend_from_slice(&append.record);
        }
        if self.min_free_bytes > 0 {
            let needed = self.min_free_bytes + bytes.len() as u64;
            if free_space(&self.dir).is_some_and(|free| free < needed) {
                return Err(self.low_space());
            }
        }
        let Some(open) = self.open.as_mut() else {
            return Err(WriteFailure::other("no open spool segment".into()));
        };
        if let Err(error) = open.file.write_all(&bytes) {
            self.cut_back();
            return Err(self.failure(&format!("appending to spool segment {seq}"), error));
        }
        if always {
            if let Err(error) = open.file.sync_data() {
                // The kernel may have dropped the pages it could not write, and a second fsync
                // would not say so: refuse the run, cut it off, seal what was durable before.
                self.cut_back();
                self.seal();
                return Err(self.failure(&format!("fsync of spool segment {seq}"), error));
            }
            self.last_sync = Instant::now();
        }
        open.len += bytes.len() as u64;
        open.rows += rows;
        open.dirty = !always;
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.publish_bytes();
        self.disk_full.store(false, Ordering::Relaxed);
        if std::mem::take(&mut self.failing) {
            tracing::info!("spool: appends are stored again");
        }
        Ok(())
    }

    /// Truncates the open segment to its last good record. If even that fails, the segment is
    /// sealed as it is, so that no record is ever appended behind the torn bytes.
    fn cut_back(&mut self) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if let Err(error) = open.file.set_len(open.len) {
            tracing::error!(%error, segment = open.seq, "spool: cannot cut a failed write off; sealing the segment as it is");
            // The torn bytes are on disk too: count them, the shipper subtracts the file size.
            let path = segment::path(&self.dir, open.seq, false);
            if let Ok(meta) = std::fs::metadata(&path) {
                let torn = meta.len().saturating_sub(open.len);
                self.bytes.fetch_add(torn, Ordering::Relaxed);
                open.len = meta.len();
            }
            self.seal();
        }
    }

    /// Counts and logs a write error; the failure the appends of the run are refused with.
    fn failure(&mut self, what: &str, error: std::io::Error) -> WriteFailure {
        let disk_full = matches!(
            error.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        );
        if disk_full {
            self.disk_full.store(true, Ordering::Relaxed);
        }
        metrics::counter!("glimpse_spool_write_errors_total").increment(1);
        if !std::mem::replace(&mut self.failing, true) {
            tracing::error!(%error, "spool: {what} failed; appends are refused until a write works");
        }
        WriteFailure {
            message: format!("{what}: {error}"),
            disk_full,
        }
    }

    /// The refusal while the disk has less than `spool_min_free_bytes` free: nothing is
    /// written, so a local ClickHouse on the same disk keeps room to take the backlog.
    fn low_space(&mut self) -> WriteFailure {
        self.disk_full.store(true, Ordering::Relaxed);
        if !std::mem::replace(&mut self.failing, true) {
            tracing::error!(
                min_free_bytes = self.min_free_bytes,
                "spool: less than spool_min_free_bytes free on its disk; appends are refused until there is"
            );
        }
        WriteFailure {
            message: format!(
                "less than spool_min_free_bytes ({}) free on the spool's disk",
                self.min_free_bytes
            ),
            disk_full: true,
        }
    }

    fn publish_bytes(&self) {
        metrics::gauge!("glimpse_spool_bytes").set(self.bytes.load(Ordering::Relaxed) as f64);
    }

    fn housekeeping(&mut self) {
        if let FsyncPolicy::Interval(every) = self.fsync {
            if self.last_sync.elapsed() >= every {
                self.sync_interval();
            }
        }
        let due = self.open.as_ref().is_some_and(|open| {
            open.rows >= self.max_rows || open.opened.elapsed() >= self.max_age
        });
        if due {
            self.seal();
        }
        for open in std::mem::take(&mut self.unsealed) {
            self.seal_segment(open);
        }
        // A full disk can get space back from elsewhere too (another writer, an operator).
        if self.disk_full.load(Ordering::Relaxed) && self.has_room() {
            self.disk_full.store(false, Ordering::Relaxed);
        }
    }

    /// The `interval` policy's sync. Its records were acknowledged already, so a failure can
    /// only be logged; the segment is sealed so that nothing more goes into it.
    fn sync_interval(&mut self) {
        self.last_sync = Instant::now();
        let Some(open) = self.open.as_mut().filter(|open| open.dirty) else {
            return;
        };
        let seq = open.seq;
        match open.file.sync_data() {
            Ok(()) => open.dirty = false,
            Err(error) => {
                let _ = self.failure(&format!("fsync of spool segment {seq}"), error);
                self.seal();
            }
        }
    }

    /// Whether the spool's disk has room for a page beyond `spool_min_free_bytes` again.
    fn has_room(&self) -> bool {
        free_space(&self.dir).is_some_and(|free| free >= self.min_free_bytes + 4096)
    }

    fn open_segment(&mut self, day: u32) -> std::io::Result<()> {
        // Numbers are never reused, even for a segment whose creation failed.
        let seq = self.next_seq;
        self.next_seq += 1;
        let batch_id = random_batch_id()?;
        let path = segment::path(&self.dir, seq, false);
        let file = (self.create)(&path, batch_id)?;
        self.bytes.fetch_add(segment::HEADER_LEN, Ordering::Relaxed);
        self.publish_bytes();
        sync_dir(&self.dir);
        self.open = Some(OpenSegment {
            seq,
            file,
            len: segment::HEADER_LEN,
            rows: 0,
            day,
            opened: Instant::now(),
            dirty: false,
        });
        Ok(())
    }

    /// Seals the open segment, if any.
    fn seal(&mut self) {
        if let Some(open) = self.open.take() {
            self.seal_segment(open);
        }
    }

    /// Makes a segment durable, renames it `.seg` and hands it to the shipper; if that fails,
    /// keeps it to try again on the next tick.
    fn seal_segment(&mut self, mut open: OpenSegment) {
        let from = segment::path(&self.dir, open.seq, false);
        let to = segment::path(&self.dir, open.seq, true);
        let result = open
            .file
            .sync_all()
            .and_then(|()| std::fs::rename(&from, &to));
        match result {
            Ok(()) => {
                sync_dir(&self.dir);
                let _ = self.sealed.send(open.seq);
            }
            Err(error) => {
                let _ = self.failure(&format!("sealing spool segment {}", open.seq), error);
                self.unsealed.push(open);
            }
        }
    }
}

/// Bytes an unprivileged process can still write on the file system holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    // `as`: the field types are platform aliases (u32 on some 32-bit systems).
    Some((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
}

/// Random, so that batches from several collectors (or a restarted one) never share an id.
fn random_batch_id() -> std::io::Result<u64> {
    getrandom::u64()
        .map(|id| id.max(1))
        .map_err(std::io::Error::other)
}

pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::sink::spool::FsyncPolicy;
    use glimpse_core::schema::EventRow;

    /// Faults to inject into the next operation of that kind (each fires once).
    #[derive(Default)]
    struct Faults {
        /// The next write stores this many bytes, then fails with `ENOSPC`.
        short_write: Option<usize>,
        /// The next `sync_data` fails with `EIO`.
        fail_sync_data: bool,
        /// The next `sync_all` fails with `EIO`.
        fail_sync_all: bool,
    }

    /// A real segment file that fails when told to.
    struct FaultyFile {
        file: File,
        faults: Arc<Mutex<Faults>>,
    }

    const ENOSPC: i32 = 28;
    const EIO: i32 = 5;

    impl SegmentFile for FaultyFile {
        fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            if let Some(n) = self.faults.lock().unwrap().short_write.take() {
                Write::write_all(&mut self.file, &bytes[..n.min(bytes.len())])?;
                return Err(std::io::Error::from_raw_os_error(ENOSPC));
            }
            Write::write_all(&mut self.file, bytes)
        }
        fn sync_data(&mut self) -> std::io::Result<()> {
            if std::mem::take(&mut self.faults.lock().unwrap().fail_sync_data) {
                return Err(std::io::Error::from_raw_os_error(EIO));
            }
            self.file.sync_data()
        }
        fn sync_all(&mut self) -> std::io::Result<()> {
            if std::mem::take(&mut self.faults.lock().unwrap().fail_sync_all) {
                return Err(std::io::Error::from_raw_os_error(EIO));
            }
            self.file.sync_all()
        }
        fn set_len(&mut self, len: u64) -> std::io::Result<()> {
            self.file.set_len(len)
        }
    }

    struct Harness {
        dir: tempfile::TempDir,
        appender: Appender,
        faults: Arc<Mutex<Faults>>,
        sealed: mpsc::UnboundedReceiver<u64>,
        bytes: Arc<AtomicU64>,
    }

    fn harness(max_rows: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 30,
            min_free_bytes: 0,
            fsync: FsyncPolicy::Always,
            segment_max_rows: max_rows,
            segment_max_age: Duration::from_secs(3600),
            queue_capacity: 100,
            drain_rows_per_sec: 0,
            dead_letter_dir: dir.path().join("dead-letter"),
        };
        let faults = Arc::new(Mutex::new(Faults::default()));
        let injected = faults.clone();
        let create: Create = Box::new(move |path, batch_id| {
            Ok(Box::new(FaultyFile {
                file: segment::create(path, batch_id)?,
                faults: injected.clone(),
            }))
        });
        let (tx, sealed) = mpsc::unbounded_channel();
        let bytes = Arc::new(AtomicU64::new(0));
        let appender = Appender::new(&config, 0, tx, bytes.clone(), Arc::default(), create);
        Harness {
            dir,
            appender,
            faults,
            sealed,
            bytes,
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

    type Acks = Vec<oneshot::Receiver<Result<(), WriteFailure>>>;

    /// One group of one-row appends, and the receivers of their acknowledgements.
    fn group(paths: std::ops::Range<u32>) -> (Vec<Append>, Acks) {
        paths
            .map(|i| {
                let (ack, acked) = oneshot::channel();
                let rows = [row(i)];
                let append = Append {
                    record: segment::encode_record(&rows),
                    rows: 1,
                    day: rows[0].timestamp / 86_400,
                    ack,
                };
                (append, acked)
            })
            .unzip()
    }

    fn outcomes(acks: Acks) -> Vec<bool> {
        acks.into_iter()
            .map(|mut a| a.try_recv().expect("acknowledged").is_ok())
            .collect()
    }

    fn paths_in(path: &Path) -> Vec<String> {
        let contents = segment::read(path).unwrap();
        assert_eq!(contents.damaged_bytes, 0, "no torn bytes in {path:?}");
        contents.rows.into_iter().map(|r| r.pathname).collect()
    }

    #[test]
    fn a_write_error_mid_group_leaves_the_segment_as_before() {
        let mut h = harness(100);
        let (appends, acks) = group(0..2);
        h.appender.write_group(appends);
        assert_eq!(outcomes(acks), [true, true]);
        let open = segment::path(h.dir.path(), 0, false);
        let good_len = std::fs::metadata(&open).unwrap().len();

        // The disk fills in the middle of the next group's write: its first record and half
        // of its second reach the file.
        let record = segment::encode_record(&[row(2)]).len();
        h.faults.lock().unwrap().short_write = Some(record + record / 2);
        let (appends, acks) = group(2..5);
        h.appender.write_group(appends);
        assert_eq!(outcomes(acks), [false, false, false], "no 202 in the group");
        assert_eq!(
            std::fs::metadata(&open).unwrap().len(),
            good_len,
            "the segment is cut back to its last good record"
        );
        assert_eq!(h.bytes.load(Ordering::Relaxed), good_len, "byte gauge");

        // Space is back: the next group lands right after the last good record.
        let (appends, acks) = group(5..6);
        h.appender.write_group(appends);
        assert_eq!(outcomes(acks), [true]);
        h.appender.seal();
        let sealed = segment::path(h.dir.path(), 0, true);
        assert_eq!(paths_in(&sealed), ["/p/0", "/p/1", "/p/5"]);
        assert_eq!(
            h.bytes.load(Ordering::Relaxed),
            std::fs::metadata(&sealed).unwrap().len()
        );
        assert_eq!(h.sealed.try_recv().ok(), Some(0));
    }

    #[test]
    fn an_fsync_error_refuses_the_group_and_seals_the_segment() {
        let mut h = harness(100);
        let (appends, acks) = group(0..2);
        h.appender.write_group(appends);
        assert_eq!(outcomes(acks), [true, true]);

        h.faults.lock().unwrap().fail_sync_data = true;
        let (appends, acks) = group(2..4);
        h.appender.write_group(appends);
        assert_eq!(
            outcomes(acks),
            [false, false],
            "a failed fsync is a lost write"
        );
        // The segment is sealed as it was before the group and handed to the shipper.
        assert_eq!(h.sealed.try_recv().ok(), Some(0));
        assert_eq!(
            paths_in(&segment::path(h.dir.path(), 0, true)),
            ["/p/0", "/p/1"]
        );

        // Later appends go to a new segment.
        let (appends, acks) = group(4..5);
        h.appender.write_group(appends);
        assert_eq!(outcomes(acks), [true]);
        h.appender.seal();
        assert_eq!(h.sealed.try_recv().ok(), Some(1));
        assert_eq!(paths_in(&segment::path(h.dir.path(), 1, true)), ["/p/4"]);
        let on_disk: u64 = [0, 1]
            .map(|seq| {
                std::fs::metadata(segment::path(h.dir.path(), seq, true))
                    .unwrap()
                    .len()
            })
            .iter()
            .sum();
        assert_eq!(h.bytes.load(Ordering::Relaxed), on_disk, "byte gauge");
    }

    #[test]
    fn a_failed_seal_never_orphans_acknowledged_records() {
        let mut h = harness(2);
        let (appends, acks) = group(0..2);
        h.appender.write_group(appends);
        assert_eq!(outcomes(acks), [true, true]);

        // The full segment's seal fails once (its fsync).
        h.faults.lock().unwrap().fail_sync_all = true;
        let (appends, acks) = group(2..3);
        h.appender.write_group(appends);
        assert_eq!(outcomes(acks), [true], "the new segment took the record");
        // The acknowledged records of segment 0 are still handed over once a seal works.
        h.appender.housekeeping();
        h.appender.seal();
        let mut handed: Vec<u64> = std::iter::from_fn(|| h.sealed.try_recv().ok()).collect();
        handed.sort();
        assert_eq!(handed, [0, 1]);
        assert_eq!(
            paths_in(&segment::path(h.dir.path(), 0, true)),
            ["/p/0", "/p/1"]
        );
        assert_eq!(paths_in(&segment::path(h.dir.path(), 1, true)), ["/p/2"]);
    }
}
