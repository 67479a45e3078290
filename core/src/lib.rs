//! Glimpse's core: what the collector, the query service and the `glimpse` binary share.
//!
//! Lower layers first: `clock`; `config` (the typed configuration, loaded once) and `site`
//! (the site model and its rules) and `goals`; `schema` (tables, rows, migrations, server
//! flavour); `db` (the ClickHouse connection, TLS, the local server); `net` (the accept loop,
//! rate limits, client addresses, plain responses); `telemetry` (metrics); `geoip` (which
//! database, its credit); `csv_safe`. Nothing here knows the collector or the query service.

pub mod clock;
pub mod config;
pub mod csv_safe;
pub mod db;
pub mod funnels;
pub mod geoip;
pub mod goals;
pub mod ip_prefix;
pub mod net;
pub mod proxies;
pub mod registry;
pub mod schema;
pub mod site;
pub mod telemetry;
pub mod tracker;
pub mod visit;

pub use config::Config;

/// Glimpse's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit Glimpse was built from (12 hex digits), or `unknown` (built without git).
pub const GIT_SHA: &str = env!("GLIMPSE_GIT_SHA");
