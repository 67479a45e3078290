//! The operator's small commands, through the real binary: `glimpse config check` (0 for a
//! valid configuration, 2 and `serve`'s own message for an invalid one), `glimpse healthcheck`
//! (0 against ready services, non-zero naming the one that is not), `--version` with the
//! commit.

mod common;

use std::time::Duration;

use common::{browser_client, free_addr, wait_for_200, TestClickHouse};
use tokio::net::TcpListener;

/// The binary with no `GLIMPSE_*` setting from the test's own environment.
fn glimpse(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_glimpse"));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("GLIMPSE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn config_check_accepts_a_valid_configuration_and_names_the_setting_of_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("glimpse.toml");
    std::fs::write(&file, "sites = [\"example.com\"]\nbatch_max_rows = 10\n").unwrap();
    let path = file.to_str().unwrap();
    let valid = glimpse(&["config", "check", "--config", path], &[]);
    assert_eq!(valid.status.code(), Some(0), "{}", text(&valid));

    // Invalid in the environment over a valid file: exit 2 naming the setting, and the very
    // message `serve` prints (which then does not start anything).
    let bad = [("GLIMPSE_CLICKHOUSE_DATABASE", "no-dashes")];
    let check = glimpse(&["config", "check", "--config", path], &bad);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    let message = String::from_utf8_lossy(&check.stderr).into_owned();
    assert!(
        message.contains("clickhouse_database") && message.contains("GLIMPSE_CLICKHOUSE_DATABASE"),
        "{message}"
    );
    let serve = glimpse(&["serve", "--config", path], &bad);
    assert_eq!(serve.status.code(), Some(2), "{}", text(&serve));
    assert_eq!(String::from_utf8_lossy(&serve.stderr), message);

    // A file that does not exist is invalid too.
    let missing = glimpse(
        &["config", "check", "--config", "/nonexistent/glimpse.toml"],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
}

#[test]
fn version_names_the_commit() {
    let output = glimpse(&["--version"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let version = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        version.starts_with(&format!("glimpse {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(head) if head.status.success() => {
            let sha = String::from_utf8_lossy(&head.stdout).trim().to_string();
            assert!(version.contains(&format!("({sha})")), "{version} vs {sha}");
        }
        // Built without git: it says so rather than inventing a commit.
        _ => assert!(version.contains("(unknown)"), "{version}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_is_0_against_ready_services_and_names_the_one_that_is_not() {
    // Nothing running: non-zero, naming the address asked.
    let (collector, query) = (free_addr(), free_addr());
    let (c, q) = (collector.to_string(), query.to_string());
    let addrs = [
        ("GLIMPSE_COLLECTOR_ADDR", c.as_str()),
        ("GLIMPSE_QUERY_ADDR", q.as_str()),
    ];
    let down = glimpse(&["healthcheck"], &addrs);
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains(&format!("collector at http://{c}/ready")),
        "{}",
        text(&down)
    );

    let ch = TestClickHouse::start().await;
    let config = ch.config();
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = TcpListener::bind(collector).await.unwrap();
    let server = tokio::spawn(glimpse_collector::serve(
        config.clone(),
        listener,
        stop.clone().cancelled_owned(),
    ));
    let client = browser_client();
    wait_for_200(
        &client,
        &format!("http://{c}/ready"),
        Duration::from_secs(60),
    )
    .await;

    // The collector is ready, the query service is not running.
    let collector_only = glimpse(&["healthcheck", "--service", "collector"], &addrs);
    assert_eq!(
        collector_only.status.code(),
        Some(0),
        "{}",
        text(&collector_only)
    );
    let both = glimpse(&["healthcheck"], &addrs);
    assert_eq!(both.status.code(), Some(1), "{}", text(&both));
    assert!(
        String::from_utf8_lossy(&both.stderr)
            .contains(&format!("query service at http://{q}/ready")),
        "{}",
        text(&both)
    );

    let listener = TcpListener::bind(query).await.unwrap();
    let query_server = tokio::spawn(glimpse_query::serve(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));
    wait_for_200(
        &client,
        &format!("http://{q}/ready"),
        Duration::from_secs(60),
    )
    .await;
    let ready = glimpse(&["healthcheck"], &addrs);
    assert_eq!(ready.status.code(), Some(0), "{}", text(&ready));

    stop.cancel();
    server.await.unwrap().unwrap();
    query_server.await.unwrap().unwrap();
}
