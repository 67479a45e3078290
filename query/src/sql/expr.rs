//! Properties, filters and keys as SQL: the expression of an event or visit property, the
//! row conditions of filters and goals, and the key a statement groups by.

use std::fmt::Write as _;

use super::builder::{rows_between, Sql};
use super::question::{Group, StatsQuery};
use crate::params::{
    Condition, EventProperty, Filter, FilterOp, Interval, Property, VisitProperty,
};
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
pub(super) fn goal_condition(sql: &mut Sql, goal: &Goal) {
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

/// `<expr> IN (…)`, `NOT IN`, or a disjunction of `position(…) > 0` or `match(…)` (negated
/// for the negative operators), with `expr` written by `write_expr` once per use.
///
/// With `ignore_case`, both sides are lower-cased by ClickHouse (`lowerUTF8`, the same rule
/// for the text and the value); regular expressions come case-folded already (`v2::filters`).
fn condition(
    sql: &mut Sql,
    op: FilterOp,
    values: &[String],
    ignore_case: bool,
    write_expr: &dyn Fn(&mut Sql),
) {
    let lower_expr = |sql: &mut Sql| {
        sql.push("lowerUTF8(");
        write_expr(sql);
        sql.push(")");
    };
    match op {
        FilterOp::Is | FilterOp::IsNot if ignore_case => {
            // Not `IN (lowerUTF8(?), …)`: a list of expressions, which 18.16's IN does not take.
            sql.push(if op == FilterOp::Is { "(" } else { "NOT (" });
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                lower_expr(sql);
                sql.push(" = lowerUTF8(").bind_str(value).push(")");
            }
            sql.push(")");
        }
        FilterOp::Contains | FilterOp::ContainsNot if ignore_case => {
            sql.push(if op.is_negative() { "NOT (" } else { "(" });
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                sql.push("position(");
                lower_expr(sql);
                sql.push(", lowerUTF8(").bind_str(value).push(")) > 0");
            }
            sql.push(")");
        }
        FilterOp::Is | FilterOp::IsNot => {
            write_expr(sql);
            sql.push(if op == FilterOp::Is {
                " IN ("
            } else {
                " NOT IN ("
            });
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_str(value);
            }
            sql.push(")");
        }
        FilterOp::Contains | FilterOp::ContainsNot | FilterOp::Matches | FilterOp::MatchesNot => {
            if op.is_negative() {
                sql.push("NOT ");
            }
            let regex = matches!(op, FilterOp::Matches | FilterOp::MatchesNot);
            sql.push("(");
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                // ClickHouse's `match` is RE2: linear in the text, whatever the pattern.
                sql.push(if regex { "match(" } else { "position(" });
                write_expr(sql);
                sql.push(", ")
                    .bind_str(value)
                    .push(if regex { ")" } else { ") > 0" });
            }
            sql.push(")");
        }
    }
}

/// The events of the period (of the sampled visitors, if sampled).
pub(super) fn event_rows(sql: &mut Sql, q: &StatsQuery) {
    rows_between(sql, q.site, q.start, q.end);
    sampled_visitors(sql, q);
}

/// Every row of the visits that started in the period, including those after its end (of the
/// sampled visitors, if sampled).
pub(super) fn visit_rows(sql: &mut Sql, q: &StatsQuery) {
    rows_between(sql, q.site, q.start, q.end + MAX_VISIT_SECS);
    sampled_visitors(sql, q);
    sql.push(" AND ");
    started_in_period(sql, q);
}

/// ` AND visitor_id < 2^64/N` when the question reads 1 in N visitors. Visitor ids are keyed
/// hashes, uniform over UInt64, so the ids under the cutoff are a uniform sample of visitors,
/// the same in every pass (a visit's rows are all kept or all left out). `visitor_id` follows
/// `(site, day, name)` in the events' sort key, so ClickHouse skips the granules above the
/// cutoff: the same key range `SAMPLE 1/N` reads on a table sampled by `visitor_id`, with no
/// sampling key (and no copy of the table) needed.
pub(super) fn sampled_visitors(sql: &mut Sql, q: &StatsQuery) {
    if let Some(n) = q.sample.filter(|&n| n > 1) {
        let _ = write!(sql.template, " AND visitor_id < {}", sample_cutoff(n));
    }
}

/// The visitor ids below which 1 in `n` visitors fall (`n` ≥ 1).
pub fn sample_cutoff(n: u64) -> u64 {
    u64::MAX / n.max(1)
}

/// Whether a row's visit started in the period.
pub(super) fn started_in_period(sql: &mut Sql, q: &StatsQuery) {
    sql.push("visit_start >= toDateTime(")
        .bind_int(q.start)
        .push(") AND visit_start < toDateTime(")
        .bind_int(q.end)
        .push(")");
}

/// ` AND …` for each of the question's conditions without event filters: row conditions on
/// the stamped visit properties (or, for the exit page, membership of the visits whose last
/// page view matches), which every row of a visit shares.
pub(super) fn visit_conditions(sql: &mut Sql, q: &StatsQuery) {
    for c in q.filters.iter().filter(|c| !c.has_event_filter()) {
        sql.push(" AND ");
        row_condition(sql, q, c, false);
    }
}

/// ` AND …` for each of the question's conditions, as a row condition: what events count.
pub(super) fn row_conditions(sql: &mut Sql, q: &StatsQuery) {
    for c in q.filters {
        sql.push(" AND ");
        row_condition(sql, q, c, false);
    }
}

/// One condition as a row condition, negated with `negate`: negations are pushed down to the
/// filters, so that each writes its own negative form.
fn row_condition(sql: &mut Sql, q: &StatsQuery, c: &Condition, negate: bool) {
    match c {
        Condition::Filter(f) => {
            let op = if negate { f.op.negated() } else { f.op };
            filter_condition(sql, q, f, op);
        }
        Condition::Not(inner) => row_condition(sql, q, inner, !negate),
        Condition::And(cs) | Condition::Or(cs) => {
            let all = matches!(c, Condition::And(_)) != negate;
            if cs.is_empty() {
                sql.push(if all { "1" } else { "0" });
                return;
            }
            sql.push("(");
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    sql.push(if all { " AND " } else { " OR " });
                }
                row_condition(sql, q, c, negate);
            }
            sql.push(")");
        }
    }
}

/// One filter as a row condition.
fn filter_condition(sql: &mut Sql, q: &StatsQuery, f: &Filter, op: FilterOp) {
    let (values, ignore_case) = (&f.values, f.ignore_case);
    let same = |a: &str, b: &str| {
        if ignore_case {
            a.to_lowercase() == b.to_lowercase()
        } else {
            a == b
        }
    };
    let contains = |a: &str, b: &str| {
        if ignore_case {
            a.to_lowercase().contains(&b.to_lowercase())
        } else {
            a.contains(b)
        }
    };
    match &f.property {
        Property::Visit(p) if visit_column(*p).is_some() => {
            let value = visit_value(*p);
            condition(sql, op, values, ignore_case, &|s: &mut Sql| {
                s.push(&value);
            });
        }
        Property::Visit(p) => {
            let _ = write!(
                sql.template,
                "session_id IN (SELECT session_id FROM {}.events WHERE ",
                q.database
            );
            visit_rows(sql, q);
            sql.push(" GROUP BY session_id HAVING ");
            let value = visit_value(*p);
            condition(sql, op, values, ignore_case, &|s: &mut Sql| {
                s.push(&value);
            });
            sql.push(")");
        }
        Property::Event(EventProperty::Goal) => {
            // The goals named (or whose names contain a value); unknown names were refused
            // before, and v2 refuses regular expressions on goals.
            let chosen: Vec<&Goal> = q
                .goals
                .iter()
                .filter(|g| match op {
                    FilterOp::Is | FilterOp::IsNot => values.iter().any(|v| same(&g.name, v)),
                    FilterOp::Contains | FilterOp::ContainsNot => {
                        values.iter().any(|v| contains(&g.name, v))
                    }
                    FilterOp::Matches | FilterOp::MatchesNot => false,
                })
                .collect();
            if op.is_negative() {
                sql.push("NOT ");
            }
            any_goal_condition(sql, &chosen);
        }
        Property::Event(p) => {
            // Engagement reports belong to their page view, whatever its name filter says, so
            // that time on page and scroll depth survive; they are not counted as events.
            let name = *p == EventProperty::Name;
            if name {
                sql.push("(name = 'engagement' OR ");
            }
            condition(sql, op, values, ignore_case, &|s: &mut Sql| {
                event_expression(s, p, q.goals)
            });
            if name {
                sql.push(")");
            }
        }
    }
}

pub(super) fn has_event_filters(q: &StatsQuery) -> bool {
    q.filters.iter().any(Condition::has_event_filter)
}

/// With event filters, ` AND session_id IN (visits of the period with an event that meets
/// every condition with event filters)`.
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
    for c in q.filters.iter().filter(|c| c.has_event_filter()) {
        sql.push(" AND ");
        row_condition(sql, q, c, false);
    }
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
    group_expression(sql, q, &q.group, of_visit);
}

/// The key of `group` (see `key_expression`). A tuple's parts are joined as
/// `question::join_key` joins them, each escaped.
fn group_expression(sql: &mut Sql, q: &StatsQuery, group: &Group, of_visit: bool) {
    match group {
        Group::Tuple(parts) => {
            sql.push("concat(");
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    sql.push(", '\\x01\\x02', ");
                }
                sql.push("replaceAll(");
                group_expression(sql, q, part, of_visit);
                sql.push(", '\\x01', '\\x01\\x03')");
            }
            sql.push(")");
        }
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
