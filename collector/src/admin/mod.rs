//! Operator tasks that keep the privacy promises: retention, erasure on request, and the
//! visitor's own access to their data. Each talks to ClickHouse directly — except
//! `geoip_update`, which installs the free GeoIP database.

pub mod erase;
pub mod export;
pub mod geoip_update;
pub mod plausible_import;
pub mod retention;
pub mod visitor_data;

/// Waits until `sql` (a `SELECT count() …`) returns 0, polling: ClickHouse applies
/// `ALTER … DELETE` asynchronously (18.16 has no `mutations_sync`).
pub async fn wait_until_zero(
    client: &clickhouse::Client,
    sql: &str,
    binds: &[&str],
    timeout: std::time::Duration,
) -> Result<bool, clickhouse::error::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut query = client.query(sql);
        for b in binds {
            query = query.bind(*b);
        }
        if query.fetch_one::<u64>().await? == 0 {
            return Ok(true);
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
