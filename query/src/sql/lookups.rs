//! The one-statement lookups of the smaller endpoints: realtime visitors, custom property
//! names, imported date ranges, filtered traffic.

use std::fmt::Write as _;

use super::builder::Sql;

/// Visitors active in `[start, end)` (realtime).
pub fn current_visitors(database: &str, site: &str, start: i64, end: i64) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT toUInt64(uniqExact(visitor_id)) FROM {database}.events WHERE site = "
    );
    sql.bind_str(site)
        .push(" AND timestamp >= toDateTime(")
        .bind_int(start)
        .push(") AND timestamp < toDateTime(")
        .bind_int(end)
        .push(") AND name != 'engagement'");
    sql
}

/// The custom property names used in `[start, end)`, most used first (at most 100): for the
/// dashboard's property breakdowns.
pub fn prop_names(database: &str, site: &str, start: i64, end: i64) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT name FROM (SELECT arrayJoin(prop_keys) AS name FROM {database}.events WHERE site = "
    );
    sql.bind_str(site)
        .push(" AND timestamp >= toDateTime(")
        .bind_int(start)
        .push(") AND timestamp < toDateTime(")
        .bind_int(end)
        .push(")) GROUP BY name ORDER BY count() DESC, name LIMIT 100");
    sql
}

/// Each site's imported days, `(site, first, last)` (`YYYY-MM-DD`), for the dashboard.
pub fn imported_ranges(database: &str) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT site, toString(min(date)), toString(max(date)) FROM {database}.imported_daily \
         GROUP BY site"
    );
    sql
}

/// Filtered traffic per reason between two dates (inclusive, `YYYY-MM-DD`).
pub fn dropped(database: &str, site: &str, first: &str, last: &str) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT reason, toUInt64(sum(count)) AS n FROM {database}.dropped_events WHERE site = "
    );
    sql.bind_str(site)
        .push(" AND date >= toDate(")
        .bind_str(first)
        .push(") AND date <= toDate(")
        .bind_str(last)
        .push(") GROUP BY reason ORDER BY reason");
    sql
}
