//! The payload of one spool record: the rows of one accepted beacon.
//!
//! Two versions, told apart by the payload's first byte, so a spool written by an older
//! release is still read (and shipped) by this one:
//!
//! - v1 (releases up to 2026-12-07): a JSON array of `EventRow` (first byte `[`).
//! - v2 (written now): the byte `0x02`, the row count, then each row's fields in declaration
//!   order — strings and lists as a LEB128 length and their bytes, numbers little-endian.
//!   About 3× faster to encode than JSON and half the bytes (see BENCHMARKS.md, issue 21).
//!
//! Decoding never panics: a payload that does not hold exactly what it says is `None` (the
//! record's checksum has already passed, so that means a bug or a foreign file, not a torn
//! write).

use glimpse_core::schema::EventRow;

const V2: u8 = 0x02;
const V1_FIRST_BYTE: u8 = b'[';

/// Appends the v2 payload of `rows` to `out`.
pub fn encode(rows: &[EventRow], out: &mut Vec<u8>) {
    out.push(V2);
    put_len(out, rows.len());
    for row in rows {
        encode_row(row, out);
    }
}

/// The rows of a v1 or v2 payload, or `None` if it is neither.
pub fn decode(payload: &[u8]) -> Option<Vec<EventRow>> {
    match payload.first()? {
        &V1_FIRST_BYTE => serde_json::from_slice(payload).ok(),
        &V2 => {
            let mut reader = Reader {
                bytes: &payload[1..],
            };
            let count = reader.len()?;
            // Every row takes at least one byte per field: a count beyond the bytes left is
            // corruption, and must not reserve memory for it.
            if count > reader.bytes.len() {
                return None;
            }
            let mut rows = Vec::with_capacity(count);
            for _ in 0..count {
                rows.push(decode_row(&mut reader)?);
            }
            reader.bytes.is_empty().then_some(rows)
        }
        _ => None,
    }
}

fn encode_row(row: &EventRow, out: &mut Vec<u8>) {
    // Destructured without `..`: a new column fails to compile here until it is encoded
    // (appended at the end, with `decode_row` in step).
    let EventRow {
        site,
        timestamp,
        name,
        hostname,
        pathname,
        entry_page,
        referrer,
        referrer_source,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
        visit_referrer,
        visit_referrer_source,
        visit_utm_source,
        visit_utm_medium,
        visit_utm_campaign,
        visit_utm_term,
        visit_utm_content,
        visitor_id,
        session_id,
        visit_start,
        visit_entry,
        visit_bounce,
        visit_duration,
        browser,
        browser_version,
        os,
        os_version,
        device,
        country,
        region,
        city,
        screen_width,
        ip_prefix,
        interactive,
        scroll_depth,
        engagement_ms,
        prop_keys,
        prop_values,
        batch_id,
    } = row;
    put_str(out, site);
    out.extend_from_slice(&timestamp.to_le_bytes());
    for text in [
        name,
        hostname,
        pathname,
        entry_page,
        referrer,
        referrer_source,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
        visit_referrer,
        visit_referrer_source,
        visit_utm_source,
        visit_utm_medium,
        visit_utm_campaign,
        visit_utm_term,
        visit_utm_content,
    ] {
        put_str(out, text);
    }
    out.extend_from_slice(&visitor_id.to_le_bytes());
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&visit_start.to_le_bytes());
    out.push(*visit_entry);
    out.extend_from_slice(&visit_bounce.to_le_bytes());
    out.extend_from_slice(&visit_duration.to_le_bytes());
    for text in [
        browser,
        browser_version,
        os,
        os_version,
        device,
        country,
        region,
        city,
    ] {
        put_str(out, text);
    }
    out.extend_from_slice(&screen_width.to_le_bytes());
    put_str(out, ip_prefix);
    out.push(*interactive);
    out.push(*scroll_depth);
    out.extend_from_slice(&engagement_ms.to_le_bytes());
    for list in [prop_keys, prop_values] {
        put_len(out, list.len());
        for text in list {
            put_str(out, text);
        }
    }
    out.extend_from_slice(&batch_id.to_le_bytes());
}

fn decode_row(r: &mut Reader<'_>) -> Option<EventRow> {
    // Struct literal fields are evaluated in the order written: the order of `encode_row`.
    Some(EventRow {
        site: r.string()?,
        timestamp: u32::from_le_bytes(r.array()?),
        name: r.string()?,
        hostname: r.string()?,
        pathname: r.string()?,
        entry_page: r.string()?,
        referrer: r.string()?,
        referrer_source: r.string()?,
        utm_source: r.string()?,
        utm_medium: r.string()?,
        utm_campaign: r.string()?,
        utm_term: r.string()?,
        utm_content: r.string()?,
        visit_referrer: r.string()?,
        visit_referrer_source: r.string()?,
        visit_utm_source: r.string()?,
        visit_utm_medium: r.string()?,
        visit_utm_campaign: r.string()?,
        visit_utm_term: r.string()?,
        visit_utm_content: r.string()?,
        visitor_id: u64::from_le_bytes(r.array()?),
        session_id: u64::from_le_bytes(r.array()?),
        visit_start: u32::from_le_bytes(r.array()?),
        visit_entry: u8::from_le_bytes(r.array()?),
        visit_bounce: i8::from_le_bytes(r.array()?),
        visit_duration: u32::from_le_bytes(r.array()?),
        browser: r.string()?,
        browser_version: r.string()?,
        os: r.string()?,
        os_version: r.string()?,
        device: r.string()?,
        country: r.string()?,
        region: r.string()?,
        city: r.string()?,
        screen_width: u16::from_le_bytes(r.array()?),
        ip_prefix: r.string()?,
        interactive: u8::from_le_bytes(r.array()?),
        scroll_depth: u8::from_le_bytes(r.array()?),
        engagement_ms: u32::from_le_bytes(r.array()?),
        prop_keys: r.strings()?,
        prop_values: r.strings()?,
        batch_id: u64::from_le_bytes(r.array()?),
    })
}

fn put_len(out: &mut Vec<u8>, mut len: usize) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn len(&mut self) -> Option<usize> {
        let mut len = 0usize;
        for shift in (0..64).step_by(7) {
            let [byte] = self.array()?;
            len |= usize::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(len);
            }
        }
        None
    }

    fn string(&mut self) -> Option<String> {
        let len = self.len()?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }

    fn strings(&mut self) -> Option<Vec<String>> {
        let count = self.len()?;
        if count > self.bytes.len() {
            return None;
        }
        (0..count).map(|_| self.string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_row() -> EventRow {
        let mut n = 0u8;
        let mut text = |label: &str| {
            n += 1;
            format!("{label}-{n}-é")
        };
        EventRow {
            site: text("site"),
            timestamp: 1_765_000_000,
            name: text("name"),
            hostname: text("host"),
            pathname: text("/path"),
            entry_page: text("/entry"),
            referrer: text("ref"),
            referrer_source: text("src"),
            utm_source: text("us"),
            utm_medium: text("um"),
            utm_campaign: text("uc"),
            utm_term: text("ut"),
            utm_content: text("uco"),
            visit_referrer: text("vr"),
            visit_referrer_source: text("vrs"),
            visit_utm_source: text("vus"),
            visit_utm_medium: text("vum"),
            visit_utm_campaign: text("vuc"),
            visit_utm_term: text("vut"),
            visit_utm_content: text("vuco"),
            visitor_id: u64::MAX - 1,
            session_id: 0x0102_0304_0506_0708,
            visit_start: 1_764_999_000,
            visit_entry: 1,
            visit_bounce: -1,
            visit_duration: 1000,
            browser: text("b"),
            browser_version: text("bv"),
            os: text("os"),
            os_version: text("osv"),
            device: text("d"),
            country: text("c"),
            region: text("r"),
            city: text("city"),
            screen_width: 1440,
            ip_prefix: text("ip"),
            interactive: 1,
            scroll_depth: 87,
            engagement_ms: 12_345,
            prop_keys: vec![text("k"), "x".repeat(300)],
            prop_values: vec![text("v"), String::new()],
            batch_id: 42,
        }
    }

    #[test]
    fn v2_round_trips_every_field() {
        let rows = vec![full_row(), EventRow::default(), full_row()];
        let mut out = Vec::new();
        encode(&rows, &mut out);
        assert_eq!(out[0], V2);
        assert_eq!(decode(&out), Some(rows));
    }

    #[test]
    fn v1_json_payloads_are_still_read() {
        let rows = vec![full_row(), EventRow::default()];
        let json = serde_json::to_vec(&rows).unwrap();
        assert_eq!(decode(&json), Some(rows));
    }

    #[test]
    fn truncated_or_padded_payloads_are_refused() {
        let mut out = Vec::new();
        encode(&[full_row()], &mut out);
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]), None, "cut at {cut}");
        }
        out.push(0);
        assert_eq!(decode(&out), None, "trailing byte");
        assert_eq!(decode(&[0x07, 1, 2]), None, "unknown version");
        // A huge count or length in few bytes is refused without reserving memory for it.
        assert_eq!(decode(&[V2, 0xff, 0xff, 0xff, 0xff, 0x0f]), None);
        assert_eq!(
            decode(&[V2, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            None
        );
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut out = Vec::new();
        encode(
            &[EventRow {
                site: "ab".into(),
                ..EventRow::default()
            }],
            &mut out,
        );
        // The site's bytes follow the version, the count and the length.
        out[3] = 0xff;
        assert_eq!(decode(&out), None);
    }

    #[test]
    fn lengths_use_leb128() {
        let mut out = Vec::new();
        for len in [0, 1, 127, 128, 300, 1 << 20, usize::MAX] {
            out.clear();
            put_len(&mut out, len);
            assert_eq!(Reader { bytes: &out }.len(), Some(len), "{len}");
        }
    }
}
