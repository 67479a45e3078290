//! Proves that Glimpse's schema DDL and its batch insert run on current ClickHouse (26.x), using
//! the in-process engine chdb driven by `tests/chdb/check.py`.
//!
//! The `clickhouse` crate's batch insert is captured byte for byte by a one-request HTTP server
//! on 127.0.0.1; chdb then runs the migrations' DDL (twice, for idempotency), parses exactly
//! those bytes with exactly that `INSERT` statement, and compares what it reads back with the
//! rows we wrote.
//!
//! Needs a Python with chdb: `GLIMPSE_TEST_PYTHON` (else `python3`), as `scripts/test.sh` (the
//! README's test command) sets up. Without chdb the test fails; it never passes silently.
//!
//! Only `Flavor::Modern` is checked here. The `Flavor::Legacy` DDL exists for ClickHouse 18.16
//! and is not required to run on 26.x, so it is deliberately skipped.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Row;
use glimpse_core::schema::{migration_statements, EventRow, Flavor, EVENTS_TABLE};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const DATABASE: &str = "glimpse";

/// One HTTP request as the `clickhouse` crate sent it.
struct CapturedRequest {
    method: hyper::Method,
    /// Query-string parameters, decoded, in the order sent.
    params: Vec<(String, String)>,
    body: Bytes,
}

impl CapturedRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Rows that exercise the RowBinary encoding: non-ASCII and escape-worthy text, empty strings,
/// strings longer than 127 bytes (two-byte length prefix), props arrays of lengths 0, 2 and 5,
/// and the extremes of the integer columns.
fn sample_rows() -> Vec<EventRow> {
    vec![
        EventRow {
            site: "exämple.com".into(),
            timestamp: 1_700_000_000,
            name: "pageview".into(),
            hostname: "exämple.com".into(),
            pathname: "/über/café/日本語".into(),
            entry_page: "/über".into(),
            referrer: "news.ycombinator.com/item".into(),
            referrer_source: "news.ycombinator.com".into(),
            utm_source: "newsletter".into(),
            utm_medium: "e-mail".into(),
            utm_campaign: "été 2025 🎉".into(),
            utm_term: "ŝerco".into(),
            utm_content: "a\u{0}b".into(),
            visit_referrer: "news.ycombinator.com/item".into(),
            visit_referrer_source: "Hacker News".into(),
            visit_utm_source: "newsletter".into(),
            visit_utm_medium: "e-mail".into(),
            visit_utm_campaign: "été 2025 🎉".into(),
            visit_utm_term: "ŝerco".into(),
            visit_utm_content: "a\u{0}b".into(),
            visitor_id: u64::MAX,
            session_id: 1 << 63,
            visit_start: 1_699_999_000,
            visit_entry: 1,
            visit_bounce: -1,
            visit_duration: u32::MAX,
            browser: "Firefox".into(),
            browser_version: "133.0".into(),
            os: "GNU/Linux".into(),
            os_version: "".into(),
            device: "desktop".into(),
            country: "BR".into(),
            region: "BR-SP".into(),
            city: "São Paulo".into(),
            screen_width: u16::MAX,
            ip_prefix: "81.2.69.0/24".into(),
            interactive: 1,
            scroll_depth: 100,
            engagement_ms: u32::MAX,
            prop_keys: vec!["plan".into(), "émoji".into()],
            prop_values: vec!["pro".into(), "🎉 Ελληνικά".into()],
            batch_id: u64::MAX - 1,
        },
        // Every string empty, every number zero, both arrays empty.
        EventRow {
            timestamp: 0,
            ..EventRow::default()
        },
        EventRow {
            site: "example.org".into(),
            timestamp: 4_000_000_000,
            name: "signup \"quoted\" \\ back\tslash\nnewline 'single'".into(),
            hostname: "example.org".into(),
            pathname: format!("/{}", "long-path/".repeat(40)),
            referrer: String::new(),
            referrer_source: String::new(),
            visitor_id: 1,
            session_id: 2,
            browser: "Chrome".into(),
            browser_version: "131".into(),
            os: "Android".into(),
            os_version: "15".into(),
            device: "mobile".into(),
            screen_width: 1920,
            interactive: 0,
            scroll_depth: 42,
            engagement_ms: 12_345,
            prop_keys: (1..=5).map(|i| format!("key{i}")).collect(),
            prop_values: vec![
                String::new(),
                "ünïcödé".into(),
                "x".repeat(200),
                "[\"json-ish\"]".into(),
                "5".into(),
            ],
            ..EventRow::default()
        },
    ]
}

/// Performs the batch insert against a throwaway HTTP server and returns the one request it got.
async fn capture_insert(rows: &[EventRow]) -> CapturedRequest {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (tx, mut rx) = mpsc::unbounded_channel();

    let server = tokio::spawn(async move {
        // The client keeps its connection open; this task is aborted once we have the request.
        let (stream, _) = listener.accept().await.expect("accept");
        let service = service_fn(move |req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes();
                // reqwest re-exports the `url` crate's `Url`, which decodes the query string.
                let params = reqwest::Url::parse(&format!("http://{addr}{}", parts.uri))
                    .expect("request URI")
                    .query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let _ = tx.send(CapturedRequest {
                    method: parts.method,
                    params,
                    body,
                });
                Ok::<_, hyper::Error>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });

    let client = clickhouse::Client::default()
        .with_url(format!("http://{addr}"))
        .with_validation(false)
        .with_compression(clickhouse::Compression::None)
        .with_database(DATABASE);
    let insert = async {
        let mut insert = client
            .insert::<EventRow>(EVENTS_TABLE)
            .await
            .expect("start insert");
        for row in rows {
            insert.write(row).await.expect("write row");
        }
        insert.end().await.expect("end insert");
    };
    tokio::time::timeout(Duration::from_secs(30), insert)
        .await
        .expect("insert against the capturing server timed out");
    drop(client);

    let request = rx.recv().await.expect("the server saw no request");
    server.abort();
    let _ = server.await;
    assert!(
        rx.try_recv().is_err(),
        "the clickhouse crate sent more than one request for one batch"
    );
    request
}

/// Column names from `INSERT INTO table(`a`,`b`) FORMAT RowBinary`.
fn insert_columns(query: &str) -> Vec<String> {
    let open = query.find('(').expect("no column list in the INSERT");
    let close = query.rfind(')').expect("no column list in the INSERT");
    query[open + 1..close]
        .split(',')
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect()
}

const HOW_TO_FIX: &str = "run the README's test command, `scripts/test.sh`, which creates \
     .venv with chdb-core and exports GLIMPSE_TEST_PYTHON=$PWD/.venv/bin/python before \
     `cargo test` (or do those two steps by hand)";

/// Fails the test, loudly, unless `python` can import chdb.
fn require_chdb(python: &Path, root: &Path) {
    let output = Command::new(python)
        .current_dir(root)
        .args(["-c", "import chdb, sys; sys.stdout.write(chdb.__version__)"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the Python interpreter {} ({e}): {HOW_TO_FIX}",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "the Python interpreter {} cannot import chdb, which this test needs to run ClickHouse \
         26.x in-process: {HOW_TO_FIX}\n--- stderr ---\n{}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "chdb {} via {}",
        String::from_utf8_lossy(&output.stdout),
        python.display()
    );
}

fn write_json(path: &Path, value: &impl serde::Serialize) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("serialize"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn modern_schema_and_row_binary_insert_run_on_current_clickhouse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = common::test_python();
    require_chdb(&python, root);

    let statements = migration_statements(Flavor::Modern, DATABASE);
    let rows = sample_rows();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let request = runtime.block_on(capture_insert(&rows));

    // The request shape this test relies on (clickhouse 0.15: POST, statement and database in
    // the URL, the RowBinary rows as the whole body).
    assert_eq!(request.method, hyper::Method::POST);
    assert_eq!(request.param("database"), Some(DATABASE));
    assert_eq!(
        request.param("decompress"),
        None,
        "body must be uncompressed"
    );
    let query = request
        .param("query")
        .expect("no `query` URL parameter in the insert request")
        .to_owned();
    assert!(
        // 0.15 quotes the table name too: INSERT INTO `events`(`site`,…) FORMAT RowBinary
        [
            format!("INSERT INTO `{EVENTS_TABLE}`("),
            format!("INSERT INTO {EVENTS_TABLE}(")
        ]
        .iter()
        .any(|start| query.starts_with(start))
            && query.ends_with(" FORMAT RowBinary"),
        "unexpected INSERT statement: {query}"
    );
    let columns = insert_columns(&query);
    assert_eq!(columns, EventRow::COLUMN_NAMES, "INSERT column list");
    assert!(!request.body.is_empty(), "empty insert body");
    println!("captured: {query}");
    println!(
        "captured: {} bytes of RowBinary for {} rows",
        request.body.len(),
        rows.len()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let dir_path = dir.path();
    write_json(&dir_path.join("schema.json"), &statements);
    write_json(
        &dir_path.join("insert.json"),
        &serde_json::json!({
            "database": DATABASE,
            "query": query,
            "columns": columns,
            "url_params": request.params,
        }),
    );
    std::fs::write(dir_path.join("batch.bin"), &request.body).expect("write batch.bin");
    // Serialized straight from the struct, so each object's keys follow the field order, which
    // is the crate's column order (checked above).
    write_json(&dir_path.join("expected.json"), &rows);

    let script = root.join("tests/chdb/check.py");
    let output = Command::new(&python)
        .current_dir(root)
        .arg(&script)
        .arg(dir_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        output.status.success(),
        "{} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        script.display(),
        output.status
    );
}
