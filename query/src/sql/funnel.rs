//! A funnel's statement: how many visitors went through its steps in order within one visit.
//!
//! One statement, three levels: each visit of the period (a visit that *started* in it, rows
//! up to its longest reach after the end, as the stats statements define visits) is reduced
//! to the furthest step it reached by `windowFunnel` (ClickHouse 18.16 and current); each
//! visitor to the furthest step any of their visits reached; then visitors are counted by that
//! step. A visitor counts for step `i` when one of their visits reached step `i` or further.
//!
//! `windowFunnel` walks a visit's matching events in time order: a step counts once the
//! previous one was reached, with any other events between; an event before the previous step
//! counts for nothing (out of order); one event is never two steps, so a repeated step (a page
//! seen again) needs an event of its own after the step before.
//!
//! ClickHouse versions disagree on an event that matches two steps (18.16 counts it once,
//! current versions twice) and on events of the same second. So each event is first repeated
//! once per step it matches (`arrayJoin`), each copy stamped with a time of its own: sixteen
//! ticks per second since the visit's start, the higher step earlier. Within one second a
//! step's copy then always comes before the step before it: an event never counts twice, and
//! two events of the same second never count as in order, on every version alike. The window
//! is a visit's longest span, so it never cuts a visit short.

use std::fmt::Write as _;

use super::builder::Sql;
use super::expr::{goal_condition, matching_visits, visit_conditions, visit_rows, MAX_VISIT_SECS};
use super::question::{Group, StatsQuery};
use crate::params::Condition;
use glimpse_core::funnels::Step;
use glimpse_core::goals::Goal;

/// One funnel question in SQL terms.
#[derive(Debug, Clone)]
pub struct FunnelQuery<'a> {
    pub database: &'a str,
    pub site: &'a str,
    /// An IANA name, validated by the caller.
    pub timezone: &'a str,
    /// `[start, end)`, Unix seconds: the visits that started then.
    pub start: i64,
    pub end: i64,
    /// Joined by `and`; they choose the visits (visit properties, or an event that matches).
    pub filters: &'a [Condition],
    /// The site's goals; a goal step names one of them (checked by the caller).
    pub goals: &'a [Goal],
    pub steps: &'a [Step],
}

/// Ticks per second of a visit's own clock: more than a funnel's steps (see the module's
/// comment).
const TICKS: i64 = 16;
const _: () = assert!(glimpse_core::funnels::MAX_STEPS < TICKS as usize);

/// The statement's rows: visitors whose furthest step was `step` (1-based; 0 is left out).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct FunnelRow {
    pub step: u8,
    pub visitors: u64,
}

/// Whether an event is `step`.
fn step_condition(sql: &mut Sql, step: &Step, goals: &[Goal]) {
    match step {
        Step::Page(_) => {
            let regex = step.path_regex().unwrap_or_default();
            sql.push("(name = 'pageview' AND match(pathname, ")
                .bind_str(&regex)
                .push("))");
        }
        Step::Event(name) => {
            sql.push("name = ").bind_str(name);
        }
        Step::Goal(name) => match goals.iter().find(|g| &g.name == name) {
            Some(goal) => goal_condition(sql, goal),
            None => {
                sql.push("0");
            }
        },
    }
}

/// The funnel's statement, returning [`FunnelRow`]s ordered by step.
pub fn funnel(q: &FunnelQuery) -> Sql {
    // The stats statements' conditions read their question: the same filters and period.
    let stats = StatsQuery {
        database: q.database,
        site: q.site,
        timezone: q.timezone,
        start: q.start,
        end: q.end,
        group: Group::Total,
        filters: q.filters,
        min_group_size: 0,
        sort: &[],
        metrics: &[],
        goals: q.goals,
        page: None,
        imported: false,
        rolled: &[],
        keys: None,
        sample: None,
    };
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT toUInt8(reached) AS step, count() AS visitors FROM (\
         SELECT visitor_id, max(level) AS reached FROM (\
         SELECT any(visitor_id) AS visitor_id, windowFunnel({})(at",
        (MAX_VISIT_SECS + 1) * TICKS
    );
    for i in 1..=q.steps.len() {
        let _ = write!(sql.template, ", matched = {i}");
    }
    sql.push(
        ") AS level FROM (SELECT visitor_id, session_id, \
         arrayJoin(arrayFilter(x -> x > 0, [",
    );
    for (i, step) in q.steps.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("if(");
        step_condition(&mut sql, step, q.goals);
        let _ = write!(sql.template, ", {}, 0)", i + 1);
    }
    let _ = write!(
        sql.template,
        "])) AS matched, toDateTime(toUInt32(greatest(toInt64(timestamp) - toInt64(visit_start), 0) \
         * {TICKS} + {} - matched)) AS at FROM {db}.events \
         PREWHERE session_id IN (SELECT session_id FROM {db}.events WHERE name != 'engagement' AND ",
        TICKS - 1,
        db = q.database
    );
    // Speed (issue 18): only a visit with a first step's row can reach level 1 (the others
    // count for nothing), so rows are first narrowed to such visits: a pass on the first step
    // alone builds the set, and the set with the period is the PREWHERE, so that the step
    // conditions (regular expressions on the path) run only on the rows left and the visit
    // grouping holds only visits that can count. Same answers: a visit dropped here was at
    // level 0. The same set in WHERE (commit 7cc1407) added the pass and saved no step
    // condition. 4-step funnel, 10 M events, 18.16, server-side, 15 interleaved runs on a
    // loaded machine: median / p95 724 / 911 ms before, 460 / 667 ms after, for the same CPU
    // time (about 390 ms): fewer visits to group and merge.
    visit_rows(&mut sql, &stats);
    sql.push(" AND ");
    match q.steps.first() {
        Some(first) => step_condition(&mut sql, first, q.goals),
        None => {
            sql.push("0");
        }
    }
    sql.push(") AND ");
    visit_rows(&mut sql, &stats);
    sql.push(" WHERE name != 'engagement'");
    visit_conditions(&mut sql, &stats);
    matching_visits(&mut sql, &stats);
    // Only the rows that are steps: a visit without any reaches level 0 either way.
    sql.push(" AND (");
    for (i, step) in q.steps.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        step_condition(&mut sql, step, q.goals);
    }
    // Visits are grouped by `session_id` alone (every row of a visit carries its visitor's
    // id, as the collector stamps it: one smaller key), and visits at level 0 are dropped
    // before the visitor grouping (they count for nothing).
    sql.push(
        ")) GROUP BY session_id HAVING level > 0) GROUP BY visitor_id) \
         WHERE reached > 0 GROUP BY step ORDER BY step",
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Filter, FilterOp, Property, VisitProperty};

    #[test]
    fn one_statement_binds_every_value() {
        let goals = vec![Goal::parse("Visit /thanks*").unwrap()];
        let steps = [
            Step::Page("/pricing".into()),
            Step::Event("Signup".into()),
            Step::Goal("Visit /thanks*".into()),
        ];
        let filters = [Condition::Filter(Filter {
            property: Property::Visit(VisitProperty::Country),
            op: FilterOp::Is,
            values: vec!["FR".into()],
            ignore_case: false,
        })];
        let sql = funnel(&FunnelQuery {
            database: "glimpse",
            site: "example.com",
            timezone: "UTC",
            start: 1_000_000,
            end: 2_000_000,
            filters: &filters,
            goals: &goals,
            steps: &steps,
        });
        let t = &sql.template;
        assert!(
            t.contains("windowFunnel(1382416)(at, matched = 1, matched = 2, matched = 3)"),
            "{t}"
        );
        assert!(
            t.contains("[if((name = 'pageview' AND match(pathname, ?)), 1, 0), if(name = ?, 2, 0), if((name = 'pageview'"),
            "{t}"
        );
        assert!(
            t.contains("PREWHERE session_id IN (SELECT session_id FROM glimpse.events WHERE name != 'engagement' AND site = ?"),
            "{t}"
        );
        assert!(t.contains("visit_start >= toDateTime(?)"), "{t}");
        assert!(t.contains("GROUP BY session_id HAVING level > 0"), "{t}");
        assert!(
            !t.contains("Signup") && !t.contains("'FR'"),
            "values are bound: {t}"
        );
        assert!(sql
            .binds
            .contains(&crate::sql::Value::Str("^/pricing$".into())));
        assert_eq!(t.matches('?').count(), sql.binds.len());
    }
}
