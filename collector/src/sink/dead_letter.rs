//! The dead-letter directory (`<data_dir>/dead-letter`): batches ClickHouse refused for good
//! (a permanent error, e.g. a column the table no longer has) are set aside here instead of
//! blocking ingest behind them. One file per batch, `<unix millis>-<n>.jsonl`, one row per
//! line in ClickHouse's `JSONEachRow` format, so an operator can read it and, once the cause
//! is fixed, replay it: `clickhouse-client --query "INSERT INTO glimpse.events FORMAT
//! JSONEachRow" < FILE`. The rows are exactly those ClickHouse would have stored: no raw IP
//! address or user agent.
//!
//! A file is complete and on disk (fsynced, renamed into place) before the batch is let go
//! anywhere else, so a batch is always in ClickHouse, in the spool or here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::SinkError;
use glimpse_core::schema::EventRow;

/// Numbers files written in the same millisecond apart.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Where refused batches go.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    dir: PathBuf,
}

impl DeadLetter {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `rows` (refused with `error`) to a new file, durably; counts the batch and logs
    /// it once, with the error and the file but not the rows. Returns the file's path.
    pub fn store(&self, rows: &[EventRow], error: &SinkError) -> std::io::Result<PathBuf> {
        let path = self.write(rows)?;
        metrics::counter!("glimpse_sink_dead_letter_batches_total").increment(1);
        metrics::counter!("glimpse_sink_dead_letter_rows_total").increment(rows.len() as u64);
        tracing::error!(
            %error,
            rows = rows.len(),
            file = %path.display(),
            "ClickHouse refused a batch for good: set aside in the dead-letter directory, not retried"
        );
        Ok(path)
    }

    /// [`store`](Self::store), for the retry loops: a failure to write the file (disk full)
    /// comes back as a transient error, so the batch stays where it is and is tried again.
    pub fn set_aside(&self, rows: &[EventRow], error: SinkError) -> Result<PathBuf, SinkError> {
        self.store(rows, &error).map_err(|io| {
            SinkError::transient(
                rows.len(),
                format!(
                    "{error}; and writing the batch to {} failed: {io}",
                    self.dir.display()
                ),
            )
        })
    }

    fn write(&self, rows: &[EventRow]) -> std::io::Result<PathBuf> {
        let mut body = Vec::new();
        for row in rows {
            serde_json::to_writer(&mut body, row).map_err(std::io::Error::other)?;
            body.push(b'\n');
        }
        std::fs::create_dir_all(&self.dir)?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let name = format!("{millis}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let partial = self.dir.join(format!("{name}.jsonl.partial"));
        let path = self.dir.join(format!("{name}.jsonl"));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&partial)?;
            file.write_all(&body)?;
            file.sync_all()?;
            std::fs::rename(&partial, &path)?;
            // The rename is durable only once the directory is.
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_becomes_one_json_line_per_row() {
        let dir = tempfile::tempdir().unwrap();
        let dead_letter = DeadLetter::new(dir.path().join("dead-letter"));
        let rows: Vec<EventRow> = (0..3)
            .map(|i| EventRow {
                site: "example.com".into(),
                pathname: format!("/p/{i}"),
                prop_keys: vec!["k".into()],
                prop_values: vec!["v\n\"w\"".into()],
                batch_id: 7,
                ..EventRow::default()
            })
            .collect();
        let first = dead_letter
            .store(&rows, &SinkError::permanent(3, "refused"))
            .unwrap();
        let second = dead_letter
            .store(&rows[..1], &SinkError::permanent(1, "refused"))
            .unwrap();
        assert_ne!(first, second);
        let text = std::fs::read_to_string(&first).unwrap();
        assert_eq!(text.lines().count(), 3);
        let back: Vec<EventRow> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, rows);
        // Only complete files, no leftovers.
        let mut names: Vec<String> = std::fs::read_dir(dead_letter.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2);
        assert!(names.iter().all(|n| n.ends_with(".jsonl")), "{names:?}");
    }

    #[test]
    fn a_failed_write_is_an_error_not_a_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be.
        let blocked = dir.path().join("dead-letter");
        std::fs::write(&blocked, b"").unwrap();
        let dead_letter = DeadLetter::new(blocked);
        assert!(dead_letter
            .store(&[EventRow::default()], &SinkError::permanent(1, "refused"))
            .is_err());
    }
}
