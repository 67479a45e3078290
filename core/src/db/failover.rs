//! Several ClickHouse servers of one cluster (`clickhouse_url = "http://ch1:8123,http://ch2:8123"`):
//! which one Glimpse talks to, and when that changes.
//!
//! The choice sits below the `clickhouse` crate, in the connector of its HTTP client: every
//! connection is opened to the first server that is up, so every clone of the client (the
//! collector's sink, migrations, readiness; the query service's queries) follows one choice
//! without knowing there is one. Connections are not pooled with several servers, so the
//! next request after a switch goes to the new choice (a connect on a LAN costs far less
//! than the queries it carries).
//!
//! - A server whose connect fails (refused, timed out, TLS) is marked down at once and the
//!   same connect goes on to the next server; the request that saw the old connection die
//!   (mid-insert) fails and its caller retries it as usual (the sink's batch ids make a
//!   re-sent batch land once, through whichever server).
//! - A background probe (`SELECT 1`, every [`PROBE_INTERVAL`]) marks a server that fails
//!   [`PROBES_TO_SWITCH`] probes in a row down, and a down server up again after as many
//!   successful probes: the choice returns to the first server only once it has answered for
//!   a while, never because of one lucky request (no flapping).
//! - Every switch is logged (`host:port` only: a URL may carry a query string) and counted
//!   (`glimpse_clickhouse_failovers_total`); `glimpse_clickhouse_server_up{server}` is 1 or 0.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioExecutor;

use crate::config::{Config, ServerList};

/// How often every server is asked `SELECT 1`.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Consecutive failed probes that mark an up server down, and successful ones that mark a
/// down server up.
pub const PROBES_TO_SWITCH: u32 = 2;
/// A probe not answered in this time failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A server that does not accept a connection in this time is down (a host that is off
/// drops packets instead of refusing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The up/down state of each server and the current choice; no I/O, so that the rules are
/// tested alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    up: Vec<bool>,
    /// Consecutive probe results against the server's state (failures while up, successes
    /// while down).
    streak: Vec<u32>,
    current: usize,
}

/// The choice moved from one server to another (indexes into the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub from: usize,
    pub to: usize,
}

impl Health {
    /// `servers` servers, all up; the first is the choice.
    pub fn new(servers: usize) -> Self {
        assert!(servers > 0, "a list of servers is never empty");
        Self {
            up: vec![true; servers],
            streak: vec![0; servers],
            current: 0,
        }
    }

    /// The server new connections go to.
    pub fn current(&self) -> usize {
        self.current
    }

    pub fn is_up(&self, server: usize) -> bool {
        self.up[server]
    }

    /// Which servers a connect tries, in order: the choice, the other servers that are up,
    /// then those that are down (a server may be back before its probes say so, and trying
    /// it beats failing).
    pub fn connect_order(&self) -> Vec<usize> {
        let mut order = vec![self.current];
        let others = (0..self.up.len()).filter(|&i| i != self.current);
        order.extend(others.clone().filter(|&i| self.up[i]));
        order.extend(others.filter(|&i| !self.up[i]));
        order
    }

    /// A connect to `server` failed: it is down now.
    pub fn connect_failed(&mut self, server: usize) -> Option<Switch> {
        self.up[server] = false;
        self.streak[server] = 0;
        self.choose()
    }

    /// A probe of `server` answered (`ok`) or not.
    pub fn probed(&mut self, server: usize, ok: bool) -> Option<Switch> {
        if ok == self.up[server] {
            self.streak[server] = 0;
            return None;
        }
        self.streak[server] += 1;
        if self.streak[server] < PROBES_TO_SWITCH {
            return None;
        }
        self.up[server] = ok;
        self.streak[server] = 0;
        self.choose()
    }

    /// The first server that is up; with none up, the choice stays (connects try them all).
    fn choose(&mut self) -> Option<Switch> {
        let first_up = self.up.iter().position(|&up| up)?;
        if first_up == self.current {
            return None;
        }
        let switch = Switch {
            from: self.current,
            to: first_up,
        };
        self.current = first_up;
        Some(switch)
    }
}

/// The servers of a client and their health, shared by its connector and its probe.
struct Servers {
    /// `scheme://host:port` of each server, what a connection is opened to.
    targets: Vec<Uri>,
    /// `host:port` of each server, for logs and metrics.
    names: Vec<String>,
    health: Mutex<Health>,
}

impl Servers {
    fn new(list: &ServerList) -> Result<Self, http::Error> {
        let mut targets = Vec::new();
        let mut names = Vec::new();
        for url in list.urls() {
            let host = url.host_str().unwrap_or_default();
            let name = match url.port_or_known_default() {
                Some(port) if host.contains(':') => format!("[{host}]:{port}"),
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            targets.push(
                Uri::builder()
                    .scheme(url.scheme())
                    .authority(name.as_str())
                    .path_and_query("/")
                    .build()?,
            );
            names.push(name);
        }
        for name in &names {
            metrics::gauge!("glimpse_clickhouse_server_up", "server" => name.clone()).set(1.0);
        }
        Ok(Self {
            targets,
            health: Mutex::new(Health::new(names.len())),
            names,
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // The state is a few flags; one left by a panicking thread is still consistent.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connect_failed(&self, server: usize, reason: &str) {
        let (was_up, switch) = {
            let mut health = self.health();
            (health.is_up(server), health.connect_failed(server))
        };
        if was_up {
            tracing::warn!(server = %self.names[server], %reason, "ClickHouse server unreachable; marked down");
            self.set_up_metric(server, false);
        }
        self.report(switch);
    }

    fn probed(&self, server: usize, ok: bool) {
        let (before, after, switch) = {
            let mut health = self.health();
            let before = health.is_up(server);
            let switch = health.probed(server, ok);
            (before, health.is_up(server), switch)
        };
        if before != after {
            let server_name = &self.names[server];
            if after {
                tracing::info!(server = %server_name, "ClickHouse server answers again; marked up");
            } else {
                tracing::warn!(server = %server_name, "ClickHouse server fails its health checks; marked down");
            }
            self.set_up_metric(server, after);
        }
        self.report(switch);
    }

    fn set_up_metric(&self, server: usize, up: bool) {
        let name = self.names[server].clone();
        metrics::gauge!("glimpse_clickhouse_server_up", "server" => name)
            .set(f64::from(u8::from(up)));
    }

    fn report(&self, switch: Option<Switch>) {
        if let Some(Switch { from, to }) = switch {
            tracing::warn!(
                from = %self.names[from],
                to = %self.names[to],
                "switched ClickHouse server"
            );
            metrics::counter!("glimpse_clickhouse_failovers_total").increment(1);
        }
    }
}

/// Opens each connection to the chosen server, whatever the request's URI names, moving on
/// to the next server when a connect fails.
#[derive(Clone)]
struct FailoverConnector<C> {
    inner: C,
    servers: Arc<Servers>,
}

impl<C> tower_service::Service<Uri> for FailoverConnector<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Future: Send,
    C::Response: Send,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, _requested: Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let servers = self.servers.clone();
        Box::pin(async move {
            let order = servers.health().connect_order();
            let mut last: Option<BoxError> = None;
            for server in order {
                let target = servers.targets[server].clone();
                std::future::poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                match tokio::time::timeout(CONNECT_TIMEOUT, inner.call(target)).await {
                    Ok(Ok(connection)) => return Ok(connection),
                    Ok(Err(error)) => {
                        let error: BoxError = error.into();
                        servers.connect_failed(server, &error.to_string());
                        last = Some(error);
                    }
                    Err(_) => {
                        servers.connect_failed(server, "connect timed out");
                        last = Some("connect to ClickHouse timed out".into());
                    }
                }
            }
            Err(last.unwrap_or_else(|| "no ClickHouse server".into()))
        })
    }
}

/// A client for the servers of `list` (several), its credentials and TLS from `config`, whose
/// requests go to the first server that is up. Its health probe runs while the client (or a
/// clone) lives, on the current Tokio runtime; without one there is no probe, and a server
/// marked down is used again only when all others fail too.
pub(super) fn client(config: &Config, list: &ServerList) -> clickhouse::Client {
    let servers = match Servers::new(list) {
        Ok(servers) => Arc::new(servers),
        // Parsed URLs always make valid URIs; should one not, use the first server alone.
        Err(error) => {
            tracing::error!(%error, "ClickHouse server list; using the first server only");
            return super::tls::client(config.clickhouse_ca_cert.as_ref());
        }
    };
    let connector = FailoverConnector {
        inner: super::tls::connector(config.clickhouse_ca_cert.as_ref()),
        servers: servers.clone(),
    };
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let probes = list
            .urls()
            .iter()
            .map(|url| {
                super::tls::client(config.clickhouse_ca_cert.as_ref())
                    .with_url(url.as_str())
                    .with_user(&config.clickhouse_user)
                    .with_password(config.clickhouse_password.expose())
                    // As `db::connect`: ClickHouse 18.16 lacks the format validation needs.
                    .with_validation(false)
            })
            .collect();
        runtime.spawn(probe_while_used(Arc::downgrade(&servers), probes));
    }
    clickhouse::Client::with_http_client(http)
}

/// Probes every server each [`PROBE_INTERVAL`] until the client is dropped.
async fn probe_while_used(servers: Weak<Servers>, probes: Vec<clickhouse::Client>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(servers) = servers.upgrade() else {
            return;
        };
        for (server, probe) in probes.iter().enumerate() {
            let answer =
                tokio::time::timeout(PROBE_TIMEOUT, probe.query("SELECT 1").fetch_one::<u8>())
                    .await;
            servers.probed(server, matches!(answer, Ok(Ok(1))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_server_is_used_while_it_is_up() {
        let health = Health::new(3);
        assert_eq!(health.current(), 0);
        assert_eq!(health.connect_order(), vec![0, 1, 2]);
    }

    #[test]
    fn a_failed_connect_moves_to_the_next_server_at_once() {
        let mut health = Health::new(3);
        assert_eq!(health.connect_failed(0), Some(Switch { from: 0, to: 1 }));
        assert_eq!(health.current(), 1);
        // The down server is tried last, not skipped.
        assert_eq!(health.connect_order(), vec![1, 2, 0]);
        assert_eq!(health.connect_failed(1), Some(Switch { from: 1, to: 2 }));
        assert_eq!(health.connect_order(), vec![2, 0, 1]);
        // A failure of a server that is not the choice changes nothing.
        let mut health = Health::new(3);
        assert_eq!(health.connect_failed(2), None);
        assert_eq!(health.current(), 0);
        assert_eq!(health.connect_order(), vec![0, 1, 2]);
    }

    #[test]
    fn a_down_server_comes_back_only_after_consecutive_good_probes() {
        let mut health = Health::new(2);
        health.connect_failed(0);
        // Good probes broken by a bad one: still down (no flapping on a lucky answer).
        for _ in 1..PROBES_TO_SWITCH {
            assert_eq!(health.probed(0, true), None);
        }
        assert_eq!(health.probed(0, false), None);
        assert!(!health.is_up(0));
        assert_eq!(health.current(), 1);
        // Then enough in a row: up, and the choice again.
        for _ in 1..PROBES_TO_SWITCH {
            assert_eq!(health.probed(0, true), None);
        }
        assert_eq!(health.probed(0, true), Some(Switch { from: 1, to: 0 }));
        assert!(health.is_up(0));
        assert_eq!(health.current(), 0);
    }

    #[test]
    fn an_up_server_goes_down_after_consecutive_failed_probes() {
        let mut health = Health::new(2);
        assert_eq!(health.probed(0, false), None);
        assert_eq!(health.probed(0, true), None, "one failure is forgiven");
        for _ in 1..PROBES_TO_SWITCH {
            assert_eq!(health.probed(0, false), None);
        }
        assert_eq!(health.probed(0, false), Some(Switch { from: 0, to: 1 }));
        assert!(!health.is_up(0));
    }

    #[test]
    fn with_every_server_down_the_choice_stays_and_all_are_tried() {
        let mut health = Health::new(2);
        health.connect_failed(0);
        assert_eq!(health.connect_failed(1), None);
        assert_eq!(health.current(), 1);
        assert_eq!(health.connect_order(), vec![1, 0]);
        // The first to answer its probes again becomes the choice.
        for _ in 0..PROBES_TO_SWITCH {
            health.probed(0, true);
        }
        assert_eq!(health.current(), 0);
    }

    /// Two servers, the first refusing connections: the client's request reaches the second
    /// (a bare HTTP server answering one RowBinary `UInt8`), and the first is marked down.
    #[tokio::test]
    async fn a_connect_refused_by_the_first_server_goes_to_the_second() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = refusing.local_addr().unwrap();
        drop(refusing);
        let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answered = answering.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = answering.accept().await.unwrap();
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&[42]).await;
            }
        });
        let list = ServerList::parse(&format!("http://{refused},http://{answered}")).unwrap();
        let servers = Arc::new(Servers::new(&list).unwrap());
        let connector = FailoverConnector {
            inner: super::super::tls::connector(None),
            servers: servers.clone(),
        };
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let client = clickhouse::Client::with_http_client(http)
            .with_url(list.first().as_str())
            .with_validation(false);
        let answer = client.query("SELECT 42").fetch_one::<u8>().await;
        assert_eq!(answer.unwrap(), 42);
        let health = servers.health().clone();
        assert!(!health.is_up(0), "the refusing server is down");
        assert_eq!(health.current(), 1);
        // Later requests go straight to the second server.
        let answer = client.query("SELECT 42").fetch_one::<u8>().await;
        assert_eq!(answer.unwrap(), 42);
    }
}
