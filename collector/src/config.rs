//! The one typed configuration: a TOML file overlaid by `GLIMPSE_*` environment variables,
//! parsed and validated once at start-up.
//!
//! Every key of the file has an environment variable of the same name in upper case with the
//! `GLIMPSE_` prefix (`collector_addr` ⇄ `GLIMPSE_COLLECTOR_ADDR`). The environment wins.

use std::collections::{BTreeMap, HashSet};
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
    /// Where the Prometheus metrics of every service of the process are served (`/metrics`).
    /// Default `127.0.0.1:9464`: the counts say how much traffic each site gets.
    pub metrics_addr: SocketAddr,
    /// Directory for Glimpse's own state (the local ClickHouse's data when Glimpse starts one).
    pub data_dir: PathBuf,
    /// HTTP URL of an existing ClickHouse. Unset: `glimpse serve` starts a local one (with a
    /// generated password), and other commands use the one a running `glimpse serve` started.
    /// Credentials in the URL (`http://user:password@host:8123`) are read as
    /// `clickhouse_user`/`clickhouse_password`.
    pub clickhouse_url: Option<String>,
    pub clickhouse_user: String,
    pub clickhouse_password: String,
    /// PEM file of the CA(s) that signed an `https://` ClickHouse's certificate, for a private
    /// CA; read when the configuration is loaded. Unset: the system's roots are trusted.
    pub clickhouse_ca_cert: Option<crate::tls::CaCert>,
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
    /// Proxies whose `client_ip_header` is believed (CIDRs or addresses). Empty (the
    /// default): the socket peer is the client.
    #[serde(deserialize_with = "deserialize_list")]
    pub trusted_proxies: Vec<String>,
    /// The one header in which `trusted_proxies` report the client's address:
    /// `x-forwarded-for` (default), `forwarded` (RFC 7239), `x-real-ip`, or any header name
    /// such as `cf-connecting-ip`. Every other forwarding header is ignored.
    pub client_ip_header: crate::ingest::client_ip::ClientIpHeader,
    /// A MaxMind GeoLite2/GeoIP2 or DB-IP Lite City or Country database (`.mmdb`). Unset:
    /// no places are recorded.
    pub geoip_db: Option<PathBuf>,
    /// How often the collector checks whether the GeoIP database file(s) changed (size,
    /// modification time) and, if so, loads them without a restart, in seconds. 0: never.
    /// Default 5.
    pub geoip_check_secs: u64,
    /// Store the client's truncated network (e.g. `81.2.69.0/24`). Off by default: no part of
    /// the address is stored.
    pub store_ip_prefix: bool,
    /// Bits of an IPv4 address kept when `store_ip_prefix` is on. Default 24; "the first half
    /// of your IP" is 16.
    pub ipv4_prefix_length: u8,
    /// Bits of an IPv6 address kept when `store_ip_prefix` is on. Default 48.
    pub ipv6_prefix_length: u8,
    /// Drop events from browsers sending `DNT: 1`. Default true.
    pub honor_dnt: bool,
    /// Drop events from browsers sending `Sec-GPC: 1` (Global Privacy Control). Default true.
    pub honor_gpc: bool,
    /// Drop events from visitors who opted out on `/opt-out`. Default true.
    pub honor_opt_out_cookie: bool,
    /// Where the daily visitor-id salts live. Several collectors must share it (a shared
    /// volume). Default `<data_dir>/salts`.
    pub salt_dir: Option<PathBuf>,
    /// Parsed user agents kept in memory. Default 10000.
    pub user_agent_cache_size: usize,
    /// Most visits held open in memory (each at most ~4.5 KB; entry page, referrer and
    /// campaign values are kept to 256 bytes each for the visit). Over it, the visit idle
    /// longest is closed early (`glimpse_visits_evicted_total`). Default 100000.
    pub max_open_visits: usize,
    /// Write accepted events to a disk spool before answering `202`, so that no accepted event
    /// is lost to a crash or a ClickHouse outage. Default true.
    pub spool: bool,
    /// The spool's disk budget in bytes; past it beacons get `503`. Default 1 GiB.
    pub spool_max_bytes: u64,
    /// Free space, in bytes, the spool leaves on its file system: below it beacons get `503`,
    /// so that a local ClickHouse on the same disk can still store the backlog (and free the
    /// spool). 0: write until the disk is full. Default 64 MiB.
    pub spool_min_free_bytes: u64,
    /// When spooled events are forced to disk: `always` (before the `202`; group commit),
    /// `interval` (every `spool_fsync_interval_ms`), or `never` (when a segment is sealed).
    pub spool_fsync: String,
    /// With `spool_fsync = "interval"`: milliseconds between syncs. Default 10.
    pub spool_fsync_interval_ms: u64,
    /// Rows per second shipped while a backlog drains after an outage (0: no cap).
    /// Default 10.000.
    pub spool_drain_rows_per_sec: u64,
    /// A client must send its request headers within this many seconds, and its body within
    /// as many again (slowloris protection); an idle keep-alive connection is closed after as
    /// long. Both services. Default 10.
    pub request_timeout_secs: u64,
    /// Most open client connections; more wait in the kernel's accept queue. Default 10000.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; at least 8192. Both
    /// services. Default 16384.
    pub max_header_bytes: usize,
    /// Most open connections to the query service (stats API, dashboard); more wait in the
    /// kernel's accept queue. Kept well under the collector's, so that a flood of idle
    /// dashboard connections cannot use up the file descriptors beacons need. Default 512.
    pub query_max_connections: usize,
    /// Longest time one ClickHouse query of the stats API may run, in seconds (ClickHouse's
    /// `max_execution_time`); past it the answer is a `503`. Default 30.
    pub query_max_execution_secs: u64,
    /// Stats API requests per second allowed from one client address without an API key
    /// (share links, and requests that are refused), and dashboard `/ready` checks; over it,
    /// `429` + `Retry-After`. Requests with an API key are not limited. 0: no limit.
    /// Default 10.
    pub query_rate_limit_per_ip: u32,
    /// Burst allowed above `query_rate_limit_per_ip`. Default 60.
    pub query_rate_limit_burst: u32,
    /// Events per second allowed from one client (an IPv4 address or an IPv6 /64; token
    /// bucket, in memory only; each event of a bulk request costs a token); over it, `429` +
    /// `Retry-After`. 0 (default): no limit.
    pub rate_limit_per_ip: u32,
    /// Burst allowed above `rate_limit_per_ip`, and the most events one request may carry
    /// when limiting is on. Default 20.
    pub rate_limit_burst: u32,
    /// Minimum group size k of the stats API: breakdown rows with fewer than k visitors are
    /// merged into one `(other)` row. 0 (default): off.
    pub min_group_size: u64,
    /// How often, in seconds, the query service brings its per-day rollup up to date (whole
    /// UTC days whose visits have ended; days whose events changed are rebuilt, days whose
    /// events are gone removed). Long periods are then read from a few rows per day. 0: off,
    /// every question reads the events. Default 600.
    pub rollup_interval_secs: u64,
    /// Path the tracker script is served at; its variants sit beside it
    /// (`/js/script.outbound-links.js`). Pick a neutral name to get past ad blockers.
    /// Default `/js/script.js`.
    pub script_path: String,
    /// Path of the beacon endpoint; the served tracker posts here by default.
    /// Default `/api/event`.
    pub event_path: String,
    /// The collector's public address (e.g. `https://stats.example.com`), used for the links in
    /// the privacy statement and pages. Unset: links are relative to the collector.
    pub public_url: Option<String>,
    /// Where the data is kept, in words, for the privacy statement (e.g. "on our own server in
    /// Frankfurt, Germany"). Unset: the statement says "on servers we operate".
    pub data_location: Option<String>,
    /// Who visitors can write to about their data, for the privacy statement (an e-mail
    /// address or URL). Unset: not mentioned.
    pub privacy_contact: Option<String>,
    /// Umami website ids mapped to sites, for Umami's tracker (`POST /api/send`):
    /// `{ "<uuid>" = "example.com" }`. In the environment: `uuid=domain,uuid=domain`.
    #[serde(deserialize_with = "deserialize_id_map")]
    pub umami_websites: BTreeMap<String, String>,
    /// Matomo `idsite`s mapped to sites, for Matomo's tracker (`/matomo.php`, `/piwik.php`):
    /// `{ 1 = "example.com" }`. In the environment: `idsite=domain,idsite=domain`.
    #[serde(deserialize_with = "deserialize_id_map")]
    pub matomo_sites: BTreeMap<String, String>,
    /// What `/privacy/my-data` shows a visitor: `summary` (default: per site the number of
    /// page views and other events, the days, and which kinds of data are stored; no pages,
    /// referrers or times) or `full` (every event with its page, source and minute; anyone
    /// sharing the visitor's address and browser, e.g. behind the same NAT, sees them too).
    pub visitor_data_detail: VisitorDataDetail,
    /// Erasures (`POST /privacy/erase`) one client (an IPv4 address, an IPv6 /64) may ask for
    /// per hour; over it, `429` + `Retry-After`. Default 4.
    pub erase_limit_per_hour: u32,
    /// Erase requests arriving within this many milliseconds go to ClickHouse as one
    /// mutation (each mutation rewrites data parts). Default 2000.
    pub erase_batch_ms: u64,
    /// How log lines (on stderr) are written: `text` (the default, for people) or `json` (one
    /// object a line, with the request's span and its `request_id`, for log collectors).
    /// `GLIMPSE_LOG` sets which lines.
    pub log_format: LogFormat,
}

/// How log lines are written; see [`Config::log_format`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What `/privacy/my-data` shows; see [`Config::visitor_data_detail`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VisitorDataDetail {
    /// Which sites hold how much, by day; nothing a neighbour could learn a page from.
    #[default]
    Summary,
    /// Every event with its page, source and time.
    Full,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            collector_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            query_addr: SocketAddr::from(([127, 0, 0, 1], 8001)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            data_dir: PathBuf::from("glimpse-data"),
            clickhouse_url: None,
            clickhouse_user: "default".into(),
            clickhouse_password: String::new(),
            clickhouse_ca_cert: None,
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
            trusted_proxies: Vec::new(),
            client_ip_header: Default::default(),
            geoip_db: None,
            geoip_check_secs: 5,
            store_ip_prefix: false,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 48,
            honor_dnt: true,
            honor_gpc: true,
            honor_opt_out_cookie: true,
            salt_dir: None,
            user_agent_cache_size: 10_000,
            max_open_visits: crate::ingest::sessions::DEFAULT_MAX_OPEN_VISITS,
            spool: true,
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_min_free_bytes: 64 * 1024 * 1024,
            spool_fsync: "always".into(),
            spool_fsync_interval_ms: 10,
            spool_drain_rows_per_sec: 50_000,
            request_timeout_secs: 10,
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            rate_limit_per_ip: 0,
            rate_limit_burst: 20,
            query_max_connections: 512,
            query_max_execution_secs: 30,
            query_rate_limit_per_ip: 10,
            query_rate_limit_burst: 60,
            min_group_size: 0,
            rollup_interval_secs: 600,
            script_path: "/js/script.js".into(),
            event_path: "/api/event".into(),
            public_url: None,
            data_location: None,
            privacy_contact: None,
            umami_websites: BTreeMap::new(),
            matomo_sites: BTreeMap::new(),
            visitor_data_detail: VisitorDataDetail::Summary,
            erase_limit_per_hour: 4,
            erase_batch_ms: 2000,
            log_format: LogFormat::Text,
        }
    }
}

/// One site whose traffic Glimpse records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site's domain as the tracker sends it in `d`, e.g. `example.com`.
    pub domain: String,
    /// IANA time zone in which the stats API buckets days and hours and reads "today",
    /// e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// A secret that gives read-only access to this site's stats without an API key
    /// (`?auth=TOKEN`), for a public share link. Unset (default): no share link.
    #[serde(default)]
    pub share_token: Option<String>,
    /// Page host names whose events count (`www.` is ignored). Empty: any host.
    #[serde(default)]
    pub allowed_hostnames: Vec<String>,
    /// Also accept subdomains of the allowed host names. Default true.
    #[serde(default = "yes")]
    pub allow_subdomains: bool,
    /// Client networks (CIDRs or addresses) whose events are dropped, e.g. your office.
    #[serde(default)]
    pub exclude_ips: Vec<String>,
    /// Page paths whose events are dropped; `*` matches anything, e.g. `/admin/*`.
    #[serde(default)]
    pub exclude_paths: Vec<String>,
    /// Days events are kept; older ones are deleted by the retention job. Default 180.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Conversions the stats API reports (`event:goal`, `conversion_rate`): a custom event's
    /// name (`"Signup"`) or `"Visit /path"` for page views, `*` matching any characters
    /// (`"Visit /blog/*"`). Default none.
    #[serde(default)]
    pub goals: Vec<String>,
}

fn default_retention_days() -> u32 {
    180
}

fn yes() -> bool {
    true
}

fn utc() -> String {
    "UTC".into()
}

impl SiteConfig {
    /// A site with default rules.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            allow_subdomains: true,
            timezone: utc(),
            retention_days: default_retention_days(),
            ..Self::default()
        }
    }
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
        for key in SECRET_KEYS {
            if let Some(value) = secret_from_file(key)? {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let mut config: Config = figment.extract().map_err(describe)?;
        config.take_url_credentials()?;
        config.validate()?;
        Ok(config)
    }

    /// `http://user:password@host:8123` is read as the URL without them plus
    /// `clickhouse_user`/`clickhouse_password`, so that the URL can be logged and the
    /// credentials go in headers.
    fn take_url_credentials(&mut self) -> Result<(), ConfigError> {
        let Some(text) = &self.clickhouse_url else {
            return Ok(());
        };
        let mut url = url::Url::parse(text)
            .map_err(|e| ConfigError::invalid("clickhouse_url", e.to_string()))?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        if !url.username().is_empty() {
            self.clickhouse_user = decode(url.username());
        }
        if let Some(password) = url.password() {
            self.clickhouse_password = decode(password);
        }
        if url.username().is_empty() && url.password().is_none() {
            return Ok(());
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        self.clickhouse_url = Some(url.to_string());
        Ok(())
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
            validate_timezone(&site.timezone)
                .map_err(|r| ConfigError::invalid("sites", format!("site {}: {r}", site.domain)))?;
            if site.share_token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(ConfigError::invalid(
                    "sites",
                    format!(
                        "site {}: share_token must be at least 16 characters",
                        site.domain
                    ),
                ));
            }
            if !seen.insert(site.domain.as_str()) {
                return Err(ConfigError::invalid(
                    "sites",
                    format!("site {:?} is listed twice", site.domain),
                ));
            }
        }
        self.trusted_proxies()?;
        crate::ingest::ip_prefix::validate_prefixes(
            self.ipv4_prefix_length,
            self.ipv6_prefix_length,
        )
        .map_err(|r| ConfigError::invalid("ipv4_prefix_length", r))?;
        for site in &self.sites {
            crate::ingest::sites::SiteRules::new(site)
                .map_err(|r| ConfigError::invalid("sites", format!("site {}: {r}", site.domain)))?;
        }
        self.spool_fsync_policy()?;
        validate_paths(&self.script_path, &self.event_path)?;
        self.validate_tracker_ids()?;
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| ConfigError::invalid("public_url", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::invalid("public_url", "must be an http(s) URL"));
            }
        }
        for site in &self.sites {
            crate::goals::parse_goals(&site.goals).map_err(|reason| {
                ConfigError::invalid("sites", format!("site {}: {reason}", site.domain))
            })?;
            if site.retention_days == 0 {
                return Err(ConfigError::invalid(
                    "sites",
                    format!("site {}: retention_days must be at least 1", site.domain),
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
            ("request_timeout_secs", self.request_timeout_secs),
            ("max_connections", self.max_connections as u64),
            ("max_open_visits", self.max_open_visits as u64),
            ("erase_limit_per_hour", u64::from(self.erase_limit_per_hour)),
            ("erase_batch_ms", self.erase_batch_ms),
            ("query_max_connections", self.query_max_connections as u64),
            ("query_max_execution_secs", self.query_max_execution_secs),
        ];
        if self.max_header_bytes < 8192 {
            return Err(ConfigError::invalid(
                "max_header_bytes",
                "must be at least 8192",
            ));
        }
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

    /// The spool's fsync policy.
    pub fn spool_fsync_policy(&self) -> Result<crate::sink::spool::FsyncPolicy, ConfigError> {
        use crate::sink::spool::FsyncPolicy;
        match self.spool_fsync.as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "interval" => Ok(FsyncPolicy::Interval(Duration::from_millis(
                self.spool_fsync_interval_ms.max(1),
            ))),
            "never" => Ok(FsyncPolicy::Never),
            _ => Err(ConfigError::invalid(
                "spool_fsync",
                "must be always, interval or never",
            )),
        }
    }

    /// The spool's settings (directory `<data_dir>/spool`).
    pub fn spool_config(&self) -> Result<crate::sink::spool::SpoolConfig, ConfigError> {
        Ok(crate::sink::spool::SpoolConfig {
            dir: self.data_dir.join("spool"),
            max_bytes: self.spool_max_bytes,
            min_free_bytes: self.spool_min_free_bytes,
            fsync: self.spool_fsync_policy()?,
            segment_max_rows: self.batch_max_rows,
            segment_max_age: self.batch_max_delay(),
            queue_capacity: self.queue_capacity,
            drain_rows_per_sec: self.spool_drain_rows_per_sec,
            dead_letter_dir: self.dead_letter_dir(),
        })
    }

    /// The trusted proxies and the header they report the client in.
    pub fn trusted_proxies(&self) -> Result<crate::ingest::client_ip::TrustedProxies, ConfigError> {
        crate::ingest::client_ip::TrustedProxies::parse(
            &self.trusted_proxies,
            self.client_ip_header.clone(),
        )
        .map_err(|r| ConfigError::invalid("trusted_proxies", r))
    }

    /// Where batches ClickHouse refuses for good are set aside (`<data_dir>/dead-letter`).
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.data_dir.join("dead-letter")
    }

    /// Where the visitor-id salts live.
    pub fn salt_dir(&self) -> PathBuf {
        self.salt_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("salts"))
    }
}

/// Settings that may instead be read from a file named by `GLIMPSE_<KEY>_FILE` (Docker and
/// Kubernetes secrets), so that the secret is in no process environment.
pub const SECRET_KEYS: [&str; 2] = ["clickhouse_password", "clickhouse_url"];

/// The content of the file `GLIMPSE_<KEY>_FILE` names, without its final line break.
fn secret_from_file(key: &'static str) -> Result<Option<String>, ConfigError> {
    let var = format!("GLIMPSE_{}_FILE", key.to_uppercase());
    let Some(path) = std::env::var_os(&var) else {
        return Ok(None);
    };
    if std::env::var_os(format!("GLIMPSE_{}", key.to_uppercase())).is_some() {
        return Err(ConfigError::invalid(
            key,
            format!(
                "set either GLIMPSE_{} or {var}, not both",
                key.to_uppercase()
            ),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::invalid(
            key,
            format!("{var}: cannot read {}: {e}", Path::new(&path).display()),
        )
    })?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
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

/// An IANA time zone name that the bundled time zone database knows, e.g. `Europe/Berlin`.
pub fn validate_timezone(name: &str) -> Result<(), String> {
    jiff::tz::TimeZone::get(name).map(|_| ()).map_err(|_| {
        format!("timezone {name:?} is not an IANA time zone name such as Europe/Berlin")
    })
}

/// The tracker's script and beacon paths: absolute, distinct, clear of the other endpoints.
fn validate_paths(script: &str, event: &str) -> Result<(), ConfigError> {
    const TAKEN: [&str; 8] = [
        "/health",
        "/ready",
        "/metrics",
        "/opt-out",
        "/opt-in",
        "/privacy",
        "/privacy/my-data",
        "/privacy/erase",
    ];
    for (key, path) in [("script_path", script), ("event_path", event)] {
        let plain =
            path.starts_with('/') && !path.contains(['?', '#', ' ']) && !TAKEN.contains(&path);
        if !plain {
            return Err(ConfigError::invalid(
                key,
                format!("{path:?} must start with / (no ? or #), and no other endpoint use it"),
            ));
        }
    }
    if !script.ends_with(".js") || script.len() < 5 {
        return Err(ConfigError::invalid("script_path", "must end with .js"));
    }
    if crate::http::script::variant_of(event, script).is_some() {
        return Err(ConfigError::invalid(
            "event_path",
            "must differ from script_path and its variants",
        ));
    }
    Ok(())
}

impl Config {
    /// Every Umami website id is a UUID and every Matomo `idsite` a number, each naming a
    /// configured site; other trackers' endpoints are not the Plausible event path.
    fn validate_tracker_ids(&self) -> Result<(), ConfigError> {
        let configured = |domain: &str| self.sites.iter().any(|s| s.domain == domain);
        for (id, domain) in &self.umami_websites {
            let uuid = id.len() == 36
                && id.char_indices().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                });
            if !uuid {
                return Err(ConfigError::invalid(
                    "umami_websites",
                    format!("{id:?} is not an Umami website id (a UUID)"),
                ));
            }
            if !configured(domain) {
                return Err(ConfigError::invalid(
                    "umami_websites",
                    format!("website {id} maps to {domain:?}, which is not in `sites`"),
                ));
            }
        }
        for (id, domain) in &self.matomo_sites {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::invalid(
                    "matomo_sites",
                    format!("{id:?} is not a Matomo idsite (a number)"),
                ));
            }
            if !configured(domain) {
                return Err(ConfigError::invalid(
                    "matomo_sites",
                    format!("idsite {id} maps to {domain:?}, which is not in `sites`"),
                ));
            }
        }
        const OTHER_TRACKERS: [&str; 4] = ["/api/send", "/matomo.php", "/piwik.php", "/pixel.gif"];
        if OTHER_TRACKERS.contains(&self.event_path.as_str()) {
            return Err(ConfigError::invalid(
                "event_path",
                "is the endpoint of another tracker (Umami, Matomo, the pixel)",
            ));
        }
        Ok(())
    }
}

/// Tracker site ids → site domains: a table, a list of `id=domain`, or a comma-separated
/// string of them (the environment). Ids are trimmed and lower-cased (UUIDs come in both cases).
fn deserialize_id_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Map {
        Csv(String),
        List(Vec<String>),
        Table(BTreeMap<String, String>),
    }
    let pair = |item: &str| -> Result<(String, String), D::Error> {
        let (id, domain) = item
            .split_once('=')
            .ok_or_else(|| serde::de::Error::custom(format!("{item:?} is not id=domain")))?;
        Ok((id.trim().to_string(), domain.trim().to_string()))
    };
    let pairs: Vec<(String, String)> = match Map::deserialize(d)? {
        Map::Csv(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(pair)
            .collect::<Result<_, _>>()?,
        Map::List(items) => items.iter().map(|i| pair(i)).collect::<Result<_, _>>()?,
        Map::Table(table) => table.into_iter().collect(),
    };
    Ok(pairs
        .into_iter()
        .map(|(id, domain)| (id.trim().to_ascii_lowercase(), domain.trim().to_string()))
        .collect())
}

/// A list, or a comma-separated string (the environment).
fn deserialize_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Csv(String),
        Items(Vec<String>),
    }
    Ok(match List::deserialize(d)? {
        List::Csv(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        List::Items(items) => items,
    })
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
            .map(SiteConfig::new)
            .collect(),
        Sites::List(entries) => entries
            .into_iter()
            .map(|e| match e {
                Entry::Domain(domain) => SiteConfig::new(domain),
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
    fn credentials_in_the_clickhouse_url_become_user_and_password() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "GLIMPSE_CLICKHOUSE_URL",
                "http://glimpse:p%40ss@127.0.0.1:8123",
            );
            let c = Config::load(None).unwrap();
            assert_eq!(c.clickhouse_url.as_deref(), Some("http://127.0.0.1:8123/"));
            assert_eq!(c.clickhouse_user, "glimpse");
            assert_eq!(c.clickhouse_password, "p@ss");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_read_from_the_file_glimpse_key_file_names() {
        Jail::expect_with(|jail| {
            jail.create_file("password", "s3cret\n")?;
            jail.create_file("url", "https://u:p@ch.example:8443\n")?;
            jail.set_env("GLIMPSE_CLICKHOUSE_PASSWORD_FILE", "password");
            let c = Config::load(None).unwrap();
            assert_eq!(c.clickhouse_password, "s3cret");
            jail.clear_env();
            jail.set_env("GLIMPSE_CLICKHOUSE_URL_FILE", "url");
            let c = Config::load(None).unwrap();
            assert_eq!(
                c.clickhouse_url.as_deref(),
                Some("https://ch.example:8443/")
            );
            assert_eq!(
                (c.clickhouse_user.as_str(), c.clickhouse_password.as_str()),
                ("u", "p")
            );
            jail.set_env("GLIMPSE_CLICKHOUSE_URL", "http://127.0.0.1:8123");
            let both = Config::load(None).unwrap_err().to_string();
            assert!(
                both.contains("GLIMPSE_CLICKHOUSE_URL_FILE") && both.contains("not both"),
                "{both}"
            );
            let missing = load_err(jail, "GLIMPSE_CLICKHOUSE_PASSWORD_FILE", "nowhere");
            assert!(
                missing.contains("clickhouse_password") && missing.contains("nowhere"),
                "{missing}"
            );
            Ok(())
        });
    }

    #[test]
    fn clickhouse_ca_cert_must_be_a_pem_file_with_a_certificate() {
        Jail::expect_with(|jail| {
            jail.create_file("empty.pem", "nothing here\n")?;
            let error = load_err(jail, "GLIMPSE_CLICKHOUSE_CA_CERT", "empty.pem");
            assert!(
                error.contains("clickhouse_ca_cert") && error.contains("empty.pem"),
                "{error}"
            );
            let error = load_err(jail, "GLIMPSE_CLICKHOUSE_CA_CERT", "missing.pem");
            assert!(
                error.contains("clickhouse_ca_cert") && error.contains("missing.pem"),
                "{error}"
            );
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
            jail.clear_env();
            jail.create_file(
                "tz.toml",
                "[[sites]]\ndomain = \"a.com\"\ntimezone = \"Mars/Olympus\"\n",
            )?;
            let err = Config::load(Some(Path::new("tz.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("timezone") && err.contains("Mars/Olympus"),
                "{err}"
            );
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
    fn tracker_paths_are_checked() {
        Jail::expect_with(|jail| {
            jail.set_env("GLIMPSE_SCRIPT_PATH", "/s/a.js");
            jail.set_env("GLIMPSE_EVENT_PATH", "/s/e");
            let c = Config::load(None).unwrap();
            assert_eq!(
                (c.script_path.as_str(), c.event_path.as_str()),
                ("/s/a.js", "/s/e")
            );
            for (var, value) in [
                ("GLIMPSE_SCRIPT_PATH", "s.js"),
                ("GLIMPSE_SCRIPT_PATH", "/s/a"),
                ("GLIMPSE_EVENT_PATH", "/health"),
                ("GLIMPSE_EVENT_PATH", "/js/script.engagement.js"),
            ] {
                let err = load_err(jail, var, value);
                assert!(err.contains(&var[8..].to_lowercase()), "{err}");
            }
            Ok(())
        });
    }

    #[test]
    fn tracker_ids_map_to_configured_sites() {
        Jail::expect_with(|jail| {
            let uuid = "3F1C1A4E-7D2B-4C55-9A0E-2B7F5C8D9E01";
            jail.set_env("GLIMPSE_SITES", "a.com,b.org");
            jail.set_env("GLIMPSE_UMAMI_WEBSITES", format!("{uuid}=a.com"));
            jail.set_env("GLIMPSE_MATOMO_SITES", "1=a.com, 2 = b.org");
            let c = Config::load(None).unwrap();
            assert_eq!(c.umami_websites[&uuid.to_lowercase()], "a.com");
            assert_eq!(c.matomo_sites["2"], "b.org");
            jail.create_file(
                "t.toml",
                &format!(
                    "sites = [\"a.com\"]\n[umami_websites]\n\"{uuid}\" = \"a.com\"\n[matomo_sites]\n7 = \"a.com\"\n"
                ),
            )?;
            jail.clear_env();
            let c = Config::load(Some(Path::new("t.toml"))).unwrap();
            assert_eq!(c.matomo_sites["7"], "a.com");
            assert_eq!(c.umami_websites.len(), 1);
            for (var, value, key) in [
                ("GLIMPSE_MATOMO_SITES", "1=c.net", "matomo_sites"),
                ("GLIMPSE_MATOMO_SITES", "one=a.com", "matomo_sites"),
                ("GLIMPSE_MATOMO_SITES", "1", "matomo_sites"),
                (
                    "GLIMPSE_UMAMI_WEBSITES",
                    "not-a-uuid=a.com",
                    "umami_websites",
                ),
            ] {
                jail.clear_env();
                jail.set_env("GLIMPSE_SITES", "a.com");
                jail.set_env(var, value);
                let err = Config::load(None).unwrap_err().to_string();
                assert!(err.contains(key), "{value}: {err}");
            }
            Ok(())
        });
    }

    #[test]
    fn client_ip_header_is_parsed_once() {
        use crate::ingest::client_ip::ClientIpHeader;
        Jail::expect_with(|jail| {
            assert_eq!(
                Config::load(None).unwrap().client_ip_header,
                ClientIpHeader::XForwardedFor
            );
            jail.set_env("GLIMPSE_CLIENT_IP_HEADER", "CF-Connecting-IP");
            let c = Config::load(None).unwrap();
            assert_eq!(c.client_ip_header.name(), "cf-connecting-ip");
            jail.clear_env();
            jail.create_file("h.toml", "client_ip_header = \"forwarded\"\n")?;
            let c = Config::load(Some(Path::new("h.toml"))).unwrap();
            assert_eq!(c.client_ip_header, ClientIpHeader::Forwarded);
            let err = load_err(jail, "GLIMPSE_CLIENT_IP_HEADER", "not a header");
            assert!(err.contains("client_ip_header"), "{err}");
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
