//! Reading the per-day rollup inside a stats statement: the rolled days' figures added to
//! those of the other days' events (which days, and the rows they leave out: `rolled_days`).

use std::fmt::Write as _;

use super::builder::{days_condition, Sql};
use super::passes::raw_source;
use super::question::{Needs, StatsQuery, SUMS};
use super::rolled_days::{rollup_days, rollup_property};

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
    // `materialize`: a figure that is a constant on one side of the `UNION ALL` (engagement
    // in the rollup, visit figures not asked for) and computed on the other makes 18.16 refuse
    // the union when it comes through a `Distributed` table (code 171, "non constant in source
    // stream but must be constant in result").
    sql.push(" FROM (SELECT key, toUInt64(e_visitors) AS e_visitors");
    for (_, column) in SUMS {
        let _ = write!(sql.template, ", materialize(toInt64({column})) AS {column}");
    }
    sql.push(" FROM ");
    raw_source(sql, q, needs);
    sql.push(" UNION ALL ");
    rollup_pass(sql, q, needs, &days);
    sql.push(") GROUP BY key)");
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
        let _ = write!(sql.template, ", materialize(toInt64({value})) AS {column}");
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
    use crate::params::{parse_filters, EventProperty, Interval, Metric, Property, VisitProperty};
    use crate::sql::question::Group;
    use crate::sql::stats::stats;
    use crate::sql::DAY;

    fn question<'a>(group: Group, metrics: &'a [Metric], rolled: &'a [i64]) -> StatsQuery<'a> {
        StatsQuery {
            database: "glimpse",
            site: "example.com",
            timezone: "Europe/Berlin",
            // 2026-03-24 23:00 UTC to 2026-03-31 22:00 UTC: a Berlin week over the DST change.
            start: 20_536 * DAY + 23 * 3600,
            end: 20_543 * DAY + 22 * 3600,
            keys: None,
            group,
            filters: &[],
            min_group_size: 0,
            sort: &[],
            metrics,
            goals: &[],
            page: None,
            imported: false,
            rolled,
            sample: None,
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
        let filters: Vec<crate::params::Condition> = parse_filters("visit:country==DE")
            .unwrap()
            .into_iter()
            .map(Into::into)
            .collect();
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
