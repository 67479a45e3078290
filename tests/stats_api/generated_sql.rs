//! Every statement the stats API can generate runs on this ClickHouse.

use crate::common;
use crate::service::Service;

/// The statements of `common::stats_matrix` (every property, interval, period, filter
/// operator, sort, comparison, k) all run on this ClickHouse (18.16 here).
pub async fn every_generated_statement_runs(s: &Service) {
    let mut n = 0;
    for tz in ["UTC", "Europe/Berlin", "Asia/Kolkata"] {
        for sql in common::stats_matrix::statements("glimpse", tz) {
            let result = s.ch.client.query(&sql).fetch_bytes("TabSeparated");
            let mut cursor = result.unwrap_or_else(|e| panic!("{sql}: {e}"));
            while let Some(chunk) = cursor.next().await.unwrap_or_else(|e| panic!("{sql}: {e}")) {
                let _ = chunk;
            }
            n += 1;
        }
    }
    println!("generated SQL: {n} statements ran on this ClickHouse");
}
