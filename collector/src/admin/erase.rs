//! Erasure on request by the operator (`glimpse erase --site S --visitor-id ID`), for requests
//! that arrive by e-mail with the id the visitor's `/privacy/my-data` page showed.

use glimpse_core::config::ClusterName;
use glimpse_core::schema::cluster::alter_table;

/// Schedules deletion of every row of `visitor_id` on `site` (on every shard of `cluster`);
/// returns how many there were.
pub async fn visitor(
    client: &clickhouse::Client,
    db: &str,
    cluster: Option<&ClusterName>,
    site: &str,
    visitor_id: u64,
) -> Result<u64, clickhouse::error::Error> {
    let n: u64 = client
        .query(&format!(
            "SELECT count() FROM {db}.events WHERE site = ? AND visitor_id = ?"
        ))
        .bind(site)
        .bind(visitor_id)
        .fetch_one()
        .await?;
    if n > 0 {
        client
            .query(&format!(
                "{} DELETE WHERE site = ? AND visitor_id = ?",
                alter_table(db, "events", cluster)
            ))
            .bind(site)
            .bind(visitor_id)
            .execute()
            .await?;
    }
    Ok(n)
}

/// Waits until the rows [`visitor`] scheduled for deletion are gone (`true`), or `timeout`
/// passes first (`false`): the delete is a mutation ClickHouse applies in the background.
pub async fn wait_until_erased(
    client: &clickhouse::Client,
    db: &str,
    site: &str,
    visitor_id: u64,
    timeout: std::time::Duration,
) -> Result<bool, clickhouse::error::Error> {
    // The id is a number, never text: it goes into the statement as it is.
    let sql =
        format!("SELECT count() FROM {db}.events WHERE site = ? AND visitor_id = {visitor_id}");
    super::wait_until_zero(client, &sql, &[site], timeout).await
}
