//! The real-browser tests' shared harness: checks that Chromium, node and the drivers' npm
//! packages are installed (failing, never skipping, when they are not), and runs a Node
//! driver from tracker-js/e2e/, returning the JSON facts it prints last.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Debian's Chromium, installed by scripts/test.sh.
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub fn tracker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tracker-js")
}

/// Fails with what to do when the browser, node or an npm package the drivers use is missing.
pub fn require_browser(npm_packages: &[&str]) {
    let fix = "run scripts/test.sh, which installs chromium, chromium-driver and tracker-js's npm packages (npm ci)";
    assert!(
        Path::new(CHROMIUM).exists(),
        "Chromium is not installed at {CHROMIUM}: {fix}"
    );
    for package in ["puppeteer-core"].iter().chain(npm_packages) {
        let manifest = tracker_dir()
            .join("node_modules")
            .join(package)
            .join("package.json");
        assert!(
            manifest.exists(),
            "npm package {package} is missing from tracker-js/node_modules: {fix}"
        );
    }
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is not installed: {fix}"
    );
}

/// Runs `node e2e/<script>` in tracker-js with `env` (and CHROMIUM) for at most `timeout`;
/// its log goes to stderr, and the last line of its output is the JSON facts returned.
pub async fn run_driver(
    script: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> serde_json::Value {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(format!("e2e/{script}"))
        .current_dir(tracker_dir())
        .env("CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting node e2e/{script}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let run = async {
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.unwrap();
        (child.wait().await.unwrap(), out)
    };
    let (status, out) = tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            panic!("the Chromium driver {script} did not finish within {timeout:?}")
        });
    assert!(
        status.success(),
        "the Chromium driver {script} failed ({status}); its log is above"
    );
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("driver output {out:?}: {e}"))
}

/// A row's custom properties as a map.
pub fn props(row: &glimpse_core::schema::EventRow) -> std::collections::BTreeMap<&str, &str> {
    row.prop_keys
        .iter()
        .map(String::as_str)
        .zip(row.prop_values.iter().map(String::as_str))
        .collect()
}
