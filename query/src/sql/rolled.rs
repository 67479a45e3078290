//! Reading the per-day rollup (`crate::rollup` keeps it): which questions it answers, which of
//! a period's rolled days a statement takes from it, and the events it leaves out for them.

use std::fmt::Write as _;

use super::builder::{day_runs, days_condition, timestamps_between, Sql, DAY};
use super::expr::MAX_VISIT_SECS;
use super::stats::{raw_source, Group, Needs, StatsQuery, SUMS};
use crate::params::{EventProperty, Filter, Property, VisitProperty};

/// The live source: `source` without imports; with rolled days, the rollup's figures for them
/// added to those of the other days' events. Visitors add up because visitor ids of different
/// days never meet (the id's salt is the day's, and a visit keeps its first day's id).
pub(super) fn live_source(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
    let days = rollup_days(q, needs);
    if days.is_empty() {
        raw_source(sql, q, needs);
        return;
    }
    sql.push("(SELECT key, toUInt64(sum(e_visitors)) AS e_visitors");
    for (_, column) in SUMS {
        let _ = write!(sql.template, ", sum({column}) AS {column}");
    }
    sql.push(" FROM (SELECT key, toUInt64(e_visitors) AS e_visitors");
    for (_, column) in SUMS {
        let _ = write!(sql.template, ", toInt64({column}) AS {column}");
    }
    sql.push(" FROM ");
    raw_source(sql, q, needs);
    sql.push(" UNION ALL ");
    rollup_pass(sql, q, needs, &days);
    sql.push(") GROUP BY key)");
}

/// The `property` value of the rollup rows that answer `group`, if the rollup keeps it: the
/// totals (`''`), the page and every visit property.
fn rollup_property(group: &Group) -> Option<String> {
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
pub fn rollup_may_answer(group: &Group, filters: &[Filter]) -> bool {
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
fn rollup_days(q: &StatsQuery, needs: Needs) -> Vec<i64> {
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

/// The rolled days' figures for `q`'s key (their newest complete build), as the columns of
/// `live_source`, in `SUMS` order.
fn rollup_pass(sql: &mut Sql, q: &StatsQuery, needs: Needs, days: &[i64]) {
    sql.push("SELECT key, visitors AS e_visitors");
    for (name, column) in SUMS {
        // Visit figures only where asked, as the events' passes give them.
        let value = match name {
            "engaged_pages" | "engaged_ms" | "scroll_sum" => "0",
            _ if column.starts_with("v_") && !needs.visits => "0",
            other => other,
        };
        let _ = write!(sql.template, ", toInt64({value}) AS {column}");
    }
    let db = q.database;
    let _ = write!(sql.template, " FROM {db}.rollup_daily WHERE site = ");
    sql.bind_str(q.site)
        .push(" AND property = ")
        .bind_str(&rollup_property(&q.group).unwrap_or_default())
        .push(" AND ");
    days_condition(sql, days);
    let _ = write!(
        sql.template,
        " AND (day, version) IN (SELECT day, max(version) FROM {db}.rollup_days WHERE site = "
    );
    sql.bind_str(q.site).push(" AND ");
    days_condition(sql, days);
    sql.push(" GROUP BY day)");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{parse_filters, Interval, Metric};
    use crate::sql::stats::stats;

    fn question<'a>(group: Group, metrics: &'a [Metric], rolled: &'a [i64]) -> StatsQuery<'a> {
        StatsQuery {
            database: "glimpse",
            site: "example.com",
            timezone: "Europe/Berlin",
            // 2026-03-24 23:00 UTC to 2026-03-31 22:00 UTC: a Berlin week over the DST change.
            start: 20_536 * DAY + 23 * 3600,
            end: 20_543 * DAY + 22 * 3600,
            group,
            filters: &[],
            min_group_size: 0,
            sort: None,
            metrics,
            goals: &[],
            page: None,
            imported: false,
            rolled,
        }
    }

    #[test]
    fn only_days_whose_visits_lie_in_the_period_come_from_the_rollup() {
        let all: Vec<i64> = (20_530..20_550).collect();
        let metrics = [Metric::Visitors, Metric::BounceRate];
        let q = question(Group::Total, &metrics, &all);
        let needs = Needs::of(&q);
        // The first whole UTC day is the 25th (20 537); visits of the 29th (20 541) end by the
        // 31st, 00:00 UTC, in the period; those of the 30th may not.
        assert_eq!(
            rollup_days(&q, needs),
            (20_537..=20_541).collect::<Vec<_>>()
        );
        let text = stats(&q).final_text();
        assert!(text.contains("rollup_daily"), "{text}");
        // Events are read on the days holding rows of visits not rolled up: the 24th and 25th
        // (visits of the 24th), and the 30th to the 1st (visits of the 30th and 31st, which
        // may end a day after the period).
        let from = |d: i64| format!("timestamp >= toDateTime({})", d * DAY);
        let to = |d: i64| format!("timestamp < toDateTime({})", d * DAY);
        assert!(
            text.contains(&from(20_536)) && text.contains(&to(20_538)),
            "{text}"
        );
        assert!(
            text.contains(&from(20_542)) && text.contains(&to(20_545)),
            "{text}"
        );
        for skipped in 20_538..=20_541 {
            assert!(!text.contains(&from(skipped)), "{skipped}: {text}");
        }
    }

    #[test]
    fn the_rollup_does_not_answer_what_it_does_not_keep() {
        let all: Vec<i64> = (20_530..20_550).collect();
        let filters = parse_filters("visit:country==DE").unwrap();
        let engagement = [Metric::Visitors, Metric::TimeOnPage];
        let visits = [Metric::Visitors, Metric::Visits];
        let visitors = [Metric::Visitors];
        let page = Group::Property(Property::Event(EventProperty::Page));
        let cases = [
            (question(Group::Total, &engagement, &all), false),
            (question(page.clone(), &visits, &all), false),
            (question(page, &visitors, &all), true),
            (
                question(
                    Group::Property(Property::Event(EventProperty::Name)),
                    &visitors,
                    &all,
                ),
                false,
            ),
            (
                question(Group::Bucket(Interval::Date), &visitors, &all),
                false,
            ),
            (
                StatsQuery {
                    filters: &filters,
                    ..question(Group::Total, &visitors, &all)
                },
                false,
            ),
            (
                StatsQuery {
                    min_group_size: 5,
                    ..question(
                        Group::Property(Property::Visit(VisitProperty::Source)),
                        &visitors,
                        &all,
                    )
                },
                false,
            ),
            (
                question(
                    Group::Property(Property::Visit(VisitProperty::ExitPage)),
                    &visits,
                    &all,
                ),
                true,
            ),
            (question(Group::Total, &visitors, &[]), false),
        ];
        for (q, rolled) in cases {
            let text = stats(&q).final_text();
            assert_eq!(
                text.contains("rollup_daily"),
                rolled,
                "{:?} {:?}: {text}",
                q.group,
                q.metrics
            );
        }
    }
}
