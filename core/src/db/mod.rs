//! ClickHouse: the connection every part of Glimpse uses, TLS to it, and the local server
//! Glimpse starts when none is configured.

pub mod local;
pub mod tls;

use crate::config::Config;

/// A client for the configured ClickHouse, not bound to a database (migrations create it);
/// `https://` URLs are verified against `clickhouse_ca_cert` or the system's roots.
///
/// Validation is off: it needs `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 lacks. The
/// row type is checked against the DDL by tests on 18.16 and on current ClickHouse instead.
pub fn connect(config: &Config, url: &str) -> clickhouse::Client {
    tls::client(config.clickhouse_ca_cert.as_ref())
        .with_url(url)
        .with_user(&config.clickhouse_user)
        .with_password(config.clickhouse_password.expose())
        .with_validation(false)
}
