//! Every statement the stats API can generate runs on this ClickHouse.

use crate::common;
use crate::service::Service;

/// The statements of `common::stats_matrix` (every property, interval, period, filter
/// operator, sort, comparison, k; and v2's dimensions, filter trees, date ranges and
/// includes; funnels) all run on this ClickHouse (18.16 here).
pub async fn every_generated_statement_runs(s: &Service) {
    let mut n = 0;
    for tz in ["UTC", "Europe/Berlin", "Asia/Kolkata"] {
        // v2's first: v1's end with the rollup's upkeep, which deletes rows.
        let v2 = common::stats_matrix::v2_statements("glimpse", tz);
        let v1 = common::stats_matrix::statements("glimpse", tz);
        let funnels = common::stats_matrix::funnel_statements("glimpse", tz);
        for sql in funnels.iter().chain(&v2).chain(&v1) {
            let result = s.ch.client.query(sql).fetch_bytes("TabSeparated");
            let mut cursor = result.unwrap_or_else(|e| panic!("{sql}: {e}"));
            while let Some(chunk) = cursor.next().await.unwrap_or_else(|e| panic!("{sql}: {e}")) {
                let _ = chunk;
            }
            n += 1;
        }
    }
    println!("generated SQL: {n} statements ran on this ClickHouse");
}
