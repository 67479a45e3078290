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

    // On a cluster, a collector without one source of salts is refused before it starts
    // (exit 2, saying what to set), unless the operator says the salt directory is shared.
    let cluster = [
        ("GLIMPSE_CLICKHOUSE_URL", "http://127.0.0.1:1"),
        ("GLIMPSE_CLICKHOUSE_CLUSTER", "glimpse"),
    ];
    for command in [&["config", "check"][..], &["collector"], &["serve"]] {
        let refused = glimpse(&[command, &["--config", path]].concat(), &cluster);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
        let message = String::from_utf8_lossy(&refused.stderr).into_owned();
        assert!(
            message.contains("GLIMPSE_SALT_KEY") && message.contains("salt_dir_shared = true"),
            "{message}"
        );
    }
    let shared = [cluster[0], cluster[1], ("GLIMPSE_SALT_DIR_SHARED", "true")];
    let check = glimpse(&["config", "check", "--config", path], &shared);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

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
    // ClickHouse first, so that the ports it takes are taken before ours are picked (and the
    // picked ones stay free for the moment between the check below and binding them).
    let ch = TestClickHouse::start().await;
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

/// `GLIMPSE_LOG_FORMAT=json`: every line `glimpse serve` writes is a JSON object; a
/// query-service request's lines carry the request id its answer shows in `X-Request-Id` (and,
/// for a failure, in its body); no line holds the client's address or user agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_and_no_client_data() {
    use nix::sys::signal::{kill, Signal};

    let ch = TestClickHouse::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (collector, query) = (free_addr(), free_addr());
    let log = dir.path().join("serve.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_glimpse"));
    for (key, _) in std::env::vars() {
        if key.starts_with("GLIMPSE_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    let mut serve = command
        .arg("serve")
        .envs([
            ("GLIMPSE_CLICKHOUSE_URL", ch.url()),
            (
                "GLIMPSE_DATA_DIR",
                dir.path().to_string_lossy().into_owned(),
            ),
            ("GLIMPSE_COLLECTOR_ADDR", collector.to_string()),
            ("GLIMPSE_QUERY_ADDR", query.to_string()),
            ("GLIMPSE_METRICS_ADDR", "127.0.0.1:0".into()),
            ("GLIMPSE_SITES", "example.com".into()),
            ("GLIMPSE_TRUSTED_PROXIES", "127.0.0.1".into()),
            ("GLIMPSE_LOG_FORMAT", "json".into()),
            ("GLIMPSE_LOG", "info,glimpse_query=debug".into()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = browser_client();
    for addr in [collector, query] {
        wait_for_200(
            &client,
            &format!("http://{addr}/ready"),
            Duration::from_secs(60),
        )
        .await;
    }

    // A visit from a client whose address and browser must not reach the log.
    let (visitor_ip, visitor_ua) = ("203.0.113.77", "Mozilla/5.0 LogPrivacyProbe/9.1");
    let beacon = client
        .post(format!("http://{collector}/api/event"))
        .header("user-agent", visitor_ua)
        .header("x-forwarded-for", visitor_ip)
        .header("content-type", "application/json")
        .body(r#"{"n":"pageview","u":"https://example.com/a","d":"example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), 202);

    let stats = format!(
        "http://{query}/api/v1/stats/aggregate?site_id=example.com&auth=some-share-token-0123"
    );
    let id_of = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .expect("X-Request-Id")
            .to_str()
            .unwrap()
            .to_string()
    };
    let refused = client
        .get(&stats)
        .header("user-agent", visitor_ua)
        .header("x-forwarded-for", visitor_ip)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused_id = id_of(&refused);
    // A failing stats request: ClickHouse answers an error. (Keys are looked up on every
    // request, while the sites may come from the query service's short-lived cache.)
    ch.client
        .query("DROP TABLE glimpse.api_keys")
        .execute()
        .await
        .unwrap();
    let failed = client
        .get(&stats)
        .bearer_auth(format!("glimpse_{}", "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 503);
    let failed_id = id_of(&failed);
    let body: serde_json::Value = failed.json().await.unwrap();
    assert_eq!(body["request_id"], failed_id.as_str(), "{body}");

    kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = serve.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{text}"))
        })
        .collect();
    assert!(lines.len() >= 4, "{text}");
    for (line, raw) in lines.iter().zip(text.lines()) {
        assert!(
            line["level"].is_string() && line["target"].is_string(),
            "{raw}"
        );
        assert!(
            !raw.contains(visitor_ip) && !raw.contains("LogPrivacyProbe"),
            "{raw}"
        );
        // Whatever the query service logs while answering a request names the request.
        if line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|span| span["name"] == "request"))
        {
            assert!(line["span"]["request_id"].is_string(), "{raw}");
        }
    }
    let lines_of = |id: &str| {
        lines
            .iter()
            .filter(|line| line["span"]["request_id"] == id)
            .collect::<Vec<_>>()
    };
    let refused_lines = lines_of(&refused_id);
    assert!(
        refused_lines
            .iter()
            .any(|line| line["message"] == "request answered" && line["status"] == 401),
        "no line for request {refused_id}: {text}"
    );
    let failed_lines = lines_of(&failed_id);
    assert!(
        failed_lines
            .iter()
            .any(|line| line["message"] == "stats query failed" && line["level"] == "WARN"),
        "the failure is not logged under request {failed_id}: {text}"
    );
    assert!(
        failed_lines
            .iter()
            .any(|line| line["message"] == "request answered" && line["status"] == 503),
        "{text}"
    );
}

/// `glimpse completions bash|zsh|fish` prints a script naming the subcommands, without needing
/// a valid configuration (it is installed with the binary); bash accepts its script's syntax.
#[test]
fn completions_name_the_subcommands_and_bash_parses_its_script() {
    let no_config = [("GLIMPSE_COLLECTOR_ADDR", "not-an-address")];
    for shell in ["bash", "zsh", "fish"] {
        let output = glimpse(&["completions", shell], &no_config);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let script = String::from_utf8_lossy(&output.stdout);
        for subcommand in ["serve", "healthcheck", "completions", "privacy-statement"] {
            assert!(
                script.contains(subcommand),
                "{shell}: no {subcommand}\n{script}"
            );
        }
        if shell == "bash" {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("glimpse.bash");
            std::fs::write(&file, script.as_bytes()).unwrap();
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&file)
                .output()
                .unwrap();
            assert!(check.status.success(), "bash -n: {}", text(&check));
        }
    }
    let unknown = glimpse(&["completions", "cmd.exe"], &[]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
}
