//! Import of Plausible's CSV export (Settings → Imports & Exports → Export data): a ZIP of
//! daily aggregates, one CSV per table (`imported_visitors_20240101_20241231.csv`,
//! `imported_sources_…`, `imported_pages_…`, …), the same files Plausible's own CSV importer
//! reads. They hold counts per day and dimension, never visitors, so they land in their own
//! table (`imported_daily`) and the stats API adds them to Glimpse's figures when asked
//! (`with_imported=true`).
//!
//! Columns are found by their header names, so older exports (fewer columns) and newer ones
//! (more) both read; a missing metric counts 0, a missing required column stops the import
//! with the file and column named. Nothing is written until every file has parsed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use jiff::civil::Date;
use jiff::tz::TimeZone;

use glimpse_core::schema::{ImportedRow, IMPORTED_TABLE};

/// The tables of Plausible's export that Glimpse reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Visitors,
    Sources,
    Pages,
    EntryPages,
    ExitPages,
    CustomEvents,
    Locations,
    Devices,
    Browsers,
    OperatingSystems,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Visitors,
        Kind::Sources,
        Kind::Pages,
        Kind::EntryPages,
        Kind::ExitPages,
        Kind::CustomEvents,
        Kind::Locations,
        Kind::Devices,
        Kind::Browsers,
        Kind::OperatingSystems,
    ];

    /// The table's name without Plausible's `imported_` prefix; also the stored `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Visitors => "visitors",
            Kind::Sources => "sources",
            Kind::Pages => "pages",
            Kind::EntryPages => "entry_pages",
            Kind::ExitPages => "exit_pages",
            Kind::CustomEvents => "custom_events",
            Kind::Locations => "locations",
            Kind::Devices => "devices",
            Kind::Browsers => "browsers",
            Kind::OperatingSystems => "operating_systems",
        }
    }

    /// The table a file holds, from its name as Plausible writes it
    /// (`[imported_]<table>_<YYYYMMDD>_<YYYYMMDD>.csv`); `None` for any other file.
    pub fn of_file_name(file_name: &str) -> Option<Kind> {
        let stem = file_name.strip_suffix(".csv")?;
        let stem = stem.strip_prefix("imported_").unwrap_or(stem);
        // `<table>_<8 digits>_<8 digits>`
        let (rest, last) = stem.rsplit_once('_')?;
        let (table, first) = rest.rsplit_once('_')?;
        let is_date = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit());
        if !is_date(first) || !is_date(last) {
            return None;
        }
        Kind::ALL.into_iter().find(|k| k.name() == table)
    }

    /// `(header, column)` of the dimension values: stored column names, with Plausible's
    /// header where it differs. The first one is required; the others came in later versions.
    fn dimensions(self) -> &'static [(&'static str, Dimension)] {
        use Dimension as D;
        match self {
            Kind::Visitors => &[],
            Kind::Sources => &[
                ("source", D::Source),
                ("referrer", D::Referrer),
                ("utm_source", D::UtmSource),
                ("utm_medium", D::UtmMedium),
                ("utm_campaign", D::UtmCampaign),
                ("utm_content", D::UtmContent),
                ("utm_term", D::UtmTerm),
            ],
            Kind::Pages => &[("page", D::Page), ("hostname", D::Hostname)],
            Kind::EntryPages => &[("entry_page", D::EntryPage)],
            Kind::ExitPages => &[("exit_page", D::ExitPage)],
            Kind::CustomEvents => &[("name", D::Name)],
            Kind::Locations => &[("country", D::Country), ("region", D::Region)],
            Kind::Devices => &[("device", D::Device)],
            Kind::Browsers => &[
                ("browser", D::Browser),
                ("browser_version", D::BrowserVersion),
            ],
            Kind::OperatingSystems => &[
                ("operating_system", D::Os),
                ("operating_system_version", D::OsVersion),
            ],
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Dimension {
    Hostname,
    Page,
    EntryPage,
    ExitPage,
    Source,
    Referrer,
    UtmSource,
    UtmMedium,
    UtmCampaign,
    UtmTerm,
    UtmContent,
    Country,
    Region,
    Device,
    Browser,
    BrowserVersion,
    Os,
    OsVersion,
    Name,
}

impl Dimension {
    fn set(self, row: &mut ImportedRow, raw: &str) {
        // Plausible (and the Google Analytics data it may hold) writes "(not set)" for unknown.
        let value = if raw == "(not set)" { "" } else { raw };
        let value = match self {
            Dimension::Device => device_name(value),
            Dimension::Os => os_name(value),
            _ => value.to_string(),
        };
        let field = match self {
            Dimension::Hostname => &mut row.hostname,
            Dimension::Page => &mut row.page,
            Dimension::EntryPage => &mut row.entry_page,
            Dimension::ExitPage => &mut row.exit_page,
            Dimension::Source => &mut row.source,
            Dimension::Referrer => &mut row.referrer,
            Dimension::UtmSource => &mut row.utm_source,
            Dimension::UtmMedium => &mut row.utm_medium,
            Dimension::UtmCampaign => &mut row.utm_campaign,
            Dimension::UtmTerm => &mut row.utm_term,
            Dimension::UtmContent => &mut row.utm_content,
            Dimension::Country => &mut row.country,
            Dimension::Region => &mut row.region,
            Dimension::Device => &mut row.device,
            Dimension::Browser => &mut row.browser,
            Dimension::BrowserVersion => &mut row.browser_version,
            Dimension::Os => &mut row.os,
            Dimension::OsVersion => &mut row.os_version,
            Dimension::Name => &mut row.name,
        };
        *field = value;
    }
}

/// Glimpse's device names (`ingest::useragent::Device`) for Plausible's.
fn device_name(plausible: &str) -> String {
    match plausible {
        "Desktop" | "Laptop" => "desktop".into(),
        "Mobile" => "mobile".into(),
        "Tablet" => "tablet".into(),
        other => other.to_lowercase(),
    }
}

/// Glimpse's operating system names (`ingest::useragent`) where Plausible's differ.
fn os_name(plausible: &str) -> String {
    match plausible {
        "Mac" => "macOS",
        "GNU/Linux" => "Linux",
        "Chrome OS" => "ChromeOS",
        other => other,
    }
    .to_string()
}

type SetMetric = fn(&mut ImportedRow, u64);

/// The metric columns: `(header, setter)`. `entrances` and `exits` are the visits of entry and
/// exit pages. Absent columns count 0.
const METRICS: &[(&str, SetMetric)] = &[
    ("visitors", |r, n| r.visitors = n),
    ("visits", |r, n| r.visits = n),
    ("entrances", |r, n| r.visits = n),
    ("exits", |r, n| r.visits = n),
    ("pageviews", |r, n| r.pageviews = n),
    ("bounces", |r, n| r.bounces = n),
    ("visit_duration", |r, n| r.visit_duration = n),
    ("events", |r, n| r.events = n),
];

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("{file}, line {line}: {reason}")]
    Line {
        file: String,
        line: u64,
        reason: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

/// One CSV of the export, parsed.
#[derive(Debug)]
pub struct ParsedFile {
    pub file: String,
    pub kind: Kind,
    pub rows: Vec<ImportedRow>,
}

/// Parses one table's CSV (with its header line). `site` and `import_id` are set on each row.
pub fn parse_csv(
    file: &str,
    kind: Kind,
    input: impl Read,
    site: &str,
    import_id: u64,
) -> Result<ParsedFile, ImportError> {
    let file_error = |reason: String| ImportError::File {
        file: file.to_string(),
        reason,
    };
    let mut reader = csv::Reader::from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| file_error(format!("cannot read the header line: {e}")))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let date_at = column("date").ok_or_else(|| file_error("no `date` column".into()))?;
    if column("visitors").is_none() {
        return Err(file_error("no `visitors` column".into()));
    }
    let dimensions: Vec<(usize, Dimension)> = kind
        .dimensions()
        .iter()
        .enumerate()
        .filter_map(|(i, (header, dimension))| match column(header) {
            Some(at) => Some(Ok((at, *dimension))),
            None if i == 0 => Some(Err(file_error(format!("no `{header}` column")))),
            None => None,
        })
        .collect::<Result<_, _>>()?;
    let metrics: Vec<(usize, &str, SetMetric)> = METRICS
        .iter()
        .filter_map(|(header, set)| column(header).map(|at| (at, *header, *set)))
        .collect();

    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let line_error = |reason: String| ImportError::Line {
            file: file.to_string(),
            line,
            reason,
        };
        let record = record.map_err(|e| line_error(e.to_string()))?;
        let field = |at: usize| record.get(at).unwrap_or("").trim();
        let mut row = ImportedRow {
            site: site.to_string(),
            import_id,
            date: day_number(field(date_at)).map_err(|e| line_error(e.to_string()))?,
            kind: kind.name().to_string(),
            ..ImportedRow::default()
        };
        for (at, dimension) in &dimensions {
            dimension.set(&mut row, field(*at));
        }
        for (at, header, set) in &metrics {
            let text = field(*at);
            let n = if text.is_empty() {
                0
            } else {
                text.parse::<u64>()
                    .map_err(|_| line_error(format!("`{header}` is not a count: {text:?}")))?
            };
            set(&mut row, n);
        }
        rows.push(row);
    }
    Ok(ParsedFile {
        file: file.to_string(),
        kind,
        rows,
    })
}

/// A `date` cell ClickHouse's `Date` cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum DateError {
    #[error("`date` is not YYYY-MM-DD: {0:?}")]
    NotADate(String),
    #[error("`date` {0} is outside 1970-01-01..2149-06-06")]
    OutOfRange(String),
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, as ClickHouse's `Date` stores it.
fn day_number(text: &str) -> Result<u16, DateError> {
    let date: Date = text
        .parse()
        .map_err(|_| DateError::NotADate(text.to_string()))?;
    u16::try_from(glimpse_core::schema::day_number(date))
        .map_err(|_| DateError::OutOfRange(text.to_string()))
}

/// The parsed tables of an export, and the names of the files that were not tables.
pub type Export = (Vec<ParsedFile>, Vec<String>);

/// Reads an export: the ZIP Plausible offers for download, a directory of its CSVs (e.g. the
/// unpacked ZIP), or one CSV. Files whose names are not Plausible's tables are skipped (listed
/// in the second value); a ZIP or directory without any is an error.
pub fn read_export(path: &Path, site: &str, import_id: u64) -> Result<Export, ImportError> {
    let read_error = |reason: String| ImportError::Read {
        path: path.display().to_string(),
        reason,
    };
    let mut parsed = Vec::new();
    let mut skipped = Vec::new();
    let mut take = |name: &str, input: &mut dyn Read| -> Result<(), ImportError> {
        match Kind::of_file_name(name) {
            Some(kind) => parsed.push(parse_csv(name, kind, input, site, import_id)?),
            None => skipped.push(name.to_string()),
        }
        Ok(())
    };
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| read_error(e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for entry in entries {
            let mut file = std::fs::File::open(&entry).map_err(|e| read_error(e.to_string()))?;
            take(&file_name(&entry), &mut file)?;
        }
    } else {
        let mut file = std::fs::File::open(path).map_err(|e| read_error(e.to_string()))?;
        let mut magic = [0u8; 4];
        let is_zip = file.read_exact(&mut magic).is_ok() && magic == *b"PK\x03\x04";
        std::io::Seek::rewind(&mut file).map_err(|e| read_error(e.to_string()))?;
        if is_zip {
            let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
                .map_err(|e| read_error(format!("not a readable ZIP: {e}")))?;
            for i in 0..archive.len() {
                let mut entry = archive
                    .by_index(i)
                    .map_err(|e| read_error(format!("ZIP entry {i}: {e}")))?;
                if entry.is_dir() {
                    continue;
                }
                // Plausible's ZIP is flat; a folder inside an archive someone re-packed is fine.
                let name = entry
                    .name()
                    .map_err(|e| read_error(format!("ZIP entry {i}: {e}")))?
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                take(&name, &mut entry)?;
            }
        } else {
            let name = file_name(path);
            if Kind::of_file_name(&name).is_none() {
                return Err(read_error(format!(
                    "not a table of Plausible's export: the name should be like \
                     imported_visitors_20240101_20241231.csv ({})",
                    Kind::ALL.map(Kind::name).join(", ")
                )));
            }
            take(&name, &mut std::io::BufReader::new(file))?;
        }
    }
    if parsed.is_empty() {
        return Err(read_error(
            "no table of Plausible's export in it (files named like \
             imported_visitors_20240101_20241231.csv)"
                .into(),
        ));
    }
    Ok((parsed, skipped))
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Rows written per table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Rows left out because Glimpse has its own data from that day on.
    pub skipped_rows: u64,
    /// The first day of Glimpse's own data, when there is some.
    pub own_data_from: Option<Date>,
    /// Imported rows of an earlier import that were replaced.
    pub replaced_rows: u64,
}

/// Writes parsed files for `site` (time zone `timezone`). Days on or after the first day of
/// Glimpse's own data for the site are left out, so no day is counted twice (Plausible does the
/// same with its imports). A site that already has imported data is refused unless `replace`,
/// which deletes it first (on every shard of `cluster`).
pub async fn import(
    client: &clickhouse::Client,
    db: &str,
    cluster: Option<&glimpse_core::config::ClusterName>,
    site: &str,
    timezone: &TimeZone,
    files: Vec<ParsedFile>,
    replace: bool,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let existing: u64 = client
        .query(&format!(
            "SELECT count() FROM {db}.{IMPORTED_TABLE} WHERE site = ?"
        ))
        .bind(site)
        .fetch_one()
        .await?;
    if existing > 0 && !replace {
        return Err(ImportError::Refused(format!(
            "{site} already has {existing} imported rows; importing again would count them \
             twice. Pass --replace to delete them and import these instead."
        )));
    }
    if existing > 0 {
        client
            .query(&format!(
                "{} DELETE WHERE site = ?",
                glimpse_core::schema::cluster::alter_table(db, IMPORTED_TABLE, cluster)
            ))
            .bind(site)
            .execute()
            .await?;
        let gone = super::wait_until_zero(
            client,
            &format!("SELECT count() FROM {db}.{IMPORTED_TABLE} WHERE site = ?"),
            &[site],
            std::time::Duration::from_secs(120),
        )
        .await?;
        if !gone {
            return Err(ImportError::Refused(format!(
                "the earlier imported rows of {site} were not deleted within 2 minutes; \
                 nothing was imported, try again"
            )));
        }
        report.replaced_rows = existing;
    }

    let (first, own): (u32, u64) = client
        .query(&format!(
            "SELECT toUInt32(min(timestamp)), count() FROM {db}.events WHERE site = ?"
        ))
        .bind(site)
        .fetch_one()
        .await?;
    let own_from = (own > 0)
        .then(|| jiff::Timestamp::from_second(i64::from(first)).ok())
        .flatten()
        .map(|t| t.to_zoned(timezone.clone()).date());
    report.own_data_from = own_from;
    let limit = own_from.and_then(|d| day_number(&d.to_string()).ok());

    let mut rows = Vec::new();
    for file in &files {
        for row in &file.rows {
            if limit.is_some_and(|limit| row.date >= limit) {
                report.skipped_rows += 1;
                continue;
            }
            rows.push(row);
            *report.rows.entry(file.kind.name()).or_default() += 1;
        }
    }
    if rows.is_empty() {
        return Ok(report);
    }
    // One INSERT: ClickHouse writes each block of up to 1,048,576 rows (max_insert_block_size)
    // atomically, so most exports land whole or not at all; a larger one that fails midway is
    // run again with --replace.
    let client = client.clone().with_database(db);
    let mut insert = client.insert::<ImportedRow>(IMPORTED_TABLE).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plausibles() {
        assert_eq!(
            Kind::of_file_name("imported_visitors_20240101_20241231.csv"),
            Some(Kind::Visitors)
        );
        assert_eq!(
            Kind::of_file_name("imported_operating_systems_00010101_20250101.csv"),
            Some(Kind::OperatingSystems)
        );
        assert_eq!(
            Kind::of_file_name("entry_pages_20240101_20241231.csv"),
            Some(Kind::EntryPages)
        );
        assert_eq!(Kind::of_file_name("imported_visitors.csv"), None);
        assert_eq!(
            Kind::of_file_name("imported_cities_20240101_20241231.csv"),
            None
        );
        assert_eq!(Kind::of_file_name("notes.txt"), None);
    }

    #[test]
    fn columns_are_found_by_name_and_values_mapped() {
        let csv = "date,operating_system,visitors,visits,visit_duration,bounces,pageviews,extra\n\
                   2024-03-01,Mac,5,6,120,2,9,x\n\
                   2024-03-02,(not set),1,1,0,1,1,y\n";
        let parsed = parse_csv(
            "os.csv",
            Kind::OperatingSystems,
            csv.as_bytes(),
            "example.com",
            7,
        )
        .unwrap();
        assert_eq!(parsed.rows.len(), 2);
        let r = &parsed.rows[0];
        assert_eq!(r.date, 19_783); // 2024-03-01
        assert_eq!((r.os.as_str(), r.os_version.as_str()), ("macOS", ""));
        assert_eq!(
            (
                r.visitors,
                r.visits,
                r.visit_duration,
                r.bounces,
                r.pageviews
            ),
            (5, 6, 120, 2, 9)
        );
        assert_eq!(
            (r.site.as_str(), r.import_id, r.kind.as_str()),
            ("example.com", 7, "operating_systems")
        );
        assert_eq!(parsed.rows[1].os, "");
    }

    #[test]
    fn entrances_and_exits_are_visits() {
        let csv = "date,exit_page,visitors,visit_duration,exits,bounces,pageviews\n\
                   2024-03-01,/a,3,10,4,1,7\n";
        let parsed = parse_csv("x.csv", Kind::ExitPages, csv.as_bytes(), "s", 1).unwrap();
        assert_eq!(parsed.rows[0].visits, 4);
        assert_eq!(parsed.rows[0].exit_page, "/a");
    }

    #[test]
    fn bad_files_are_named_with_line_and_column() {
        let no_dimension = "date,visitors\n2024-03-01,1\n";
        let e = parse_csv("d.csv", Kind::Devices, no_dimension.as_bytes(), "s", 1).unwrap_err();
        assert_eq!(e.to_string(), "d.csv: no `device` column");
        let bad_count = "date,device,visitors\n2024-03-01,Mobile,1\n2024-03-02,Mobile,-3\n";
        let e = parse_csv("d.csv", Kind::Devices, bad_count.as_bytes(), "s", 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "d.csv, line 3: `visitors` is not a count: \"-3\""
        );
        let bad_date = "date,device,visitors\n03/01/2024,Mobile,1\n";
        let e = parse_csv("d.csv", Kind::Devices, bad_date.as_bytes(), "s", 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "d.csv, line 2: `date` is not YYYY-MM-DD: \"03/01/2024\""
        );
    }
}
