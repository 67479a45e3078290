//! The deployment files, run without Docker: the `glimpse` binary runs with exactly the
//! environment and command docker/compose.yml gives its container (the Dockerfile's ENV,
//! ENTRYPOINT and CMD overlaid by the service's `environment:`, as printed by
//! `tests/docker/check_compose.py --glimpse-env`), against a ClickHouse that has the user,
//! password and database the compose file's ClickHouse service would create. It must pass the
//! image's healthcheck, count a page view, serve it through the stats API and stop cleanly on
//! the stop signal within the stop grace period.
//!
//! The compose ClickHouse's settings files are checked against current ClickHouse (26.x, chdb)
//! by `tests/docker/check_clickhouse_settings.py`: they do not load into the 18.16 server that
//! the tests run.
//!
//! Needs a Python with chdb and compose-spec: `GLIMPSE_TEST_PYTHON` (else `python3`), as
//! `scripts/test.sh` sets it. Without them the tests fail; they never pass silently.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::time::Duration;

use glimpse_core::db::local::LocalClickHouse;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::process::Command;

/// The site the test deployment counts, given to Compose as GLIMPSE_SITES.
const SITE: &str = "compose.example";
/// The Dockerfile's HEALTHCHECK: `--start-period=60s --timeout=5s`.
const HEALTH_START_PERIOD: Duration = Duration::from_secs(60);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// debian:bookworm-slim's PATH, which the runtime stage inherits.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const HOW_TO_FIX: &str = "run the README's test command, `scripts/test.sh`, which creates \
     .venv with chdb-core and compose-spec and exports GLIMPSE_TEST_PYTHON=$PWD/.venv/bin/python \
     before `cargo test` (or do those two steps by hand)";

/// Runs a script of tests/docker/ with the test Python; panics with its output unless it
/// exits 0.
fn run_python(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let python = common::test_python();
    let mut command = std::process::Command::new(&python);
    // Only the variables given: the script reads Compose variables from its environment, and
    // the developer's own (say GLIMPSE_LOG) must not leak into "what Compose would do".
    command
        .env_clear()
        .current_dir(root())
        .arg(script)
        .args(args);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().copied());
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run the Python interpreter {} ({e}): {HOW_TO_FIX}",
            python.display()
        )
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} {args:?} failed ({}); exit status 3 means no chdb, an ImportError no \
         compose-spec: {HOW_TO_FIX}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    eprint!("{stderr}");
    stdout
}

#[test]
fn compose_clickhouse_settings_exist_in_current_clickhouse() {
    let out = run_python("tests/docker/check_clickhouse_settings.py", &[], &[]);
    print!("{out}");
}

/// What `check_compose.py --glimpse-env` prints.
#[derive(Debug, Deserialize)]
struct Container {
    environment: BTreeMap<String, String>,
    command: Vec<String>,
    working_dir: String,
    stop_signal: String,
    stop_grace_period_seconds: f64,
    clickhouse_environment: BTreeMap<String, String>,
}

impl Container {
    fn from_compose(password: &str) -> Self {
        let json = run_python(
            "tests/docker/check_compose.py",
            &["--glimpse-env", "docker/compose.yml"],
            &[
                ("GLIMPSE_CLICKHOUSE_PASSWORD", password),
                ("GLIMPSE_SITES", SITE),
            ],
        );
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    fn env(&self, name: &str) -> &str {
        self.environment
            .get(name)
            .unwrap_or_else(|| panic!("the container gets no {name}: {self:?}"))
    }

    fn clickhouse_env(&self, name: &str) -> &str {
        self.clickhouse_environment
            .get(name)
            .unwrap_or_else(|| panic!("the clickhouse service sets no {name}: {self:?}"))
    }
}

/// 16 random bytes in hex: letters and digits only, as compose.yml asks of the password.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("open /dev/urandom"),
        &mut bytes,
    )
    .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the ClickHouse image's entrypoint writes to users.d/ for CLICKHOUSE_USER and
/// CLICKHOUSE_PASSWORD (a user with the `default` profile and quota, from any address).
/// The image also removes the `default` user; here LocalClickHouse's readiness probe needs it,
/// so it stays but may not write (readonly 2 still lets a client send settings), and a Glimpse
/// that fell back to it would fail. `<yandex>`: the root element 18.16 merges.
fn image_users_xml(user: &str, password: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <no_writes><readonly>2</readonly></no_writes>
    </profiles>
    <users>
        <default><profile>no_writes</profile></default>
        <{user}>
            <profile>default</profile>
            <networks><ip>::/0</ip></networks>
            <password>{password}</password>
            <quota>default</quota>
        </{user}>
    </users>
</yandex>
"#
    )
}

/// The container's process, outside Docker.
struct Glimpse {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Glimpse {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test with the log if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "glimpse exited ({status}) under the compose environment; its log:\n{}",
                self.log()
            );
        }
    }
}

/// The Dockerfile's HEALTHCHECK command (exec form, after `CMD`), with the binary under test
/// for `glimpse`.
fn image_healthcheck() -> Vec<String> {
    let dockerfile = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    let at = dockerfile.find("\nHEALTHCHECK ").expect("a HEALTHCHECK");
    let cmd = dockerfile[at..].find("CMD ").expect("HEALTHCHECK ... CMD") + at + 4;
    let line = dockerfile[cmd..].lines().next().unwrap();
    let mut argv: Vec<String> = serde_json::from_str(line).expect("HEALTHCHECK CMD in exec form");
    assert_eq!(argv[0], "glimpse", "the HEALTHCHECK runs {argv:?}");
    argv[0] = env!("CARGO_BIN_EXE_glimpse").into();
    argv
}

/// Runs the image's HEALTHCHECK command as Docker does: in the container's environment,
/// under its timeout. Returns its status and stderr.
async fn healthcheck(env: &BTreeMap<String, String>) -> (Option<ExitStatus>, String) {
    let argv = image_healthcheck();
    let run = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(HEALTH_TIMEOUT, run).await {
        Ok(output) => {
            let output = output.expect("run the HEALTHCHECK command");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            (Some(output.status), stderr)
        }
        Err(_) => (None, format!("timed out after {HEALTH_TIMEOUT:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_runs_with_the_compose_environment() {
    let password = random_hex();
    let container = Container::from_compose(&password);
    println!("compose: command {:?}", container.command);
    let dir = tempfile::tempdir().expect("temp dir");

    // ClickHouse with what the compose ClickHouse service creates: its user and password in
    // users.d/ (18.16 merges users.d/*.xml over users.xml, like current versions), then its
    // database, created by that user as the image's entrypoint does.
    let ch_user = container.clickhouse_env("CLICKHOUSE_USER");
    let ch_password = container.clickhouse_env("CLICKHOUSE_PASSWORD");
    let ch_database = container.clickhouse_env("CLICKHOUSE_DB");
    let ch_dir = dir.path().join("clickhouse");
    std::fs::create_dir_all(ch_dir.join("users.d")).expect("create users.d");
    std::fs::write(
        ch_dir.join("users.d/default-user.xml"),
        image_users_xml(ch_user, ch_password),
    )
    .expect("write users.d/default-user.xml");
    let clickhouse = LocalClickHouse::start(&ch_dir, "clickhouse-server")
        .await
        .expect("starting clickhouse-server (run the README's test command to install it)");
    let as_compose_user = clickhouse::Client::default()
        .with_url(clickhouse.url())
        .with_user(ch_user)
        .with_password(ch_password)
        .with_validation(false);
    as_compose_user
        .query(&format!("CREATE DATABASE IF NOT EXISTS {ch_database}"))
        .execute()
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE as {ch_user} (users.d not merged?): {e}"));
    let writes_as_default = clickhouse::Client::default()
        .with_url(clickhouse.url())
        .query("CREATE DATABASE not_as_default")
        .execute()
        .await;
    assert!(
        writes_as_default.is_err(),
        "the default user can still write, so the test would not notice Glimpse using it"
    );

    // The container's environment, changing only what cannot be the same outside Docker.
    let mut env = container.environment.clone();
    let data_dir = dir.path().join("glimpse-data");
    std::fs::create_dir_all(&data_dir).expect("create the data dir");
    // `clickhouse:8123` is the compose network's name for the ClickHouse service; here it is
    // the test server's host:port, the rest of the URL (scheme, path) unchanged.
    let compose_url = container.env("GLIMPSE_CLICKHOUSE_URL");
    let parsed = reqwest::Url::parse(compose_url).expect("GLIMPSE_CLICKHOUSE_URL is a URL");
    let host = parsed
        .host_str()
        .expect("GLIMPSE_CLICKHOUSE_URL names a host");
    let authority = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let test_authority = clickhouse.url().trim_start_matches("http://");
    let url = compose_url.replacen(&authority, test_authority, 1);
    assert_ne!(url, compose_url, "no {authority} in {compose_url}");
    env.insert("GLIMPSE_CLICKHOUSE_URL".into(), url);
    // The volume at /var/lib/glimpse, which is also the image's WORKDIR: a temp dir.
    assert_eq!(
        container.working_dir,
        container.env("GLIMPSE_DATA_DIR"),
        "the test runs glimpse in its data dir, as the image's WORKDIR is the volume"
    );
    env.insert("GLIMPSE_DATA_DIR".into(), data_dir.display().to_string());
    // 0.0.0.0:8000 / :8001 inside the container's own network namespace; here free loopback
    // ports, so that parallel tests and the host's services do not collide.
    let collector = common::free_addr();
    let query = common::free_addr();
    env.insert("GLIMPSE_COLLECTOR_ADDR".into(), collector.to_string());
    env.insert(
        "GLIMPSE_METRICS_ADDR".into(),
        common::free_addr().to_string(),
    );
    env.insert("GLIMPSE_QUERY_ADDR".into(), query.to_string());
    // Set by the base image (PATH) and by Docker from USER's passwd entry (HOME, the volume).
    // As the image's environment has it.
    env.insert("PATH".into(), IMAGE_PATH.into());
    env.insert("HOME".into(), data_dir.display().to_string());

    // The command line is the image's: `glimpse serve`, with the binary under test.
    let (program, args) = container
        .command
        .split_first()
        .expect("the container has a command");
    assert_eq!(
        program, "glimpse",
        "the image's entrypoint is not the glimpse binary"
    );
    let log = dir.path().join("glimpse.log");
    let log_file = std::fs::File::create(&log).expect("create the log file");
    let child = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(args)
        .env_clear()
        .envs(&env)
        .current_dir(&data_dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn glimpse");
    let mut glimpse = Glimpse { child, log };

    // Ready: the image's healthcheck passes, within its start period.
    let started = tokio::time::Instant::now();
    loop {
        glimpse.assert_running();
        let (status, stderr) = healthcheck(&env).await;
        if status.is_some_and(|s| s.success()) {
            break;
        }
        assert!(
            started.elapsed() < HEALTH_START_PERIOD,
            "the healthcheck did not pass within {HEALTH_START_PERIOD:?}: {status:?} \
             {stderr}\nglimpse's log:\n{}",
            glimpse.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("healthy after {:?}", started.elapsed());

    // A page view from a browser, straight to the collector: the compose default trusts
    // X-Forwarded-For only from 172.16.0.0/12, and this connection comes from loopback.
    let browser = common::browser_client();
    let response = browser
        .post(format!("http://{collector}/api/event"))
        .header("content-type", "text/plain")
        .body(format!(
            r#"{{"n":"pageview","u":"https://{SITE}/compose","d":"{SITE}","r":null,"w":1280}}"#
        ))
        .send()
        .await
        .expect("POST /api/event");
    assert_eq!(response.status(), 202, "{:?}", response.text().await);

    // It lands in the compose database, read as the compose user.
    let in_database = as_compose_user.clone().with_database(ch_database);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = in_database
            .query("SELECT count() FROM events WHERE site = ? AND name = 'pageview'")
            .bind(SITE)
            .fetch_one::<u64>()
            .await;
        match rows {
            Ok(1) => break,
            Ok(0) => {}
            other => panic!("{other:?} for one page view in {ch_database}.events"),
        }
        glimpse.assert_running();
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page view did not reach {ch_database}.events; glimpse's log:\n{}",
            glimpse.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An API key, made as an operator would with `docker compose exec glimpse glimpse key
    // create`: the same binary, environment and directory as the running container.
    let output = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(["key", "create", "--site", SITE, "--name", "compose-test"])
        .env_clear()
        .envs(&env)
        .current_dir(&data_dir)
        .output()
        .await
        .expect("run glimpse key create");
    assert!(
        output.status.success(),
        "glimpse key create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(!key.is_empty(), "glimpse key create printed no key");

    let aggregate = reqwest::Url::parse_with_params(
        &format!("http://{query}/api/v1/stats/aggregate"),
        [
            ("site_id", SITE),
            ("period", "day"),
            ("metrics", "visitors,pageviews"),
        ],
    )
    .unwrap();
    let stats: serde_json::Value = reqwest::Client::new()
        .get(aggregate)
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET /api/v1/stats/aggregate")
        .error_for_status()
        .expect("the stats API answers 200")
        .json()
        .await
        .expect("the stats API answers JSON");
    assert_eq!(stats["results"]["visitors"]["value"], 1, "{stats}");
    assert_eq!(stats["results"]["pageviews"]["value"], 1, "{stats}");

    // `docker compose stop`: the stop signal, then SIGKILL after the grace period.
    let signal = Signal::from_str(&container.stop_signal).expect("a signal name");
    let grace = Duration::from_secs_f64(container.stop_grace_period_seconds);
    let pid = glimpse.child.id().expect("glimpse's pid");
    let stopping = tokio::time::Instant::now();
    kill(Pid::from_raw(pid as i32), signal).expect("signal glimpse");
    let status = tokio::time::timeout(grace, glimpse.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "glimpse did not exit within the stop grace period {grace:?} after {signal}; \
                 its log:\n{}",
                glimpse.log()
            )
        })
        .expect("wait for glimpse");
    let log = glimpse.log();
    assert!(
        status.success(),
        "glimpse exited with {status} after {signal}; its log:\n{log}"
    );
    // The Dockerfile's NO_COLOR=1: plain lines in `docker logs` (GLIMPSE_LOG=info logs some).
    assert!(
        !log.is_empty(),
        "glimpse logged nothing at GLIMPSE_LOG=info"
    );
    assert!(
        !log.contains('\u{1b}'),
        "colour escapes in the log despite NO_COLOR:\n{log}"
    );

    let (status, stderr) = healthcheck(&env).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "the healthcheck passes with glimpse stopped: {status:?} {stderr}"
    );
    println!(
        "stopped cleanly {:?} after {signal}; the healthcheck then fails: {}",
        stopping.elapsed(),
        stderr.trim()
    );
    clickhouse.stop().await;
}
