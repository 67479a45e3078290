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

mod values;
pub use crate::site::{Site, SiteConfig};
pub use values::{CaCert, ClusterName, FsyncMode, FsyncPolicy, Secret, ServerList};

/// Everything an operator can set. Defaults are safe for a single-machine install.
///
/// The file and the environment are flat (`batch_max_rows`, `GLIMPSE_BATCH_MAX_ROWS`); in the
/// program the settings are grouped by who reads them: the shared ones here, the collector's
/// in [`CollectorConfig`], the query service's in [`QueryConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the Prometheus metrics of every service of the process are served (`/metrics`).
    /// Default `127.0.0.1:9464`: the counts say how much traffic each site gets.
    pub metrics_addr: SocketAddr,
    /// Directory for Glimpse's own state (the local ClickHouse's data when Glimpse starts one).
    pub data_dir: PathBuf,
    /// HTTP URL of an existing ClickHouse. Unset: `glimpse serve` starts a local one (with a
    /// generated password), and other commands use the one a running `glimpse serve` started.
    /// Credentials in the URL (`http://user:password@host:8123`) are read as
    /// `clickhouse_user`/`clickhouse_password`.
    ///
    /// Several servers of one cluster, comma-separated (`http://ch1:8123,http://ch2:8123`):
    /// requests go to the first that is up, and to the next while it is down (`db::failover`).
    /// One set of credentials serves them all.
    pub clickhouse_url: Option<String>,
    pub clickhouse_user: String,
    pub clickhouse_password: Secret,
    /// PEM file of the CA(s) that signed an `https://` ClickHouse's certificate, for a private
    /// CA; read when the configuration is loaded. Unset: the system's roots are trusted.
    pub clickhouse_ca_cert: Option<CaCert>,
    /// Database holding Glimpse's tables; created by the migrations. Default `glimpse`.
    pub clickhouse_database: String,
    /// A ClickHouse cluster (a name in the servers' `remote_servers`) to run on: migrations
    /// run `ON CLUSTER` and create the large tables sharded and replicated, the small ones
    /// replicated to every server (see `schema::cluster`). Needs `clickhouse_url`. Unset (the
    /// default): one server.
    pub clickhouse_cluster: Option<ClusterName>,
    /// The `clickhouse-server` binary used when Glimpse starts its own ClickHouse.
    pub clickhouse_server_bin: String,
    /// Sites whose beacons are accepted. In the environment: comma-separated domains.
    #[serde(deserialize_with = "load::deserialize_sites")]
    pub sites: Vec<Site>,
    /// How long a graceful shutdown may take before in-flight work is abandoned, in seconds.
    pub shutdown_timeout_secs: u64,
    /// Proxies whose `client_ip_header` is believed (CIDRs or addresses). Empty (the
    /// default): the socket peer is the client.
    #[serde(deserialize_with = "load::deserialize_proxies")]
    pub trusted_proxies: crate::proxies::ProxyNets,
    /// The one header in which `trusted_proxies` report the client's address:
    /// `x-forwarded-for` (default), `forwarded` (RFC 7239), `x-real-ip`, or any header name
    /// such as `cf-connecting-ip`. Every other forwarding header is ignored.
    pub client_ip_header: crate::proxies::ClientIpHeader,
    /// A MaxMind GeoLite2/GeoIP2 or DB-IP Lite City or Country database (`.mmdb`). Unset:
    /// no places are recorded.
    pub geoip_db: Option<PathBuf>,
    /// A client must send its request headers within this many seconds, and its body within
    /// as many again (slowloris protection); an idle keep-alive connection is closed after as
    /// long. Both services. Default 10.
    pub request_timeout_secs: u64,
    /// Largest request head (request line and headers) in bytes; at least 8192. Both
    /// services. Default 16384.
    pub max_header_bytes: usize,
    /// The collector's public address (e.g. `https://stats.example.com`), used for the links in
    /// the privacy statement and pages. Unset: links are relative to the collector.
    pub public_url: Option<String>,
    /// Where the data is kept, in words, for the privacy statement (e.g. "on our own server in
    /// Frankfurt, Germany"). Unset: the statement says "on servers we operate".
    pub data_location: Option<String>,
    /// Who visitors can write to about their data, for the privacy statement (an e-mail
    /// address or URL). Unset: not mentioned.
    pub privacy_contact: Option<String>,
    /// How log lines (on stderr) are written: `text` (the default, for people) or `json` (one
    /// object a line, with the request's span and its `request_id`, for log collectors).
    /// `GLIMPSE_LOG` sets which lines.
    pub log_format: LogFormat,
    /// The collector's settings.
    #[serde(flatten)]
    pub collector: CollectorConfig,
    /// The query service's settings.
    #[serde(flatten)]
    pub query: QueryConfig,
}

/// The collector's settings (beacon endpoint, pipeline, spool, visitor pages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectorConfig {
    /// Where the collector (beacon endpoint) listens. Default `127.0.0.1:8000`.
    pub collector_addr: SocketAddr,
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
    /// On a cluster (`clickhouse_cluster`): a secret of at least 32 characters, the same on
    /// every collector, with which the daily salts are sealed in ClickHouse's `visitor_salts`
    /// so that collectors with separate data directories share them (no reader of ClickHouse
    /// can use them without it). Unset: each collector keeps its salts in `salt_dir`, which
    /// on a cluster needs `salt_dir_shared`.
    pub salt_key: Option<Secret>,
    /// The operator's word that every collector uses the same `salt_dir` (a shared volume, or
    /// a single collector): on a cluster, a collector without `salt_key` refuses to start
    /// without it, since collectors with their own salts give one visitor several ids.
    /// Default false.
    pub salt_dir_shared: bool,
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
    pub spool_fsync: FsyncMode,
    /// With `spool_fsync = "interval"`: milliseconds between syncs. Default 10.
    pub spool_fsync_interval_ms: u64,
    /// Rows per second shipped while a backlog drains after an outage (0: no cap).
    /// Default 10.000.
    pub spool_drain_rows_per_sec: u64,
    /// Most open client connections; more wait in the kernel's accept queue. Default 10000.
    pub max_connections: usize,
    /// Events per second allowed from one client (an IPv4 address or an IPv6 /64; token
    /// bucket, in memory only; each event of a bulk request costs a token); over it, `429` +
    /// `Retry-After`. 0 (default): no limit.
    pub rate_limit_per_ip: u32,
    /// Burst allowed above `rate_limit_per_ip`, and the most events one request may carry
    /// when limiting is on. Default 20.
    pub rate_limit_burst: u32,
    /// Path the tracker script is served at; its variants sit beside it
    /// (`/js/script.outbound-links.js`). Pick a neutral name to get past ad blockers.
    /// Default `/js/script.js`.
    pub script_path: String,
    /// Path of the beacon endpoint; the served tracker posts here by default.
    /// Default `/api/event`.
    pub event_path: String,
    /// Umami website ids mapped to sites, for Umami's tracker (`POST /api/send`):
    /// `{ "<uuid>" = "example.com" }`. In the environment: `uuid=domain,uuid=domain`.
    #[serde(deserialize_with = "load::deserialize_id_map")]
    pub umami_websites: BTreeMap<String, String>,
    /// Matomo `idsite`s mapped to sites, for Matomo's tracker (`/matomo.php`, `/piwik.php`):
    /// `{ 1 = "example.com" }`. In the environment: `idsite=domain,idsite=domain`.
    #[serde(deserialize_with = "load::deserialize_id_map")]
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
}

/// The query service's settings (stats API, dashboard, rollup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryConfig {
    /// Where the query service (stats API, dashboard) listens. Default `127.0.0.1:8001`.
    pub query_addr: SocketAddr,
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
    /// Minimum group size k of the stats API: breakdown rows with fewer than k visitors are
    /// merged into one `(other)` row. 0 (default): off.
    pub min_group_size: u64,
    /// How often, in seconds, the query service brings its per-day rollup up to date (whole
    /// UTC days whose visits have ended; days whose events changed are rebuilt, days whose
    /// events are gone removed). Long periods are then read from a few rows per day. 0: off,
    /// every question reads the events. Default 600.
    pub rollup_interval_secs: u64,
    /// Above this many events of a site in a period (as counted by the rollup's listing of
    /// its days), questions the rollup cannot answer (filters, hours, several dimensions) read
    /// a sample of the visitors, 1 in N with N = ⌈events / threshold⌉, and scale counts by N:
    /// answers then carry `sampling` (v1) or `meta.sampling` (v2). 0: off, every answer exact
    /// (a request may also ask for exact figures: `sampling=off`). Default 10000000.
    pub sampling_threshold_rows: u64,
    /// The mail server invitations are sent through: `smtp://host:25` (unencrypted; add
    /// `?tls=required` for STARTTLS) or `smtps://user:password@host:465` (TLS). A secret (it
    /// may hold a password). Unset: no mail; the invitation link is only in the answer to
    /// whoever invited.
    pub smtp_url: Option<Secret>,
    /// The sender of invitation mails. Unset: `glimpse@` and the host of `public_url` (or of
    /// the address the inviting request was sent to).
    pub smtp_from: Option<String>,
    /// The dashboard's public address (e.g. `https://stats.example.com`): the only origin
    /// allowed to change state with the session cookie (the `Host` header is then not
    /// trusted), whether the cookie is `Secure`, and the origin of invitation and share
    /// links. Unset: the address each request was sent to. Distinct from `public_url`, the
    /// collector's, which usually has another origin.
    pub dashboard_url: Option<String>,
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
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            data_dir: PathBuf::from("glimpse-data"),
            clickhouse_url: None,
            clickhouse_user: "default".into(),
            clickhouse_password: Secret::default(),
            clickhouse_ca_cert: None,
            clickhouse_database: "glimpse".into(),
            clickhouse_cluster: None,
            clickhouse_server_bin: "clickhouse-server".into(),
            sites: Vec::new(),
            shutdown_timeout_secs: 30,
            trusted_proxies: crate::proxies::ProxyNets::default(),
            client_ip_header: Default::default(),
            geoip_db: None,
            request_timeout_secs: 10,
            max_header_bytes: 16 * 1024,
            public_url: None,
            data_location: None,
            privacy_contact: None,
            log_format: LogFormat::Text,
            collector: CollectorConfig::default(),
            query: QueryConfig::default(),
        }
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            collector_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            batch_max_rows: 5000,
            batch_max_delay_ms: 1000,
            queue_capacity: 100_000,
            max_body_bytes: 64 * 1024,
            max_url_length: 4096,
            max_event_name_length: 120,
            max_props: 30,
            max_prop_key_length: 300,
            max_prop_value_length: 2000,
            geoip_check_secs: 5,
            store_ip_prefix: false,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 48,
            honor_dnt: true,
            honor_gpc: true,
            honor_opt_out_cookie: true,
            salt_dir: None,
            salt_key: None,
            salt_dir_shared: false,
            user_agent_cache_size: 10_000,
            max_open_visits: crate::visit::DEFAULT_MAX_OPEN_VISITS,
            spool: true,
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_min_free_bytes: 64 * 1024 * 1024,
            spool_fsync: FsyncMode::Always,
            spool_fsync_interval_ms: 10,
            spool_drain_rows_per_sec: 50_000,
            max_connections: 10_000,
            rate_limit_per_ip: 0,
            rate_limit_burst: 20,
            script_path: "/js/script.js".into(),
            event_path: "/api/event".into(),
            umami_websites: BTreeMap::new(),
            matomo_sites: BTreeMap::new(),
            visitor_data_detail: VisitorDataDetail::Summary,
            erase_limit_per_hour: 4,
            erase_batch_ms: 2000,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            query_addr: SocketAddr::from(([127, 0, 0, 1], 8001)),
            query_max_connections: 512,
            query_max_execution_secs: 30,
            query_rate_limit_per_ip: 10,
            query_rate_limit_burst: 60,
            min_group_size: 0,
            rollup_interval_secs: 600,
            sampling_threshold_rows: 10_000_000,
            smtp_url: None,
            smtp_from: None,
            dashboard_url: None,
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
    pub fn batch_max_delay(&self) -> Duration {
        Duration::from_millis(self.collector.batch_max_delay_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// The spool's fsync policy.
    pub fn spool_fsync_policy(&self) -> FsyncPolicy {
        match self.collector.spool_fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => FsyncPolicy::Interval(Duration::from_millis(
                self.collector.spool_fsync_interval_ms.max(1),
            )),
            FsyncMode::Never => FsyncPolicy::Never,
        }
    }

    /// The trusted proxies and the header they report the client in.
    pub fn trusted_proxies(&self) -> crate::proxies::TrustedProxies {
        crate::proxies::TrustedProxies::new(
            self.trusted_proxies.clone(),
            self.client_ip_header.clone(),
        )
    }

    /// Where batches ClickHouse refuses for good are set aside (`<data_dir>/dead-letter`).
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.data_dir.join("dead-letter")
    }

    /// Where the visitor-id salts live.
    /// `clickhouse_url` as its list of servers (validated when the configuration was loaded).
    pub fn clickhouse_servers(&self) -> Option<ServerList> {
        ServerList::parse(self.clickhouse_url.as_deref()?).ok()
    }

    pub fn salt_dir(&self) -> PathBuf {
        self.collector
            .salt_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("salts"))
    }
}

mod load;
#[cfg(test)]
mod tests;
mod validate;
