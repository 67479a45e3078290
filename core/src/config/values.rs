//! Parsed values the configuration holds (beyond numbers and strings).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a CA certificate file cannot be used; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaCertError {
    #[error("{}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it", .0.display())]
    Empty(PathBuf),
}

/// The certificates of a PEM file of trusted CAs, read when the configuration is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct CaCert {
    pub path: PathBuf,
    pub(crate) certs: Vec<CertificateDer<'static>>,
}

impl CaCert {
    /// Reads every certificate in the PEM file at `path`; a file without one is an error.
    pub fn load(path: &Path) -> Result<Self, CaCertError> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| CaCertError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(CaCertError::Empty(path.to_path_buf()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            certs,
        })
    }
}

impl Serialize for CaCert {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.path.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CaCert {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = PathBuf::deserialize(deserializer)?;
        Self::load(&path).map_err(serde::de::Error::custom)
    }
}

/// `spool_fsync`, as written: when appended records are forced to disk (see [`FsyncPolicy`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    #[default]
    Always,
    Interval,
    Never,
}

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before the `202`: a group of concurrent beacons shares one fsync. Survives power loss.
    Always,
    /// At most this long after the `202`. A power loss can lose that window; a crash of
    /// Glimpse alone loses nothing (the data is in the OS's page cache).
    Interval(Duration),
    /// Only when a segment is sealed. A crash of Glimpse loses nothing; a power loss can lose
    /// the open segment.
    Never,
}

/// A setting that must not show in logs or error messages (`clickhouse_password`): `Debug`
/// prints `"***"` when it is set. Serialised as its value (the defaults figment starts from).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it (a request header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl PartialEq<&str> for Secret {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// The name of a ClickHouse cluster in the servers' `remote_servers` (`clickhouse_cluster`):
/// letters, digits and `_`, not starting with a digit, so that it can stand unquoted in
/// `ON CLUSTER` and in a `Distributed` engine's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ClusterName(String);

impl ClusterName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let plain = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if plain {
            Ok(Self(name.to_string()))
        } else {
            Err(format!(
                "{name:?} must be a cluster name of `remote_servers`: letters, digits and _, \
                 not starting with a digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClusterName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClusterName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// `clickhouse_url` read as one or more ClickHouse HTTP URLs, comma-separated: servers of one
/// cluster, used in this order (the first that is up; see `db::failover`). Each is an
/// `http://` or `https://` URL with a host; none is listed twice. Error messages never quote
/// a URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList(Vec<url::Url>);

impl ServerList {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let mut urls: Vec<url::Url> = Vec::with_capacity(parts.len());
        for (n, part) in (1..).zip(&parts) {
            // Only the list's positions are named: the text may hold credentials.
            let which = if parts.len() == 1 {
                String::new()
            } else {
                format!("server {n} of the list: ")
            };
            if part.is_empty() {
                return Err(format!(
                    "{which}empty (servers are separated by one comma each)"
                ));
            }
            let url = url::Url::parse(part).map_err(|e| format!("{which}{e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "{which}must be an http:// or https:// URL of ClickHouse's HTTP interface"
                ));
            }
            if urls.iter().any(|u| same_server(u, &url)) {
                return Err(format!("{which}the same server is listed twice"));
            }
            urls.push(url);
        }
        Ok(Self(urls))
    }

    /// In the configured order; never empty.
    pub fn urls(&self) -> &[url::Url] {
        &self.0
    }

    pub fn urls_mut(&mut self) -> &mut [url::Url] {
        &mut self.0
    }

    pub fn first(&self) -> &url::Url {
        &self.0[0]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for ServerList {
    /// As `clickhouse_url` is written: the URLs joined by commas.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts: Vec<&str> = self.0.iter().map(url::Url::as_str).collect();
        f.write_str(&texts.join(","))
    }
}

fn same_server(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}
