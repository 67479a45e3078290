//! Properties, filters and keys as SQL: the expression of an event or visit property, the
//! row conditions of filters and goals, and the key a statement groups by.

use std::fmt::Write as _;

use super::builder::{rows_between, Sql};
use super::question::{Group, StatsQuery};
use crate::params::{EventProperty, Filter, FilterOp, Interval, Property, VisitProperty};
use crate::period::{HOUR_FORMAT, MINUTE_FORMAT};
use glimpse_core::goals::{Goal, GoalKind};

/// Longest a visit lasts (the collector starts a new one after): how far after a period's end
/// the rows of a visit that started in it can reach.
pub(crate) const MAX_VISIT_SECS: i64 = glimpse_core::visit::MAX_VISIT_SECS as i64;

/// The stored column holding a visit property, stamped on every row of the visit; `None` for
/// the exit page, which only a visit's last page view knows.
fn visit_column(p: VisitProperty) -> Option<&'static str> {
    Some(match p {
        VisitProperty::EntryPage => "entry_page",
        VisitProperty::ExitPage => return None,
        VisitProperty::Source => "visit_referrer_source",
        VisitProperty::Referrer => "visit_referrer",
        VisitProperty::UtmSource => "visit_utm_source",
        VisitProperty::UtmMedium => "visit_utm_medium",
        VisitProperty::UtmCampaign => "visit_utm_campaign",
        VisitProperty::UtmTerm => "visit_utm_term",
        VisitProperty::UtmContent => "visit_utm_content",
        VisitProperty::Country => "country",
        VisitProperty::Region => "region",
        VisitProperty::City => "city",
        VisitProperty::Device => "device",
        VisitProperty::Browser => "browser",
        VisitProperty::BrowserVersion => "browser_version",
        VisitProperty::Os => "os",
        VisitProperty::OsVersion => "os_version",
    })
}

/// The aggregate, over a visit's rows, that gives its exit page.
const EXIT_PAGE: &str = "argMaxIf(pathname, timestamp, name = 'pageview')";

/// A visit property's value as reported: empty values named as Plausible names them.
pub(crate) fn visit_value(p: VisitProperty) -> String {
    named_empty(p, visit_column(p).unwrap_or(EXIT_PAGE))
}

/// `expr`, a value of visit property `p`, with an empty value named: "Direct / None" for a
/// visit without source or referrer, else "(none)".
pub(super) fn named_empty(p: VisitProperty, expr: &str) -> String {
    let empty = if matches!(p, VisitProperty::Source | VisitProperty::Referrer) {
        "Direct / None"
    } else {
        "(none)"
    };
    format!("if(empty({expr}), '{empty}', {expr})")
}

/// Whether an event reached `goal`.
fn goal_condition(sql: &mut Sql, goal: &Goal) {
    match &goal.kind {
        GoalKind::Event(name) => {
            sql.push("name = ").bind_str(name);
        }
        GoalKind::Page(_) => {
            let regex = goal.path_regex().unwrap_or_default();
            sql.push("(name = 'pageview' AND match(pathname, ")
                .bind_str(&regex)
                .push("))");
        }
    }
}

/// Whether an event reached one of `goals`; `0` for none.
fn any_goal_condition(sql: &mut Sql, goals: &[&Goal]) {
    if goals.is_empty() {
        sql.push("0");
        return;
    }
    sql.push("(");
    for (i, goal) in goals.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        goal_condition(sql, goal);
    }
    sql.push(")");
}

/// The expression for an event property, over one event's columns. For goals, the event's
/// row is repeated once per goal it reached (`arrayJoin`), and events that reached none drop
/// out.
pub(super) fn event_expression(sql: &mut Sql, p: &EventProperty, goals: &[Goal]) {
    match p {
        EventProperty::Goal => {
            sql.push("arrayJoin(arrayFilter(g -> g != '', [");
            if goals.is_empty() {
                sql.push("''");
            }
            for (i, goal) in goals.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("if(");
                goal_condition(sql, goal);
                sql.push(", ").bind_str(&goal.name).push(", '')");
            }
            sql.push("]))");
        }
        EventProperty::Page => {
            sql.push("pathname");
        }
        EventProperty::Name => {
            sql.push("name");
        }
        EventProperty::Hostname => {
            sql.push("hostname");
        }
        EventProperty::Prop(name) => {
            sql.push("if(has(prop_keys, ")
                .bind_str(name)
                .push("), prop_values[indexOf(prop_keys, ")
                .bind_str(name)
                .push(")], '(none)')");
        }
    }
}

/// `<expr> IN (…)`, `NOT IN`, or a disjunction of `position(…) > 0`, with `expr` written by
/// `write_expr` once per use.
fn condition(sql: &mut Sql, filter: &Filter, write_expr: &dyn Fn(&mut Sql)) {
    match filter.op {
        FilterOp::Is | FilterOp::IsNot => {
            write_expr(sql);
            sql.push(if filter.op == FilterOp::Is {
                " IN ("
            } else {
                " NOT IN ("
            });
            for (i, value) in filter.values.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_str(value);
            }
            sql.push(")");
        }
        FilterOp::Contains => {
            sql.push("(");
            for (i, value) in filter.values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                sql.push("position(");
                write_expr(sql);
                sql.push(", ").bind_str(value).push(") > 0");
            }
            sql.push(")");
        }
    }
}

/// The events of the period.
pub(super) fn event_rows(sql: &mut Sql, q: &StatsQuery) {
    rows_between(sql, q.site, q.start, q.end);
}

/// Every row of the visits that started in the period, including those after its end.
pub(super) fn visit_rows(sql: &mut Sql, q: &StatsQuery) {
    rows_between(sql, q.site, q.start, q.end + MAX_VISIT_SECS);
    sql.push(" AND ");
    started_in_period(sql, q);
}

/// Whether a row's visit started in the period.
pub(super) fn started_in_period(sql: &mut Sql, q: &StatsQuery) {
    sql.push("visit_start >= toDateTime(")
        .bind_int(q.start)
        .push(") AND visit_start < toDateTime(")
        .bind_int(q.end)
        .push(")");
}

/// ` AND …` for each visit filter: a row condition on the stamped properties, or for the exit
/// page, membership of the visits whose last page view matches.
pub(super) fn visit_conditions(sql: &mut Sql, q: &StatsQuery) {
    for f in q.filters {
        let Property::Visit(p) = &f.property else {
            continue;
        };
        sql.push(" AND ");
        if visit_column(*p).is_some() {
            let value = visit_value(*p);
            condition(sql, f, &|s: &mut Sql| {
                s.push(&value);
            });
        } else {
            let _ = write!(
                sql.template,
                "session_id IN (SELECT session_id FROM {}.events WHERE ",
                q.database
            );
            visit_rows(sql, q);
            sql.push(" GROUP BY session_id HAVING ");
            let value = visit_value(*p);
            condition(sql, f, &|s: &mut Sql| {
                s.push(&value);
            });
            sql.push(")");
        }
    }
}

/// ` AND …` for each event filter, as a row condition.
pub(super) fn event_conditions(sql: &mut Sql, q: &StatsQuery) {
    for f in q.filters {
        let Property::Event(p) = &f.property else {
            continue;
        };
        sql.push(" AND ");
        if *p == EventProperty::Goal {
            // The goals named (or, for `~`, whose names contain a value); unknown names were
            // refused before.
            let chosen: Vec<&Goal> = q
                .goals
                .iter()
                .filter(|g| match f.op {
                    FilterOp::Is | FilterOp::IsNot => f.values.contains(&g.name),
                    FilterOp::Contains => f.values.iter().any(|v| g.name.contains(v.as_str())),
                })
                .collect();
            if f.op == FilterOp::IsNot {
                sql.push("NOT ");
            }
            any_goal_condition(sql, &chosen);
        } else if *p == EventProperty::Name {
            // Engagement reports belong to their page view, whatever its name filter says, so
            // that time on page and scroll depth survive; they are not counted as events.
            sql.push("(name = 'engagement' OR ");
            condition(sql, f, &|s: &mut Sql| event_expression(s, p, q.goals));
            sql.push(")");
        } else {
            condition(sql, f, &|s: &mut Sql| event_expression(s, p, q.goals));
        }
    }
}

pub(super) fn has_event_filters(q: &StatsQuery) -> bool {
    q.filters
        .iter()
        .any(|f| matches!(f.property, Property::Event(_)))
}

/// With event filters, ` AND session_id IN (visits of the period with a matching event)`.
pub(super) fn matching_visits(sql: &mut Sql, q: &StatsQuery) {
    if !has_event_filters(q) {
        return;
    }
    let _ = write!(
        sql.template,
        " AND session_id IN (SELECT session_id FROM {}.events WHERE name != 'engagement' AND ",
        q.database
    );
    visit_rows(sql, q);
    event_conditions(sql, q);
    sql.push(")");
}

/// The bucket label of `column` (a DateTime) in the site's time zone.
fn bucket_expression(sql: &mut Sql, interval: Interval, column: &str, timezone: &str) {
    let _ = match interval {
        Interval::Minute => write!(sql.template, "formatDateTime({column}, '{MINUTE_FORMAT}', "),
        Interval::Hour => write!(sql.template, "formatDateTime({column}, '{HOUR_FORMAT}', "),
        Interval::Date => write!(sql.template, "toString(toDate({column}, "),
        Interval::Week => write!(sql.template, "toString(toMonday({column}, "),
        Interval::Month => write!(sql.template, "toString(toStartOfMonth({column}, "),
    };
    sql.bind_str(timezone);
    sql.push(if matches!(interval, Interval::Minute | Interval::Hour) {
        ")"
    } else {
        "))"
    });
}

/// The key of an event row (for `e`) or of a visit (for `v`, where buckets are the visit's
/// start).
pub(super) fn key_expression(sql: &mut Sql, q: &StatsQuery, of_visit: bool) {
    match &q.group {
        Group::Total => {
            sql.push("''");
        }
        Group::Bucket(interval) => {
            let column = if of_visit { "visit_start" } else { "timestamp" };
            bucket_expression(sql, *interval, column, q.timezone);
        }
        Group::Property(Property::Event(p)) => event_expression(sql, p, q.goals),
        Group::Property(Property::Visit(p)) => {
            sql.push(&visit_value(*p));
        }
    }
}
