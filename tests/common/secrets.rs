//! Searching for secrets in clear: every table of the Glimpse database and ClickHouse's own
//! logs as text, every file under a test's directories, and every log line of the test binary
//! (its services run in-process).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::TestClickHouse;

/// Every log line of this test binary from the first call on (debug level and up).
pub fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || Capture(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A query's answer as ClickHouse's tab-separated text.
pub async fn clickhouse_text(ch: &TestClickHouse, sql: &str) -> String {
    let response = reqwest::Client::new()
        .post(ch.server.url())
        .header("X-ClickHouse-User", ch.server.user())
        .header("X-ClickHouse-Key", ch.password())
        .body(format!("{sql} FORMAT TabSeparated"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{sql}");
    response.text().await.unwrap()
}

/// Every file under `dir`, as text (invalid UTF-8 replaced: the secrets are ASCII).
fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
}

/// What a search read.
#[derive(Debug)]
pub struct Searched {
    pub tables: Vec<String>,
    pub table_bytes: usize,
    pub files: usize,
    pub log_bytes: usize,
}

/// Fails when any of `secrets` is in a table of the `glimpse` database, in ClickHouse's query
/// or text log, in a file under the test's directory (ClickHouse's and Glimpse's data), or in
/// `logs`.
pub async fn assert_absent(ch: &TestClickHouse, logs: &str, secrets: &[String]) -> Searched {
    let tables: Vec<String> = ch
        .client
        .query("SELECT name FROM system.tables WHERE database = 'glimpse'")
        .fetch_all()
        .await
        .unwrap();
    let mut text = String::new();
    for table in &tables {
        text.push_str(&clickhouse_text(ch, &format!("SELECT * FROM glimpse.{table}")).await);
    }
    for system in ["query_log", "text_log"] {
        let exists = ch
            .count(&format!(
                "SELECT count() FROM system.tables WHERE database = 'system' AND name = '{system}'"
            ))
            .await;
        if exists > 0 {
            text.push_str(&clickhouse_text(ch, &format!("SELECT * FROM system.{system}")).await);
        }
    }
    let root = ch.data_dir().parent().unwrap().to_path_buf();
    let mut files = Vec::new();
    collect_files(&root, &mut files);
    for secret in secrets {
        assert!(!text.contains(secret.as_str()), "{secret} in ClickHouse");
        assert!(!logs.contains(secret.as_str()), "{secret} in the logs");
        for (path, content) in &files {
            assert!(
                !content.contains(secret.as_str()),
                "{secret} in {}",
                path.display()
            );
        }
    }
    Searched {
        tables,
        table_bytes: text.len(),
        files: files.len(),
        log_bytes: logs.len(),
    }
}
