//! Export and import of events, for moving data between installations, backups an operator
//! can read, and answering access requests in bulk. Streams: an export never holds the whole
//! result in memory, an import inserts in batches.
//!
//! Formats: JSON Lines (one `EventRow` object per line) and CSV (one column per field, the
//! property arrays as JSON arrays). Both round-trip exactly. CSV text cells that a spreadsheet
//! would run as a formula are written with a leading `'` (see `csv_safe`) and read back without.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use glimpse_core::csv_safe::{self, Text};
use glimpse_core::schema::{EventRow, EVENTS_TABLE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

/// A format name that is neither JSON Lines nor CSV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}: use jsonl or csv")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, UnknownFormat> {
        match s {
            "jsonl" | "ndjson" | "json" => Ok(Format::JsonLines),
            "csv" => Ok(Format::Csv),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("writing: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {reason}")]
    Parse { line: u64, reason: String },
}

/// The CSV shape of a row: the arrays as JSON text; every text column a [`Text`], so that a
/// visitor's `=HYPERLINK(…)` is written as `'=HYPERLINK(…)` and read back as it was.
#[derive(Debug, Serialize, Deserialize)]
struct CsvRow {
    site: Text,
    timestamp: u32,
    name: Text,
    hostname: Text,
    pathname: Text,
    entry_page: Text,
    referrer: Text,
    referrer_source: Text,
    utm_source: Text,
    utm_medium: Text,
    utm_campaign: Text,
    utm_term: Text,
    utm_content: Text,
    visit_referrer: Text,
    visit_referrer_source: Text,
    visit_utm_source: Text,
    visit_utm_medium: Text,
    visit_utm_campaign: Text,
    visit_utm_term: Text,
    visit_utm_content: Text,
    visitor_id: u64,
    session_id: u64,
    visit_start: u32,
    visit_entry: u8,
    visit_bounce: i8,
    visit_duration: u32,
    browser: Text,
    browser_version: Text,
    os: Text,
    os_version: Text,
    device: Text,
    country: Text,
    region: Text,
    city: Text,
    screen_width: u16,
    ip_prefix: Text,
    interactive: u8,
    scroll_depth: u8,
    engagement_ms: u32,
    prop_keys: Text,
    prop_values: Text,
    batch_id: u64,
}

impl From<&EventRow> for CsvRow {
    fn from(r: &EventRow) -> Self {
        let r = r.clone();
        CsvRow {
            prop_keys: Text(serde_json::to_string(&r.prop_keys).unwrap_or_default()),
            prop_values: Text(serde_json::to_string(&r.prop_values).unwrap_or_default()),
            site: Text(r.site),
            timestamp: r.timestamp,
            name: Text(r.name),
            hostname: Text(r.hostname),
            pathname: Text(r.pathname),
            entry_page: Text(r.entry_page),
            referrer: Text(r.referrer),
            referrer_source: Text(r.referrer_source),
            utm_source: Text(r.utm_source),
            utm_medium: Text(r.utm_medium),
            utm_campaign: Text(r.utm_campaign),
            utm_term: Text(r.utm_term),
            utm_content: Text(r.utm_content),
            visit_referrer: Text(r.visit_referrer),
            visit_referrer_source: Text(r.visit_referrer_source),
            visit_utm_source: Text(r.visit_utm_source),
            visit_utm_medium: Text(r.visit_utm_medium),
            visit_utm_campaign: Text(r.visit_utm_campaign),
            visit_utm_term: Text(r.visit_utm_term),
            visit_utm_content: Text(r.visit_utm_content),
            visitor_id: r.visitor_id,
            session_id: r.session_id,
            visit_start: r.visit_start,
            visit_entry: r.visit_entry,
            visit_bounce: r.visit_bounce,
            visit_duration: r.visit_duration,
            browser: Text(r.browser),
            browser_version: Text(r.browser_version),
            os: Text(r.os),
            os_version: Text(r.os_version),
            device: Text(r.device),
            country: Text(r.country),
            region: Text(r.region),
            city: Text(r.city),
            screen_width: r.screen_width,
            ip_prefix: Text(r.ip_prefix),
            interactive: r.interactive,
            scroll_depth: r.scroll_depth,
            engagement_ms: r.engagement_ms,
            batch_id: r.batch_id,
        }
    }
}

/// A CSV cell that should hold a JSON array of strings (`prop_keys`, `prop_values`) and does not.
#[derive(Debug, thiserror::Error)]
#[error("{column} is not a JSON array of strings: {source}")]
pub struct NotAnArray {
    column: &'static str,
    source: serde_json::Error,
}

impl TryFrom<CsvRow> for EventRow {
    type Error = NotAnArray;
    fn try_from(r: CsvRow) -> Result<Self, NotAnArray> {
        let array = |text: &str, column: &'static str| {
            serde_json::from_str::<Vec<String>>(text)
                .map_err(|source| NotAnArray { column, source })
        };
        Ok(EventRow {
            prop_keys: array(&r.prop_keys.0, "prop_keys")?,
            prop_values: array(&r.prop_values.0, "prop_values")?,
            site: r.site.0,
            timestamp: r.timestamp,
            name: r.name.0,
            hostname: r.hostname.0,
            pathname: r.pathname.0,
            entry_page: r.entry_page.0,
            referrer: r.referrer.0,
            referrer_source: r.referrer_source.0,
            utm_source: r.utm_source.0,
            utm_medium: r.utm_medium.0,
            utm_campaign: r.utm_campaign.0,
            utm_term: r.utm_term.0,
            utm_content: r.utm_content.0,
            visit_referrer: r.visit_referrer.0,
            visit_referrer_source: r.visit_referrer_source.0,
            visit_utm_source: r.visit_utm_source.0,
            visit_utm_medium: r.visit_utm_medium.0,
            visit_utm_campaign: r.visit_utm_campaign.0,
            visit_utm_term: r.visit_utm_term.0,
            visit_utm_content: r.visit_utm_content.0,
            visitor_id: r.visitor_id,
            session_id: r.session_id,
            visit_start: r.visit_start,
            visit_entry: r.visit_entry,
            visit_bounce: r.visit_bounce,
            visit_duration: r.visit_duration,
            browser: r.browser.0,
            browser_version: r.browser_version.0,
            os: r.os.0,
            os_version: r.os_version.0,
            device: r.device.0,
            country: r.country.0,
            region: r.region.0,
            city: r.city.0,
            screen_width: r.screen_width,
            ip_prefix: r.ip_prefix.0,
            interactive: r.interactive,
            scroll_depth: r.scroll_depth,
            engagement_ms: r.engagement_ms,
            batch_id: r.batch_id,
        })
    }
}

/// Streams `site`'s events with `from <= timestamp < to` (Unix seconds) to `out`; returns the
/// number of rows.
pub async fn export(
    client: &clickhouse::Client,
    db: &str,
    site: &str,
    from: u32,
    to: u32,
    format: Format,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    let mut cursor = client
        .query(&format!(
            "SELECT ?fields FROM {db}.{EVENTS_TABLE} WHERE site = ? \
             AND timestamp >= toDateTime(?) AND timestamp < toDateTime(?) ORDER BY timestamp"
        ))
        .bind(site)
        .bind(from)
        .bind(to)
        .fetch::<EventRow>()?;
    let mut rows = 0;
    match format {
        Format::Csv => {
            // The writer's own buffer is small and bounded: rows stream through it.
            let mut writer = csv_safe::Writer::new(&mut *out);
            while let Some(row) = cursor.next().await? {
                writer
                    .serialize(CsvRow::from(&row))
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                rows += 1;
            }
            writer.flush()?;
        }
        Format::JsonLines => {
            while let Some(row) = cursor.next().await? {
                serde_json::to_writer(&mut *out, &row).map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
                rows += 1;
            }
        }
    }
    out.flush()?;
    Ok(rows)
}

/// Reads rows in `format` from `input` and inserts them in batches of `batch` rows; returns
/// the number of rows. A bad line stops the import with its line number; batches before it
/// are inserted.
pub async fn import(
    client: &clickhouse::Client,
    db: &str,
    input: impl BufRead,
    format: Format,
    batch: usize,
) -> Result<u64, ExportError> {
    let client = client.clone().with_database(db);
    let mut pending: Vec<EventRow> = Vec::with_capacity(batch);
    let mut total = 0;
    let flush = |rows: Vec<EventRow>| {
        let client = client.clone();
        async move {
            let mut insert = client.insert::<EventRow>(EVENTS_TABLE).await?;
            for row in &rows {
                insert.write(row).await?;
            }
            insert.end().await
        }
    };
    match format {
        Format::JsonLines => {
            for (i, line) in input.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let row: EventRow =
                    serde_json::from_str(&line).map_err(|e| ExportError::Parse {
                        line: i as u64 + 1,
                        reason: e.to_string(),
                    })?;
                pending.push(row);
                if pending.len() >= batch {
                    total += pending.len() as u64;
                    flush(std::mem::take(&mut pending)).await?;
                }
            }
        }
        Format::Csv => {
            let mut reader = csv::Reader::from_reader(input);
            for (i, record) in reader.deserialize::<CsvRow>().enumerate() {
                let parse = |reason: String| ExportError::Parse {
                    line: i as u64 + 2,
                    reason,
                };
                let row = record.map_err(|e| parse(e.to_string()))?;
                pending.push(EventRow::try_from(row).map_err(|e| parse(e.to_string()))?);
                if pending.len() >= batch {
                    total += pending.len() as u64;
                    flush(std::mem::take(&mut pending)).await?;
                }
            }
        }
    }
    if !pending.is_empty() {
        total += pending.len() as u64;
        flush(pending).await?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_round_trip() {
        let row = EventRow {
            site: "example.com".into(),
            timestamp: 1_700_000_000,
            pathname: "/a,\"b\"\nc".into(),
            prop_keys: vec!["k".into(), "é".into()],
            prop_values: vec!["v, \"q\"".into(), String::new()],
            visitor_id: u64::MAX,
            ..EventRow::default()
        };
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(CsvRow::from(&row)).unwrap();
        let bytes = writer.into_inner().unwrap();
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let back: CsvRow = reader.deserialize().next().unwrap().unwrap();
        assert_eq!(EventRow::try_from(back).unwrap(), row);
    }

    #[test]
    fn a_property_cell_that_is_not_an_array_is_named() {
        let mut row = CsvRow::from(&EventRow::default());
        row.prop_values = Text("k=v".into());
        let error = EventRow::try_from(row).unwrap_err().to_string();
        assert!(
            error.starts_with("prop_values is not a JSON array of strings: "),
            "{error}"
        );
    }

    #[test]
    fn formats() {
        assert_eq!("csv".parse::<Format>(), Ok(Format::Csv));
        assert_eq!("jsonl".parse::<Format>(), Ok(Format::JsonLines));
        assert_eq!(
            "xml".parse::<Format>().unwrap_err().to_string(),
            "unknown format \"xml\": use jsonl or csv"
        );
    }
}
