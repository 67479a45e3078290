//! The one typed configuration: a TOML file overlaid by `GLIMPSE_*` environment variables,
//! parsed and validated once at start-up.
//!
//! Every key of the file has an environment variable of the same name in upper case with the
//! `GLIMPSE_` prefix (`collector_addr` ⇄ `GLIMPSE_COLLECTOR_ADDR`). The environment wins.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

/// Everything an operator can set. Defaults are safe for a single-machine install.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the collector (beacon endpoint) listens. Default `127.0.0.1:8000`.
    pub collector_addr: SocketAddr,
    /// Where the query service (stats API, dashboard) listens. Default `127.0.0.1:8001`.
    pub query_addr: SocketAddr,
    /// Directory for Glimpse's own state (the local ClickHouse's data when Glimpse starts one).
    pub data_dir: PathBuf,
    /// HTTP URL of an existing ClickHouse. Unset: `glimpse serve` starts a local one.
    pub clickhouse_url: Option<String>,
    pub clickhouse_user: String,
    pub clickhouse_password: String,
    /// Database holding Glimpse's tables; created by the migrations. Default `glimpse`.
    pub clickhouse_database: String,
    /// The `clickhouse-server` binary used when Glimpse starts its own ClickHouse.
    pub clickhouse_server_bin: String,
    /// Sites whose beacons are accepted. In the environment: comma-separated domains.
    #[serde(deserialize_with = "deserialize_sites")]
    pub sites: Vec<SiteConfig>,
    /// Flush a batch to ClickHouse once it holds this many rows. Default 5000.
    pub batch_max_rows: usize,
    /// ...or once its oldest row has waited this long, in milliseconds. Default 1000.
    pub batch_max_delay_ms: u64,
    /// Accepted rows waiting for the writer; when full, beacons get `503`. Default 100000.
    pub queue_capacity: usize,
    /// Largest beacon body accepted, in bytes. Default 65536.
    pub max_body_bytes: usize,
    /// Longest page or referrer URL accepted, in characters. Default 4096.
    pub max_url_length: usize,
    /// Longest event name, in characters. Default 120.
    pub max_event_name_length: usize,
    /// Most custom properties on one event. Default 30.
    pub max_props: usize,
    /// Longest property key, in characters. Default 300.
    pub max_prop_key_length: usize,
    /// Longest property value, in characters. Default 2000.
    pub max_prop_value_length: usize,
    /// How long a graceful shutdown may take before in-flight work is abandoned, in seconds.
    pub shutdown_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            collector_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            query_addr: SocketAddr::from(([127, 0, 0, 1], 8001)),
            data_dir: PathBuf::from("glimpse-data"),
            clickhouse_url: None,
            clickhouse_user: "default".into(),
            clickhouse_password: String::new(),
            clickhouse_database: "glimpse".into(),
            clickhouse_server_bin: "clickhouse-server".into(),
            sites: Vec::new(),
            batch_max_rows: 5000,
            batch_max_delay_ms: 1000,
            queue_capacity: 100_000,
            max_body_bytes: 64 * 1024,
            max_url_length: 4096,
            max_event_name_length: 120,
            max_props: 30,
            max_prop_key_length: 300,
            max_prop_value_length: 2000,
            shutdown_timeout_secs: 30,
        }
    }
}

/// One site whose traffic Glimpse records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site's domain as the tracker sends it in `d`, e.g. `example.com`.
    pub domain: String,
}

/// A configuration that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: `{key}` (GLIMPSE_{env}): {reason}")]
    Invalid {
        key: &'static str,
        env: String,
        reason: String,
    },
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
}

impl ConfigError {
    fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            env: key.to_uppercase(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Loads defaults, then the TOML file (if given), then the `GLIMPSE_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile { path: path.into() });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only known keys: other GLIMPSE_* variables (GLIMPSE_CONFIG, GLIMPSE_LOG) are not
        // settings. String settings are taken verbatim (a password may look like a number);
        // the others are parsed by figment as TOML-like values.
        let defaults = Self::defaults_by_key();
        let typed: Vec<&str> = defaults
            .iter()
            .filter(|(_, v)| v.is_number() || v.is_boolean())
            .map(|(k, _)| k.as_str())
            .collect();
        figment = figment.merge(Env::prefixed("GLIMPSE_").only(&typed));
        for (key, default) in &defaults {
            if default.is_number() || default.is_boolean() {
                continue;
            }
            if let Ok(value) = std::env::var(format!("GLIMPSE_{}", key.to_uppercase())) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// The keys a file may hold, each of which is also `GLIMPSE_<KEY>` in the environment.
    pub fn keys() -> HashSet<String> {
        Self::defaults_by_key()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    fn defaults_by_key() -> Vec<(String, serde_json::Value)> {
        match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.clickhouse_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| ConfigError::invalid("clickhouse_url", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    "clickhouse_url",
                    "must be an http:// or https:// URL of ClickHouse's HTTP interface",
                ));
            }
        }
        let db = &self.clickhouse_database;
        if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::invalid(
                "clickhouse_database",
                "must be a non-empty name of letters, digits and _",
            ));
        }
        let mut seen = HashSet::new();
        for site in &self.sites {
            validate_domain(&site.domain).map_err(|r| ConfigError::invalid("sites", r))?;
            if !seen.insert(site.domain.as_str()) {
                return Err(ConfigError::invalid(
                    "sites",
                    format!("site {:?} is listed twice", site.domain),
                ));
            }
        }
        let positive = [
            ("batch_max_rows", self.batch_max_rows as u64),
            ("batch_max_delay_ms", self.batch_max_delay_ms),
            ("queue_capacity", self.queue_capacity as u64),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_url_length", self.max_url_length as u64),
            ("max_event_name_length", self.max_event_name_length as u64),
            ("max_prop_key_length", self.max_prop_key_length as u64),
            ("max_prop_value_length", self.max_prop_value_length as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }

    pub fn batch_max_delay(&self) -> Duration {
        Duration::from_millis(self.batch_max_delay_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// One line per problem, naming the setting and where its value came from.
fn describe(error: figment::Error) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            // The environment wins over the file, so a set variable is where the value came from.
            let env_name = format!("GLIMPSE_{}", key.to_uppercase());
            let source = match &e.metadata {
                _ if !key.is_empty() && std::env::var_os(&env_name).is_some() => env_name,
                Some(m) => match &m.source {
                    Some(figment::Source::File(path)) => path.display().to_string(),
                    _ => m.name.to_string(),
                },
                None => "configuration".to_string(),
            };
            if key.is_empty() {
                format!("{} (in {source})", e.kind)
            } else {
                format!("`{key}` (from {source}): {}", e.kind)
            }
        })
        .collect();
    ConfigError::Parse(lines.join("; "))
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{domain:?} is not a site domain: use the bare lower-case host name, e.g. example.com"
        ))
    }
}

/// `sites` may be a comma-separated string (the environment), a list of domains, or a list
/// of tables (`[[sites]]` with `domain = …`).
fn deserialize_sites<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SiteConfig>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Domain(String),
        Table(SiteConfig),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sites {
        Csv(String),
        List(Vec<Entry>),
    }
    let sites = match Sites::deserialize(d)? {
        Sites::Csv(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|domain| SiteConfig {
                domain: domain.to_string(),
            })
            .collect(),
        Sites::List(entries) => entries
            .into_iter()
            .map(|e| match e {
                Entry::Domain(domain) => SiteConfig { domain },
                Entry::Table(site) => site,
            })
            .collect(),
    };
    Ok(sites)
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_err(jail: &mut Jail, var: &str, value: &str) -> String {
        jail.clear_env();
        jail.set_env(var, value);
        Config::load(None).unwrap_err().to_string()
    }

    #[test]
    fn defaults_without_file_or_env() {
        Jail::expect_with(|_| {
            let c = Config::load(None).unwrap();
            assert_eq!(c, Config::default());
            assert_eq!(c.collector_addr.to_string(), "127.0.0.1:8000");
            assert_eq!(c.query_addr.to_string(), "127.0.0.1:8001");
            assert_eq!(c.clickhouse_database, "glimpse");
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "glimpse.toml",
                "collector_addr = \"0.0.0.0:9000\"\nbatch_max_rows = 7\nsites = [\"a.com\", { domain = \"b.com\" }]\n",
            )?;
            jail.set_env("GLIMPSE_BATCH_MAX_ROWS", "11");
            jail.set_env("GLIMPSE_CLICKHOUSE_PASSWORD", "123");
            jail.set_env("GLIMPSE_CONFIG", "not-a-setting");
            let c = Config::load(Some(Path::new("glimpse.toml"))).unwrap();
            assert_eq!(c.collector_addr.to_string(), "0.0.0.0:9000");
            assert_eq!(c.batch_max_rows, 11);
            assert_eq!(c.clickhouse_password, "123");
            let domains: Vec<_> = c.sites.iter().map(|s| s.domain.as_str()).collect();
            assert_eq!(domains, ["a.com", "b.com"]);
            Ok(())
        });
    }

    #[test]
    fn sites_from_comma_separated_env() {
        Jail::expect_with(|jail| {
            jail.set_env("GLIMPSE_SITES", "a.com, b.org,");
            let c = Config::load(None).unwrap();
            let domains: Vec<_> = c.sites.iter().map(|s| s.domain.as_str()).collect();
            assert_eq!(domains, ["a.com", "b.org"]);
            jail.set_env("GLIMPSE_SITES", "solo.net");
            let c = Config::load(None).unwrap();
            assert_eq!(c.sites[0].domain, "solo.net");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_setting() {
        Jail::expect_with(|jail| {
            let err = load_err(jail, "GLIMPSE_COLLECTOR_ADDR", "nope");
            assert!(err.contains("collector_addr"), "{err}");
            assert!(err.contains("GLIMPSE_"), "{err}");
            let err = load_err(jail, "GLIMPSE_BATCH_MAX_ROWS", "0");
            assert!(err.contains("batch_max_rows"), "{err}");
            let err = load_err(jail, "GLIMPSE_BATCH_MAX_ROWS", "many");
            assert!(err.contains("batch_max_rows"), "{err}");
            let err = load_err(jail, "GLIMPSE_SITES", "Example.com/x");
            assert!(err.contains("sites"), "{err}");
            let err = load_err(jail, "GLIMPSE_SITES", "a.com,a.com");
            assert!(err.contains("twice"), "{err}");
            let err = load_err(jail, "GLIMPSE_CLICKHOUSE_URL", "ftp://x");
            assert!(err.contains("clickhouse_url"), "{err}");
            let err = load_err(jail, "GLIMPSE_CLICKHOUSE_DATABASE", "x;drop");
            assert!(err.contains("clickhouse_database"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_file_keys_are_rejected_by_name() {
        Jail::expect_with(|jail| {
            jail.create_file("glimpse.toml", "colector_addr = \"0.0.0.0:9000\"\n")?;
            let err = Config::load(Some(Path::new("glimpse.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("colector_addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/glimpse.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/glimpse.toml"), "{err}");
    }

    #[test]
    fn example_file_parses_and_documents_every_key() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../glimpse.example.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        Jail::expect_with(|_| {
            Config::load(Some(&example)).unwrap();
            Ok(())
        });
        for key in Config::keys() {
            assert!(
                text.contains(&format!("{key} =")),
                "glimpse.example.toml does not document `{key}`"
            );
        }
    }
}
