//! The SQL builder. Identifiers come only from the whitelists below (the database name is
//! validated by the configuration); every value a client sent is a bound `?` parameter, escaped
//! by the `clickhouse` crate. Templates never contain a `?` of their own.
//!
//! Every statement runs on ClickHouse 18.16 and on current versions: no window functions, no
//! `WITH FILL`, no `toStartOfInterval`; time zones only as the explicit argument of
//! `toDate`/`toMonday`/`toStartOfMonth`/`formatDateTime`, which 18.16 honours.
//!
//! **No grouping by visit.** The collector stamps every row with its visit's properties, start
//! and additive deltas (`ingest::sessions` in the collector), so one statement reads a period in
//! at most two passes over its rows, whatever the traffic:
//!
//! ```text
//! SELECT key, visitors, pageviews, … visits, bounces, duration
//! FROM (  -- e: events in the period, grouped by key: visitors, page views, events, engagement
//!      ) AS e
//! ALL FULL OUTER JOIN
//!      (  -- v: rows of the visits that started in the period, grouped by key: the sums of
//!         --    visit_entry, visit_bounce, visit_duration and page views; only when a visit
//!         --    metric is asked for
//!      ) AS v USING key
//! ```
//!
//! Visit filters are row conditions (every row carries its visit's properties); event filters
//! narrow `e` directly and `v` to the visits that have a matching event. Two questions still
//! group by visit, over the visits of the period only: the exit page (a visit's last page view,
//! known only at its end) and visit metrics broken down by an event property.
//!
//! **Rolled days.** Where the per-day rollup (`crate::rollup`) can answer — no filters, no
//! engagement metrics, no `(other)` rows; totals, page, visit properties — the whole UTC days of
//! the period come from `rollup_daily` and only the other days' rows are read (`live_source`).
//!
//! The parts, by job: `builder` (the `Sql` value and the conditions every statement shares),
//! `expr` (properties, filters, keys), `stats` (the passes and the statement), `imported`
//! (imported aggregates), `rolled` (reading the rollup), `lookups` (the smaller endpoints'
//! statements), `funnel` (a funnel's steps). The rollup's upkeep statements live with it, in `crate::rollup`.

mod builder;
mod expr;
mod funnel;
mod imported;
mod lookups;
mod passes;
mod question;
mod rolled;
mod rolled_days;
mod stats;

pub(crate) use builder::{day_range, days_condition, rows_between};
pub use builder::{day_runs, Sql, Value, DAY};
pub use expr::sample_cutoff;
pub(crate) use expr::{visit_value, MAX_VISIT_SECS};
pub use funnel::{funnel, FunnelQuery, FunnelRow};
pub use imported::imported_answers;
pub use lookups::{current_visitors, dropped, imported_ranges, prop_names};
pub use question::split_key;
pub use rolled_days::{rollup_groups, rollup_may_answer};
pub use stats::{row_count, stats, Group, StatsQuery, StatsRow};
