//! Which questions the per-day rollup (kept by `crate::rollup`) answers, which of a period's
//! rolled days a statement takes from it, and the events those days leave out of a pass.

use super::builder::{day_runs, timestamps_between, Sql, DAY};
use super::expr::MAX_VISIT_SECS;
use super::question::{Group, Needs, StatsQuery};
use crate::params::{Condition, EventProperty, Property, VisitProperty};

/// The `property` value of the rollup rows that answer `group`, if the rollup keeps it: the
/// totals (`''`), the page and every visit property.
pub(super) fn rollup_property(group: &Group) -> Option<String> {
    match group {
        Group::Total => Some(String::new()),
        Group::Property(Property::Event(EventProperty::Page)) => Some("event:page".into()),
        Group::Property(Property::Visit(p)) => Some(format!("visit:{}", p.name())),
        _ => None,
    }
}

/// Every grouping the rollup keeps, with its `property` value.
pub fn rollup_groups() -> Vec<(String, Group)> {
    let mut groups = vec![
        Group::Total,
        Group::Property(Property::Event(EventProperty::Page)),
    ];
    groups.extend(
        VisitProperty::ALL
            .iter()
            .map(|p| Group::Property(Property::Visit(*p))),
    );
    groups
        .into_iter()
        .filter_map(|g| rollup_property(&g).map(|name| (name, g)))
        .collect()
}

/// Whether the rollup may answer a question grouped by `group` with `filters` (the metrics
/// decide the rest): for the caller, to skip looking up rolled days otherwise.
pub fn rollup_may_answer(group: &Group, filters: &[Condition]) -> bool {
    filters.is_empty() && rollup_property(group).is_some()
}

/// Whether the rollup can answer `q`: not with filters (they need the rows), engagement metrics
/// (not kept), `(other)` rows (their visitors need mergeable states), or visit metrics by page
/// (a visit counts once for each page it saw).
pub(super) fn rollup_answers(q: &StatsQuery, needs: Needs) -> bool {
    if !q.filters.is_empty() || needs.engagement || needs.states {
        return false;
    }
    match &q.group {
        Group::Property(Property::Event(EventProperty::Page)) => !needs.visits,
        group => rollup_property(group).is_some(),
    }
}

/// The rolled days `q` takes from the rollup: those whose visits lie wholly in the period. A
/// visit started on day d ends before day d + 2 (a visit lasts at most a day), so every figure
/// of day d, events and visits, belongs to the period.
pub(super) fn rollup_days(q: &StatsQuery, needs: Needs) -> Vec<i64> {
    if !rollup_answers(q, needs) {
        return Vec::new();
    }
    let mut days: Vec<i64> = q
        .rolled
        .iter()
        .copied()
        .filter(|d| d * DAY >= q.start && (d + 2) * DAY <= q.end)
        .collect();
    days.sort_unstable();
    days.dedup();
    days
}

/// ` AND …` leaving the rolled days' visits out of a pass over events: by their `visit_start`,
/// and (so that ClickHouse skips them by its key) the days of timestamps that hold nothing
/// else. Day t holds rows of visits started on days t - 1 and t only.
pub(super) fn not_rolled(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
    let days = rollup_days(q, needs);
    if days.is_empty() {
        return;
    }
    sql.push(" AND NOT (");
    for (i, (first, last)) in day_runs(&days).into_iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("visit_start >= toDateTime(")
            .bind_int(first * DAY)
            .push(") AND visit_start < toDateTime(")
            .bind_int((last + 1) * DAY)
            .push(")");
    }
    sql.push(") AND (");
    let rolled = |d: i64| days.binary_search(&d).is_ok();
    let readable: Vec<i64> = (q.start.div_euclid(DAY)..=(q.end + MAX_VISIT_SECS).div_euclid(DAY))
        .filter(|&t| !(rolled(t - 1) && rolled(t)))
        .collect();
    if readable.is_empty() {
        sql.push("0");
    }
    for (i, (first, last)) in day_runs(&readable).into_iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        timestamps_between(sql, first * DAY, (last + 1) * DAY);
        sql.push(")");
    }
    sql.push(")");
}
