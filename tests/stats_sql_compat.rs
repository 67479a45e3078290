//! Proves that every SQL statement the stats API generates, v1's, v2's and funnels' (and the collector's visitor
//! summary and batched erasure) runs on current ClickHouse (26.x),
//! using the in-process engine chdb driven by `tests/chdb/queries.py`. The same statements run
//! on ClickHouse 18.16 in `tests/stats_api/generated_sql.rs`.
//!
//! The statements are the exact text the `clickhouse` crate sends (bound values inlined by the
//! crate's own escaping), for a broad matrix of requests (`tests/common/stats_matrix.rs`).
//! Needs a Python with chdb: `GLIMPSE_TEST_PYTHON` (else `python3`). Without chdb the test
//! fails; it never passes silently.

mod common;

use std::path::Path;
use std::process::Command;

use glimpse_core::schema::{migration_statements, Flavor};

#[test]
fn every_stats_statement_runs_on_current_clickhouse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = common::test_python();
    let mut statements = Vec::new();
    // Funnels first: they only read.
    for tz in ["UTC", "Europe/Berlin"] {
        statements.extend(common::stats_matrix::funnel_statements("glimpse", tz));
    }
    let funnels = statements.len();
    assert!(funnels > 50, "{funnels}");
    println!("{funnels} funnel statements");
    // Stats API v2's first: v1's end with the rollup's upkeep, which deletes rows.
    for tz in ["UTC", "Europe/Berlin", "America/St_Johns"] {
        statements.extend(common::stats_matrix::v2_statements("glimpse", tz));
    }
    let v2 = statements.len() - funnels;
    assert!(v2 > 500, "{v2}");
    for tz in ["UTC", "Europe/Berlin", "America/St_Johns"] {
        statements.extend(common::stats_matrix::statements("glimpse", tz));
    }
    println!("{v2} Stats API v2 statements, {} in all", statements.len());
    assert!(statements.len() > 1000, "{}", statements.len());
    // The collector's visitor self-service: the summary, then (last: it deletes) one batched
    // erasure, with their binds inlined in order.
    use glimpse_collector::admin::visitor_data::{erase_sql, summary_sql};
    let inline = |sql: String, binds: &[&str]| {
        let mut out = String::new();
        let mut binds = binds.iter();
        for (i, part) in sql.split('?').enumerate() {
            if i > 0 {
                out.push_str(binds.next().expect("a value per placeholder"));
            }
            out.push_str(part);
        }
        assert!(binds.next().is_none(), "more values than placeholders");
        out
    };
    statements.push(inline(
        summary_sql("glimpse", &[1, 2]),
        &["'example.com'", "1774569600"],
    ));
    statements.push(inline(
        erase_sql("glimpse", None, 3),
        &[
            "'example.com'",
            "1",
            "'example.com'",
            "2",
            "'other.org'",
            "1",
            "1774569600",
        ],
    ));

    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, value: &Vec<String>| {
        std::fs::write(dir.path().join(name), serde_json::to_vec(value).unwrap())
            .expect("write json");
    };
    write(
        "schema.json",
        &migration_statements(Flavor::Modern, "glimpse"),
    );
    write("statements.json", &statements);

    let script = root.join("tests/chdb/queries.py");
    let output = Command::new(&python)
        .current_dir(root)
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (set GLIMPSE_TEST_PYTHON to a Python with chdb, as \
                 scripts/test.sh does): {e}",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        output.status.success(),
        "{} failed ({}); a Python without chdb exits 3 — run scripts/test.sh, which sets \
         GLIMPSE_TEST_PYTHON:\n{stderr}",
        script.display(),
        output.status
    );
}
