//! TLS to ClickHouse: the CA certificates of `clickhouse_ca_cert`, the HTTPS client the
//! `clickhouse` crate is given, and telling a certificate problem from a server that is down.
//!
//! rustls with `ring` (no OpenSSL, no cmake). Without `clickhouse_ca_cert` the system's roots
//! are trusted (`/etc/ssl/certs`, the Docker image installs `ca-certificates`); with it, only
//! the certificates in that file.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use crate::config::CaCert;

const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Below ClickHouse's own keep-alive timeout (3 s), as the `clickhouse` crate's default client.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A `clickhouse` client whose HTTP client speaks `http://` and `https://`, trusting `ca`'s
/// certificates, or the system's roots without it.
pub fn client(ca: Option<&CaCert>) -> clickhouse::Client {
    let connector = connector(ca);
    let http_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector);
    clickhouse::Client::with_http_client(http_client)
}

/// The connector of [`client`]: TCP, then TLS for `https://` URIs.
pub(super) fn connector(ca: Option<&CaCert>) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(ca))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

fn tls_config(ca: Option<&CaCert>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let (added, ignored) = roots.add_parsable_certificates(ca.certs.iter().cloned());
            if ignored > 0 {
                tracing::warn!(path = %ca.path.display(), added, ignored, "clickhouse_ca_cert: certificates rustls cannot use were ignored");
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "reading the system's CA certificates");
            }
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                // The connection will then fail with an unknown-issuer error at start-up.
                tracing::warn!(
                    "no system CA certificates found (install ca-certificates or set \
                     clickhouse_ca_cert): https:// ClickHouse servers will not be trusted"
                );
            }
        }
    }
    // `ring` rather than aws-lc-rs (which needs cmake and builds slowly): rustls deprecates
    // its provider only for lacking post-quantum key exchange, not a concern for this link.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The TLS problem behind a failed request (an untrusted or expired certificate, a name
/// mismatch, a handshake that failed), or `None` when it failed for another reason (refused,
/// timed out, an SQL error): those may pass, a certificate problem will not.
pub fn tls_problem(error: &clickhouse::error::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // `io::Error::source` skips the error it wraps, which is where tokio-rustls puts it
        // (inside another `io::Error` from the connector).
        next = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => error.source(),
        };
    }
    None
}

/// ClickHouse's certificate was not accepted: the server cannot be used until the
/// configuration changes, so this stops start-up instead of being retried forever.
#[derive(Debug, thiserror::Error)]
#[error(
    "ClickHouse at {url}: TLS failed: {problem} (if its certificate is signed by a private CA, \
     set clickhouse_ca_cert (GLIMPSE_CLICKHOUSE_CA_CERT) to the CA's PEM file)"
)]
pub struct TlsError {
    pub url: String,
    pub problem: String,
}

/// How long the start-up check waits for ClickHouse; a server that does not answer in time is
/// left to the usual retries.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks ClickHouse at an `https://` `url` for `SELECT 1` once: an error when its certificate
/// is refused. Any other failure (down, refused, wrong password) passes: the services retry
/// those and report them through `/ready`.
pub async fn check(client: &clickhouse::Client, url: &str) -> Result<(), TlsError> {
    if !url.starts_with("https://") {
        return Ok(());
    }
    let ping = client.query("SELECT 1").fetch_one::<u8>();
    match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
        Ok(Err(error)) => match tls_problem(&error) {
            Some(problem) => Err(TlsError {
                url: url.to_string(),
                problem,
            }),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = CaCert::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("ca.pem") && error.contains("no PEM certificate"),
            "{error}"
        );
        let missing = CaCert::load(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing.pem"), "{missing}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_a_tls_problem() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = client(None).with_url(format!("https://127.0.0.1:{port}"));
        let error = client
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .unwrap_err();
        assert_eq!(tls_problem(&error), None, "{error}");
    }
}
