//! A ClickHouse server that Glimpse starts itself, as a child process, when no
//! `clickhouse_url` is configured: its own generated config, loopback only, data under
//! Glimpse's data directory, a generated password. Tests use the same code to get a real
//! server.
//!
//! The directory says who runs the server (`server.json`: ClickHouse's pid, the owning Glimpse
//! process, the URL), so that a CLI command run beside `glimpse serve` uses serve's server
//! ([`attach`]) instead of stopping it, and a second `glimpse serve` refuses to start.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Where Debian puts the server; not on every user's PATH.
const EXTRA_BIN_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/bin"];
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The only user of the server Glimpse starts; it needs the password.
pub const USER: &str = "default";
/// The password file in the server's directory (mode 0600).
const PASSWORD_FILE: &str = "password";
/// Who runs the server in this directory (see [`Running`]).
const STATE_FILE: &str = "server.json";
/// Longest wait between two attempts to start a server that died.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LocalClickHouseError {
    #[error(
        "`{0}` was not found. Install ClickHouse (on Debian: `apt-get install clickhouse-server`) \
         or point Glimpse at a running one with GLIMPSE_CLICKHOUSE_URL"
    )]
    NotInstalled(String),
    #[error("cannot prepare ClickHouse's directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ClickHouse exited during start-up ({status}); its log {log} ends with:\n{tail}")]
    Exited {
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("ClickHouse did not answer within {0:?}; see {1}")]
    Timeout(Duration, PathBuf),
    #[error(
        "the ClickHouse in {dir} belongs to another Glimpse process (pid {owner}) and does not \
         answer now: try again once it does, stop that process, or give this one its own \
         data_dir or a clickhouse_url"
    )]
    InUse { dir: PathBuf, owner: u32 },
}

/// What `server.json` records about a running server.
#[derive(Debug, Serialize, Deserialize)]
struct Running {
    /// ClickHouse's process.
    pid: u32,
    /// The Glimpse process that started it and will stop it.
    owner: u32,
    /// When the owner started (clock ticks since boot), so that a reused pid is not taken
    /// for the owner.
    #[serde(default)]
    owner_started: Option<u64>,
    url: String,
}

impl Running {
    /// Whether the Glimpse process that started the server still runs.
    fn owner_alive(&self) -> bool {
        alive(self.owner)
            && (self.owner_started.is_none() || process_started(self.owner) == self.owner_started)
    }
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`, field 22).
fn process_started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it may not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// A server another Glimpse process runs, found through its directory: use it, never stop it.
#[derive(Debug, Clone)]
pub struct Attached {
    pub url: String,
    pub user: String,
    pub password: String,
}

impl Attached {
    pub fn client(&self) -> clickhouse::Client {
        client(&self.url, &self.password)
    }
}

/// The server a live Glimpse process runs in `dir`, if one answers there.
pub async fn attach(dir: &Path) -> Option<Attached> {
    let running = read_state(dir)?;
    if !running.owner_alive() || running.owner == std::process::id() || !ours(dir, running.pid) {
        return None;
    }
    let password = std::fs::read_to_string(dir.join(PASSWORD_FILE)).ok()?;
    let attached = Attached {
        url: running.url,
        user: USER.into(),
        password: password.trim().to_string(),
    };
    let ping = attached.client().query("SELECT 1").fetch_one::<u8>();
    match tokio::time::timeout(Duration::from_secs(5), ping).await {
        Ok(Ok(1)) => Some(attached),
        _ => None,
    }
}

fn client(url: &str, password: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_user(USER)
        .with_password(password)
        .with_validation(false)
}

fn read_state(dir: &Path) -> Option<Running> {
    serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).ok()?).ok()
}

fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

/// Whether `pid` is a ClickHouse started with this directory's config (not a reused pid).
fn ours(dir: &Path, pid: u32) -> bool {
    let config = dir.join("config.xml");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy())
}

/// The server's password: generated on first start (32 random bytes, hex), kept in the
/// directory readable by its owner only.
fn password(dir: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(PASSWORD_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(text.trim().to_string());
        }
        Ok(_) => std::fs::remove_file(&path)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    let password = hex(&bytes);
    write_password(&path, &password)?;
    Ok(password)
}

/// Writes a new password file, readable by its owner only.
fn write_password(path: &Path, password: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(password.as_bytes())?;
    file.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running ClickHouse child process. Dropping it kills the process; [`stop`](Self::stop)
/// shuts it down cleanly.
#[derive(Debug)]
pub struct LocalClickHouse {
    child: Child,
    url: String,
    dir: PathBuf,
    bin: PathBuf,
    ports: (u16, u16),
    password: String,
}

impl LocalClickHouse {
    /// Starts `clickhouse-server` (or `bin`) with its data in `dir` and waits until it answers.
    pub async fn start(dir: &Path, bin: &str) -> Result<Self, LocalClickHouseError> {
        // The ports are free when picked, but another process can take one before ClickHouse
        // binds it (tests start many servers at once): such a start is tried again on new ports.
        let mut attempts = 1;
        loop {
            match Self::start_on(dir, bin, None).await {
                Err(LocalClickHouseError::Exited { tail, .. })
                    if tail.contains("Address already in use") && attempts < 4 =>
                {
                    attempts += 1;
                    tracing::warn!(
                        attempts,
                        "a port picked for ClickHouse was taken; trying others"
                    );
                }
                result => return result,
            }
        }
    }

    /// Starts one node of a cluster: on ports chosen beforehand (every node's configuration
    /// names the others'), with `password` (a cluster's nodes share their credentials), and
    /// with the settings in `dir/config.d/*.xml` merged into the generated configuration by
    /// ClickHouse itself (`remote_servers`, `macros`, `zookeeper`, …). The loopback cluster of
    /// `glimpse-localcluster` (tests and benchmarks) starts four this way; Glimpse itself never
    /// starts a cluster.
    pub async fn start_node(
        dir: &Path,
        bin: &str,
        ports: (u16, u16),
        password: &str,
    ) -> Result<Self, LocalClickHouseError> {
        let io = |source| LocalClickHouseError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(PASSWORD_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        write_password(&path, password).map_err(io)?;
        Self::start_on(dir, bin, Some(ports)).await
    }

    /// Starts a server that was stopped, on the same directory and ports (its URL is unchanged).
    pub async fn restart(self) -> Result<Self, LocalClickHouseError> {
        let (dir, bin, ports) = (self.dir.clone(), self.bin.clone(), self.ports);
        self.stop().await;
        Self::start_on(&dir, &bin.to_string_lossy(), Some(ports)).await
    }

    /// Stops the server and returns what [`start_again`](Self::start_again) needs.
    pub async fn stop_for_restart(self) -> StoppedClickHouse {
        let stopped = StoppedClickHouse {
            dir: self.dir.clone(),
            bin: self.bin.clone(),
            ports: self.ports,
        };
        self.stop().await;
        stopped
    }

    async fn start_on(
        dir: &Path,
        bin: &str,
        ports: Option<(u16, u16)>,
    ) -> Result<Self, LocalClickHouseError> {
        let bin = find_binary(bin).ok_or_else(|| LocalClickHouseError::NotInstalled(bin.into()))?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalClickHouseError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let dir = dir.canonicalize().map_err(io(dir))?;
        // The events and keys are on disk here: other local users may not read them.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(&dir))?;
        }
        for sub in ["data", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir.join(sub)))?;
        }
        stop_stale_server(&dir).await?;
        let password = password(&dir).map_err(io(&dir.join(PASSWORD_FILE)))?;

        let (http_port, tcp_port) = match ports {
            Some(ports) => ports,
            None => (
                free_port().map_err(io(&dir))?,
                free_port().map_err(io(&dir))?,
            ),
        };
        let config_path = dir.join("config.xml");
        std::fs::write(&config_path, server_config(&dir, http_port, tcp_port))
            .map_err(io(&config_path))?;
        std::fs::write(dir.join("users.xml"), users_xml(&password)).map_err(io(&dir))?;

        let log_path = dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let log_err = log.try_clone().map_err(io(&log_path))?;
        let child = Command::new(&bin)
            .arg(format!("--config-file={}", config_path.display()))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(io(&bin))?;
        let url = format!("http://127.0.0.1:{http_port}");
        if let Some(pid) = child.id() {
            let _ = std::fs::write(dir.join("server.pid"), pid.to_string());
            let running = Running {
                pid,
                owner: std::process::id(),
                owner_started: process_started(std::process::id()),
                url: url.clone(),
            };
            let state = serde_json::to_vec(&running).unwrap_or_default();
            std::fs::write(dir.join(STATE_FILE), state).map_err(io(&dir))?;
        }
        let mut server = Self {
            child,
            url,
            dir,
            bin,
            ports: (http_port, tcp_port),
            password,
        };
        server.wait_until_ready(&log_path).await?;
        tracing::info!(url = %server.url, dir = %server.dir.display(), "local ClickHouse started");
        Ok(server)
    }

    /// ClickHouse's HTTP URL on loopback.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory holding its config, data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The user Glimpse connects as ([`USER`]).
    pub fn user(&self) -> &str {
        USER
    }

    /// The generated password every client needs (kept in the directory, mode 0600).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL with the credentials in it (`http://default:…@127.0.0.1:port`), as
    /// `GLIMPSE_CLICKHOUSE_URL` accepts it: for handing the server to another process. Never
    /// log it.
    pub fn url_with_credentials(&self) -> String {
        self.url
            .replacen("http://", &format!("http://{USER}:{}@", self.password), 1)
    }

    /// A client with the server's URL and credentials.
    pub fn client(&self) -> clickhouse::Client {
        client(&self.url, &self.password)
    }

    /// ClickHouse's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Keeps the server running until `shutdown`: a server that exits is started again on the
    /// same directory and ports (its URL and password unchanged) after 1 s, 2 s, 4 s … at most
    /// 30 s; then stops it, killing it if it takes longer than `stop_timeout`.
    pub async fn keep_running(mut self, shutdown: CancellationToken, stop_timeout: Duration) {
        loop {
            let status = tokio::select! {
                status = self.child.wait() => status,
                _ = shutdown.cancelled() => {
                    self.stop_within(stop_timeout).await;
                    return;
                }
            };
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            tracing::error!(%status, "the local ClickHouse exited; starting it again");
            let (dir, ports) = (self.dir.clone(), self.ports);
            let bin = self.bin.to_string_lossy().into_owned();
            let mut delay = Duration::from_secs(1);
            self = loop {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
                let start = Self::start_on(&dir, &bin, Some(ports));
                let started = tokio::select! {
                    started = start => started,
                    // Dropping the half-started child kills it.
                    _ = shutdown.cancelled() => return,
                };
                match started {
                    Ok(server) => {
                        tracing::info!("the local ClickHouse is running again");
                        break server;
                    }
                    Err(error) => {
                        delay = (delay * 2).min(MAX_RESTART_DELAY);
                        tracing::error!(%error, retry_in = ?delay, "starting the local ClickHouse again failed");
                    }
                }
            };
        }
    }

    async fn wait_until_ready(&mut self, log: &Path) -> Result<(), LocalClickHouseError> {
        let client = self.client();
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LocalClickHouseError::Exited {
                    status,
                    log: log.into(),
                    tail: tail(log, 20),
                });
            }
            let ping = client.query("SELECT 1").fetch_one::<u8>();
            if let Ok(Ok(1)) = tokio::time::timeout(Duration::from_secs(2), ping).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LocalClickHouseError::Timeout(STARTUP_TIMEOUT, log.into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks the server to stop (SIGTERM) and waits; kills it if it takes too long.
    pub async fn stop(self) {
        self.stop_within(STOP_TIMEOUT).await;
    }

    /// Like [`stop`](Self::stop), killing the server after `timeout`.
    pub async fn stop_within(mut self, timeout: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            match tokio::time::timeout(timeout, self.child.wait()).await {
                Ok(_) => tracing::info!("local ClickHouse stopped"),
                Err(_) => {
                    tracing::warn!("local ClickHouse did not stop in time; killing it");
                    let _ = self.child.kill().await;
                }
            }
        }
        let _ = std::fs::remove_file(self.dir.join("server.pid"));
        let _ = std::fs::remove_file(self.dir.join(STATE_FILE));
    }
}

/// A stopped server's directory and ports, to start it again at the same URL.
#[derive(Debug, Clone)]
pub struct StoppedClickHouse {
    dir: PathBuf,
    bin: PathBuf,
    ports: (u16, u16),
}

impl StoppedClickHouse {
    pub async fn start_again(self) -> Result<LocalClickHouse, LocalClickHouseError> {
        LocalClickHouse::start_on(&self.dir, &self.bin.to_string_lossy(), Some(self.ports)).await
    }
}

/// A server left running by a Glimpse that was killed holds the data directory's lock; stop
/// it. The directory of a live Glimpse process is never touched, even while its server is
/// down (it is starting it again): that is an error.
async fn stop_stale_server(dir: &Path) -> Result<(), LocalClickHouseError> {
    let pid = match read_state(dir) {
        Some(running) if running.owner != std::process::id() && running.owner_alive() => {
            return Err(LocalClickHouseError::InUse {
                dir: dir.into(),
                owner: running.owner,
            });
        }
        Some(running) => running.pid,
        // Written by a Glimpse from before server.json.
        None => match std::fs::read_to_string(dir.join("server.pid")) {
            Ok(text) => match text.trim().parse::<u32>() {
                Ok(pid) => pid,
                Err(_) => return Ok(()),
            },
            Err(_) => return Ok(()),
        },
    };
    if !ours(dir, pid) {
        return Ok(());
    }
    let Ok(pid) = i32::try_from(pid) else {
        return Ok(());
    };
    tracing::warn!(
        pid,
        "stopping a ClickHouse left running by an earlier Glimpse"
    );
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    for _ in 0..300 {
        if kill(Pid::from_raw(pid), None).is_err() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    Ok(())
}

fn find_binary(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        let path = PathBuf::from(bin);
        return path.is_file().then_some(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(bin))
        .find(|candidate| candidate.is_file())
}

/// A port the kernel says is free now. Another process could take it before ClickHouse binds
/// it; then ClickHouse exits and the error says so.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Works on 18.16 and on current versions: only long-standing settings. The query log is off
/// so that ClickHouse keeps no second copy of what Glimpse sends.
fn server_config(dir: &Path, http_port: u16, tcp_port: u16) -> String {
    let d = dir.display();
    let mut xml = String::new();
    let _ = write!(
        xml,
        r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>1</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"#
    );
    xml
}

/// One user, `default`, with the generated password (its SHA-256: works on 18.16 and current
/// versions), from loopback only.
fn users_xml(password: &str) -> String {
    let hash = hex(&sha2::Sha256::digest(password.as_bytes()));
    USERS_XML.replace("{password_sha256_hex}", &hash)
}

const USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <log_queries>0</log_queries>
        </default>
    </profiles>
    <users>
        <default>
            <password_sha256_hex>{password_sha256_hex}</password_sha256_hex>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_owner_pid_is_not_taken_for_the_owner() {
        let me = std::process::id();
        let running = |owner_started| Running {
            pid: 1,
            owner: me,
            owner_started,
            url: String::new(),
        };
        assert!(running(process_started(me)).owner_alive());
        assert!(
            running(None).owner_alive(),
            "files from before owner_started"
        );
        let other_start = process_started(me).map(|t| t + 1);
        assert!(
            !running(other_start).owner_alive(),
            "same pid, another process"
        );
        let gone = Running {
            owner: u32::MAX / 2,
            ..running(None)
        };
        assert!(!gone.owner_alive());
    }

    #[test]
    fn missing_binary_says_how_to_install() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = rt
            .block_on(LocalClickHouse::start(
                dir.path(),
                "no-such-clickhouse-binary",
            ))
            .unwrap_err()
            .to_string();
        assert!(err.contains("apt-get install clickhouse-server"), "{err}");
        assert!(err.contains("GLIMPSE_CLICKHOUSE_URL"), "{err}");
    }
}
