//! Debian's ZooKeeper in the foreground: its own `zoo.cfg`, data directory and port, for the
//! cluster's replicated tables and distributed DDL. Killed on drop.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, ClusterError, STARTUP_TIMEOUT};

const ZOOKEEPER_SCRIPT: &str = "/usr/share/zookeeper/bin/zkServer.sh";

pub(crate) struct ZooKeeper {
    /// `None` while stopped ([`ZooKeeper::kill`]).
    child: Option<Child>,
    pub(crate) port: u16,
    dir: std::path::PathBuf,
}

impl ZooKeeper {
    /// Starts ZooKeeper in `dir` and waits until it answers.
    pub(crate) async fn start(dir: &Path) -> Result<Self, ClusterError> {
        let io = |what: &'static str| move |source| ClusterError::Io { what, source };
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(io("creating ZooKeeper's data directory"))?;
        let port = free_port()?;
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n\
                 forceSync=no\n4lw.commands.whitelist=ruok,srvr\n",
                data.display()
            ),
        )
        .map_err(io("writing zoo.cfg"))?;
        let mut zookeeper = Self {
            child: None,
            port,
            dir: dir.to_path_buf(),
        };
        zookeeper.spawn().await?;
        Ok(zookeeper)
    }

    /// Runs ZooKeeper on its `zoo.cfg` (its data and port as before) until it answers.
    pub(crate) async fn spawn(&mut self) -> Result<(), ClusterError> {
        let io = |what: &'static str| move |source| ClusterError::Io { what, source };
        let dir = &self.dir;
        let log_path = dir.join("zookeeper.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("opening ZooKeeper's log"))?;
        // The script `exec`s java, so the child is ZooKeeper itself. A small heap: the machine
        // is shared, and a test cluster's state is tiny.
        let child = Command::new(ZOOKEEPER_SCRIPT)
            .arg("start-foreground")
            .arg(dir.join("zoo.cfg"))
            .env("ZOOCFGDIR", dir)
            .env("JMXDISABLE", "true")
            .env(
                "JVMFLAGS",
                format!(
                    "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.log.dir={}",
                    dir.display()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("ZooKeeper's log"))?)
            .stderr(log)
            .spawn()
            .map_err(|source| ClusterError::ZooKeeperMissing {
                script: ZOOKEEPER_SCRIPT,
                source,
            })?;
        self.child = Some(child);
        self.wait_until_ok(&log_path).await
    }

    /// SIGKILL, as when its machine dies; its data stays for [`ZooKeeper::spawn`].
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Until ZooKeeper answers `ruok` with `imok` and runs standalone.
    async fn wait_until_ok(&mut self, log: &Path) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                return Err(ClusterError::ZooKeeperExited {
                    status,
                    log: std::fs::read_to_string(log).unwrap_or_default(),
                });
            }
            let port = self.port;
            let answered = tokio::task::spawn_blocking(move || {
                four_letters(port, "ruok") == "imok"
                    && four_letters(port, "srvr").contains("Mode: standalone")
            })
            .await
            .unwrap_or(false);
            if answered {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::ZooKeeperTimeout(STARTUP_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// ZooKeeper's answer to a four-letter command (`ruok`, `srvr`); empty if none.
fn four_letters(port: u16, command: &str) -> String {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    if stream.write_all(command.as_bytes()).is_ok() {
        let _ = stream.read_to_string(&mut answer);
    }
    answer
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.kill();
    }
}
