//! The on-disk format of one spool segment: a header naming the segment's batch id, then
//! checksummed records, each holding the rows of one accepted beacon.
//!
//! ```text
//! header:  b"GLSPOOL1" | batch_id: u64 LE
//! record:  len: u32 LE | crc32(payload): u32 LE | payload (JSON array of EventRow)
//! ```
//!
//! Records are only appended. A crash can leave a torn last record. [`read`] stops at the first
//! record whose length or checksum does not hold, keeps everything before it, and reports how
//! many bytes were past that point. [`scan`] (what the spool ships from) also resynchronises
//! after a damaged stretch: records are self-delimiting and checksummed, so the next offset
//! where a whole record checks out is the next record, and everything valid after the damage
//! is kept.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use glimpse_core::schema::EventRow;

const MAGIC: &[u8; 8] = b"GLSPOOL1";
pub const HEADER_LEN: u64 = 16;
const RECORD_HEADER_LEN: usize = 8;
/// A record larger than this is corruption, not data (a beacon body is at most a few KiB).
const MAX_RECORD_LEN: u32 = 64 * 1024 * 1024;

/// A segment's file name: `<seq>.open` while written, `<seq>.seg` once sealed.
pub fn path(dir: &Path, seq: u64, sealed: bool) -> PathBuf {
    dir.join(format!("{seq:020}.{}", if sealed { "seg" } else { "open" }))
}

/// `(seq, sealed)` from a segment file name, or `None` for other files.
pub fn parse_name(name: &str) -> Option<(u64, bool)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let seq = stem.parse().ok()?;
    match ext {
        "seg" => Some((seq, true)),
        "open" => Some((seq, false)),
        _ => None,
    }
}

/// Creates a new segment file with its header. If the header cannot be written (a full
/// disk), the file is removed again: failed attempts leave nothing behind.
pub fn create(path: &Path, batch_id: u64) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&batch_id.to_le_bytes());
    if let Err(error) = file.write_all(&header) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(error);
    }
    Ok(file)
}

/// One record's bytes, ready to append.
pub fn encode_record(rows: &[EventRow]) -> Vec<u8> {
    // One buffer, sized for a typical row, with the payload serialised in place behind a
    // header filled in after: no second allocation and copy of the payload.
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + 1024 * rows.len());
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    // Serialising plain structs of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, rows);
    let payload = &out[RECORD_HEADER_LEN..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    out[..4].copy_from_slice(&len);
    out[4..RECORD_HEADER_LEN].copy_from_slice(&crc);
    out
}

/// What reading a segment found.
#[derive(Debug)]
pub struct Contents {
    pub batch_id: u64,
    pub rows: Vec<EventRow>,
    /// Bytes of valid header and records.
    pub valid_len: u64,
    /// Damaged bytes (a torn or corrupt tail, and with [`scan`] stretches in the middle);
    /// 0 for an intact segment.
    pub damaged_bytes: u64,
    /// With [`scan`]: damaged stretches followed by valid records, as (offset, bytes). Each
    /// held at least one record that is lost.
    pub skipped: Vec<(u64, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("cannot read spool segment {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool segment {0} has no valid header")]
    BadHeader(PathBuf),
}

/// Reads a segment, keeping the valid prefix of its records.
pub fn read(path: &Path) -> Result<Contents, SegmentError> {
    parse(path, false)
}

/// Reads a segment, keeping every valid record: after a damaged stretch it resynchronises on
/// the next valid record. `valid_len` is the end of the last valid record.
pub fn scan(path: &Path) -> Result<Contents, SegmentError> {
    parse(path, true)
}

fn parse(path: &Path, resync: bool) -> Result<Contents, SegmentError> {
    let io = |source| SegmentError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() < HEADER_LEN as usize || &bytes[..8] != MAGIC {
        return Err(SegmentError::BadHeader(path.to_path_buf()));
    }
    let batch_id = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut at = HEADER_LEN as usize;
    let mut end = at;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        match record_at(&bytes, at) {
            Some((mut decoded, next)) => {
                if at > end {
                    skipped.push((end as u64, (at - end) as u64));
                }
                rows.append(&mut decoded);
                at = next;
                end = next;
            }
            None if resync => at += 1,
            None => break,
        }
    }
    let skipped_bytes: u64 = skipped.iter().map(|(_, len)| len).sum();
    Ok(Contents {
        batch_id,
        rows,
        valid_len: end as u64,
        damaged_bytes: (bytes.len() - end) as u64 + skipped_bytes,
        skipped,
    })
}

/// The rows of a whole, valid record at `at`, and where the next record starts.
fn record_at(bytes: &[u8], at: usize) -> Option<(Vec<EventRow>, usize)> {
    let header = bytes.get(at..at + RECORD_HEADER_LEN)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len > MAX_RECORD_LEN {
        return None;
    }
    let start = at + RECORD_HEADER_LEN;
    let payload = bytes.get(start..start + len as usize)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let rows = serde_json::from_slice::<Vec<EventRow>>(payload).ok()?;
    Some((rows, start + len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u32) -> EventRow {
        EventRow {
            site: "example.com".into(),
            timestamp: i,
            pathname: format!("/p/{i}"),
            prop_keys: vec!["k".into()],
            prop_values: vec![format!("v{i}")],
            ..EventRow::default()
        }
    }

    fn write_segment(dir: &Path, records: &[Vec<EventRow>]) -> PathBuf {
        let path = path(dir, 7, false);
        let mut file = create(&path, 0xDEAD_BEEF).unwrap();
        for rows in records {
            file.write_all(&encode_record(rows)).unwrap();
        }
        path
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), &[vec![row(1)], vec![row(2), row(3)]]);
        let c = read(&path).unwrap();
        assert_eq!(c.batch_id, 0xDEAD_BEEF);
        assert_eq!(c.rows, [row(1), row(2), row(3)]);
        assert_eq!(c.damaged_bytes, 0);
        assert_eq!(c.valid_len, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn torn_tail_keeps_the_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), &[vec![row(1)], vec![row(2)]]);
        let full = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in half.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 10).unwrap();
        let c = read(&path).unwrap();
        assert_eq!(c.rows, [row(1)]);
        assert!(c.damaged_bytes > 0);
    }

    #[test]
    fn corrupt_bytes_and_garbage_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), &[vec![row(1)], vec![row(2)], vec![row(3)]]);
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte inside the second record's payload.
        let first_len = 8 + encode_record(&[row(1)]).len();
        bytes[first_len + 12] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let c = read(&path).unwrap();
        assert_eq!(c.rows, [row(1)], "stops at the corrupt record");
        assert!(c.damaged_bytes > 0);
    }

    #[test]
    fn scan_resynchronises_after_a_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), &[vec![row(1)], vec![row(2)], vec![row(3)]]);
        let mut bytes = std::fs::read(&path).unwrap();
        let first = HEADER_LEN as usize + encode_record(&[row(1)]).len();
        let second = encode_record(&[row(2)]).len();
        bytes[first + 12] ^= 0xff;
        // ...and a torn record after the last one.
        let torn = encode_record(&[row(4)]);
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let c = scan(&path).unwrap();
        assert_eq!(
            c.rows,
            [row(1), row(3)],
            "keeps the record after the damage"
        );
        assert_eq!(c.skipped, [(first as u64, second as u64)]);
        assert_eq!(c.valid_len as usize, bytes.len() - torn.len() / 2);
        assert_eq!(c.damaged_bytes as usize, second + torn.len() / 2);
    }

    #[test]
    fn appended_garbage_and_absurd_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), &[vec![row(1)]]);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0xff; 37]).unwrap();
        let c = read(&path).unwrap();
        assert_eq!(c.rows, [row(1)]);
        assert_eq!(c.damaged_bytes, 37);
    }

    #[test]
    fn bad_header_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("1.seg");
        std::fs::write(&p, b"nonsense").unwrap();
        assert!(matches!(read(&p), Err(SegmentError::BadHeader(_))));
    }

    #[test]
    fn names() {
        let dir = Path::new("/s");
        assert_eq!(path(dir, 3, true), Path::new("/s/00000000000000000003.seg"));
        assert_eq!(parse_name("00000000000000000003.seg"), Some((3, true)));
        assert_eq!(parse_name("00000000000000000004.open"), Some((4, false)));
        assert_eq!(parse_name("x.seg"), None);
        assert_eq!(parse_name("5.tmp"), None);
    }
}
