//! The accept loop both services run: HTTP/1.1 with a header read timeout (slowloris, idle
//! keep-alive connections), a cap on the request head, a cap on open connections, and a
//! graceful shutdown under a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;

/// How much one service lets its clients hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send a request's head within this time, or the connection is closed; an
    /// idle keep-alive connection is closed after as long.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most open connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Which service, for the `glimpse_open_connections` gauge.
    pub service: &'static str,
}

impl ConnectionLimits {
    /// The collector's: `request_timeout_secs`, `max_header_bytes`, `max_connections`.
    pub fn collector(config: &Config) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(config.request_timeout_secs),
            max_header_bytes: config.max_header_bytes.max(8192),
            max_connections: config.collector.max_connections,
            service: "collector",
        }
    }

    /// The query service's: the same timeouts, `query_max_connections`.
    pub fn query(config: &Config) -> Self {
        Self {
            max_connections: config.query.query_max_connections,
            service: "query",
            ..Self::collector(config)
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves, each connection answered by the
/// service `make_service(peer)` returns; then stops accepting and lets in-flight requests
/// finish for at most `drain_timeout`.
pub async fn serve_connections<F, S, B>(
    listener: TcpListener,
    limits: ConnectionLimits,
    make_service: F,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) where
    F: Fn(SocketAddr) -> S,
    S: HttpService<Incoming, ResBody = B> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    // A client that dribbles its headers (slowloris) or sits idle is cut off; huge heads are
    // refused.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    // Each connection holds a permit: at the limit, new clients wait in the accept queue.
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let gauge = metrics::gauge!("glimpse_open_connections", "service" => limits.service);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, service = limits.service, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = graceful
                    .watch(builder.serve_connection(TokioIo::new(stream), make_service(peer)));
                gauge.increment(1.0);
                let gauge = gauge.clone();
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    gauge.decrement(1.0);
                    drop(permit);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(service = limits.service, "in-flight requests did not finish before the shutdown deadline");
        }
    }
}

/// Raises the process's open-file limit to its hard limit (as Go and nginx do), and warns when
/// even that is below what the connection caps allow: past it, `accept` fails for every
/// service of the process, beacons included.
pub fn raise_file_limit(config: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    // Files, ClickHouse connections, the spool: a margin beside the clients' sockets.
    let wanted =
        (config.collector.max_connections + config.query.query_max_connections) as u64 + 256;
    if limit < wanted {
        tracing::warn!(
            limit,
            wanted,
            "the open-file limit is below max_connections + query_max_connections; \
             raise it (ulimit -n, LimitNOFILE=) or lower them"
        );
    }
}
