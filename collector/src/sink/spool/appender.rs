//! The appender: one OS thread (file I/O blocks) that owns the open segment. It takes every
//! append waiting in the queue as one group, writes the group, syncs it per the fsync policy,
//! then acknowledges each append (group commit). It seals a segment — sync, rename to `.seg`,
//! hand it to the shipper — when it reaches its row limit or age, or when the UTC day changes
//! (so a batch never spans two partitions and its insert stays atomic).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{segment, Append, FsyncPolicy, SpoolConfig};

/// Most appends written as one group.
const MAX_GROUP: usize = 4096;

struct OpenSegment {
    seq: u64,
    file: File,
    /// Records of the current group not yet written: one `write` per group, not per event.
    pending: Vec<u8>,
    rows: usize,
    day: u32,
    opened: Instant,
}

impl OpenSegment {
    fn write_pending(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }
}

struct Appender {
    dir: PathBuf,
    fsync: FsyncPolicy,
    max_rows: usize,
    max_age: Duration,
    next_seq: u64,
    open: Option<OpenSegment>,
    last_sync: Instant,
    dirty: bool,
    sealed: UnboundedSender<u64>,
    bytes: Arc<AtomicU64>,
}

pub(super) fn spawn(
    config: &SpoolConfig,
    next_seq: u64,
    rx: Receiver<Append>,
    sealed: UnboundedSender<u64>,
    bytes: Arc<AtomicU64>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut appender = Appender {
        dir: config.dir.clone(),
        fsync: config.fsync,
        max_rows: config.segment_max_rows.max(1),
        max_age: config.segment_max_age,
        next_seq,
        open: None,
        last_sync: Instant::now(),
        dirty: false,
        sealed,
        bytes,
    };
    std::thread::Builder::new()
        .name("glimpse-spool".into())
        .spawn(move || appender.run(rx))
}

impl Appender {
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
        if let Err(error) = self.seal() {
            tracing::error!(%error, "spool: sealing the last segment failed; it is replayed at the next start");
        }
    }

    /// How long to wait for the next append before sealing or syncing.
    fn wait(&self) -> Duration {
        let mut wait = Duration::from_millis(500);
        if let Some(open) = &self.open {
            wait = wait.min(self.max_age.saturating_sub(open.opened.elapsed()));
        }
        if let (FsyncPolicy::Interval(every), true) = (self.fsync, self.dirty) {
            wait = wait.min(every.saturating_sub(self.last_sync.elapsed()));
        }
        wait.max(Duration::from_millis(1))
    }

    fn write_group(&mut self, group: Vec<Append>) {
        let mut written = Vec::with_capacity(group.len());
        for append in group {
            let result = self.add_record(&append);
            written.push((append.ack, result));
        }
        // Durability before acknowledgement, per policy.
        let flushed = self.write_pending();
        let synced = flushed.and_then(|()| match self.fsync {
            FsyncPolicy::Always => self.sync(),
            _ => Ok(()),
        });
        // One failure fails the whole group: a record acknowledged before a failed write or
        // seal in the same group may not be on disk.
        let failure = written
            .iter()
            .find_map(|(_, r)| r.clone().err())
            .or(synced.err());
        for (ack, _) in written {
            let _ = ack.send(match &failure {
                Some(error) => Err(error.clone()),
                None => Ok(()),
            });
        }
    }

    /// Adds a record to the open segment's pending bytes (sealing the segment first when the
    /// record belongs in a new one).
    fn add_record(&mut self, append: &Append) -> Result<(), String> {
        let needs_new = match &self.open {
            Some(open) => open.day != append.day || open.rows >= self.max_rows,
            None => true,
        };
        if needs_new {
            self.seal().map_err(|e| e.to_string())?;
            self.open_segment(append.day).map_err(|e| e.to_string())?;
        }
        let open = self.open.as_mut().ok_or("no open segment")?;
        open.pending.extend_from_slice(&append.record);
        open.rows += append.rows;
        self.dirty = true;
        self.bytes
            .fetch_add(append.record.len() as u64, Ordering::Relaxed);
        metrics::gauge!("glimpse_spool_bytes").set(self.bytes.load(Ordering::Relaxed) as f64);
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), String> {
        match self.open.as_mut() {
            Some(open) => open
                .write_pending()
                .map_err(|e| format!("appending to spool segment {}: {e}", open.seq)),
            None => Ok(()),
        }
    }

    fn housekeeping(&mut self) {
        if let (FsyncPolicy::Interval(every), true) = (self.fsync, self.dirty) {
            if self.last_sync.elapsed() >= every {
                if let Err(error) = self.sync() {
                    tracing::error!(%error, "spool fsync failed");
                }
            }
        }
        let due = self.open.as_ref().is_some_and(|open| {
            open.rows >= self.max_rows || open.opened.elapsed() >= self.max_age
        });
        if due {
            if let Err(error) = self.seal() {
                tracing::error!(%error, "spool: sealing a segment failed");
            }
        }
    }

    fn sync(&mut self) -> Result<(), String> {
        if let Some(open) = &self.open {
            if self.dirty {
                open.file
                    .sync_data()
                    .map_err(|e| format!("fsync of spool segment {}: {e}", open.seq))?;
            }
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn open_segment(&mut self, day: u32) -> std::io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let batch_id = random_batch_id()?;
        let path = segment::path(&self.dir, seq, false);
        let file = segment::create(&path, batch_id)?;
        self.bytes.fetch_add(segment::HEADER_LEN, Ordering::Relaxed);
        sync_dir(&self.dir);
        self.open = Some(OpenSegment {
            seq,
            file,
            pending: Vec::new(),
            rows: 0,
            day,
            opened: Instant::now(),
        });
        Ok(())
    }

    /// Makes the open segment durable, renames it `.seg` and hands it to the shipper.
    fn seal(&mut self) -> std::io::Result<()> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        open.write_pending()?;
        open.file.sync_all()?;
        self.dirty = false;
        let from = segment::path(&self.dir, open.seq, false);
        let to = segment::path(&self.dir, open.seq, true);
        std::fs::rename(&from, &to)?;
        sync_dir(&self.dir);
        let _ = self.sealed.send(open.seq);
        Ok(())
    }
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
