//! The passes over the events a stats statement reads: events by key, visits by key, both in
//! one scan, the exit page; and `raw_source`, which picks them for a question.

use std::fmt::Write as _;

use super::builder::{rows_between, Sql};
use super::expr::{
    event_rows, has_event_filters, key_expression, matching_visits, row_conditions,
    sampled_visitors, started_in_period, visit_conditions, visit_rows, visit_value, MAX_VISIT_SECS,
};
use super::question::{Group, Needs, StatsQuery, SUMS};
use super::rolled_days::not_rolled;
use crate::params::{Property, VisitProperty};

/// `e`: the period's events by key. Visitors are counted over page views and custom events;
/// `e_state` carries them as mergeable `uniq` states for `(other)` rows.
fn events_pass(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
    sql.push("SELECT ");
    key_expression(sql, q, false);
    if needs.engagement {
        sql.push(" AS key, uniqIf(visitor_id, name != 'engagement') AS e_visitors, ");
        if needs.states {
            sql.push("uniqStateIf(visitor_id, name != 'engagement') AS e_state, ");
        }
        sql.push(
            "countIf(name = 'pageview') AS e_pageviews, countIf(name != 'engagement') AS e_events, \
             countIf(name = 'engagement') AS e_engaged_pages, \
             sumIf(engagement_ms, name = 'engagement') AS e_engaged_ms, \
             sumIf(scroll_depth, name = 'engagement') AS e_scroll_sum ",
        );
    } else {
        // Without engagement metrics the reports are left out of the scan altogether.
        sql.push(" AS key, uniq(visitor_id) AS e_visitors, ");
        if needs.states {
            sql.push("uniqState(visitor_id) AS e_state, ");
        }
        sql.push(
            "countIf(name = 'pageview') AS e_pageviews, count() AS e_events, \
             toUInt64(0) AS e_engaged_pages, toUInt64(0) AS e_engaged_ms, \
             toUInt64(0) AS e_scroll_sum ",
        );
    }
    let _ = write!(sql.template, "FROM {}.events WHERE ", q.database);
    event_rows(sql, q);
    if !needs.engagement {
        sql.push(" AND name != 'engagement'");
    }
    row_conditions(sql, q);
    not_rolled(sql, q, needs);
    sql.push(" GROUP BY key HAVING e_events > 0");
}

/// `e` and `v` in one pass, for a key that events and visits share (the total, or a visit
/// property stamped on every row) when no event filter narrows the visits: the rows from the
/// period's start to a visit's longest reach after its end, each aggregate taking its own.
fn events_and_visits_pass(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
    let in_period = |sql: &mut Sql| {
        sql.push("timestamp < toDateTime(")
            .bind_int(q.end)
            .push(")");
    };
    let of_events = |sql: &mut Sql| {
        in_period(sql);
        sql.push(" AND name != 'engagement'");
    };
    let of_visits = |sql: &mut Sql| started_in_period(sql, q);
    sql.push("SELECT ");
    key_expression(sql, q, false);
    sql.push(" AS key, uniqIf(visitor_id, ");
    of_events(sql);
    sql.push(") AS e_visitors, ");
    if needs.states {
        sql.push("uniqStateIf(visitor_id, ");
        of_events(sql);
        sql.push(") AS e_state, ");
    }
    sql.push("countIf(");
    of_events(sql);
    sql.push(" AND name = 'pageview') AS e_pageviews, countIf(");
    of_events(sql);
    sql.push(") AS e_events, ");
    if needs.engagement {
        // As in `events_pass`, a key's engagement counts only beside its events.
        sql.push("if(e_events > 0, countIf(");
        in_period(sql);
        sql.push(" AND name = 'engagement'), 0) AS e_engaged_pages, if(e_events > 0, sumIf(engagement_ms, ");
        in_period(sql);
        sql.push(
            " AND name = 'engagement'), 0) AS e_engaged_ms, if(e_events > 0, sumIf(scroll_depth, ",
        );
        in_period(sql);
        sql.push(" AND name = 'engagement'), 0) AS e_scroll_sum, ");
    } else {
        sql.push(
            "toUInt64(0) AS e_engaged_pages, toUInt64(0) AS e_engaged_ms, \
             toUInt64(0) AS e_scroll_sum, ",
        );
    }
    sql.push("sumIf(visit_entry, ");
    of_visits(sql);
    sql.push(") AS v_visits, countIf(");
    of_visits(sql);
    sql.push(" AND name = 'pageview') AS v_visit_pageviews, sumIf(visit_bounce, ");
    of_visits(sql);
    sql.push(") AS v_bounces, sumIf(visit_duration, ");
    of_visits(sql);
    sql.push(") AS v_duration, countIf(");
    of_visits(sql);
    let _ = write!(
        sql.template,
        ") AS v_rows FROM {}.events WHERE ",
        q.database
    );
    rows_between(sql, q.site, q.start, q.end + MAX_VISIT_SECS);
    sampled_visitors(sql, q);
    sql.push(" AND (");
    in_period(sql);
    sql.push(" OR ");
    of_visits(sql);
    sql.push(")");
    if !needs.engagement {
        sql.push(" AND name != 'engagement'");
    }
    visit_conditions(sql, q);
    not_rolled(sql, q, needs);
    sql.push(" GROUP BY key HAVING e_events > 0 OR v_rows > 0");
}

/// `v`: the visits that started in the period, by key. Never beside rolled days: the questions
/// that need it (filters, buckets, visit metrics by event property) are not the rollup's.
fn visits_pass(sql: &mut Sql, q: &StatsQuery) {
    let db = q.database;
    if q.group.has_event_part() {
        // A visit counts once for each key among its matching events (the other parts of a
        // tuple are the visit's: its properties, the bucket of its start).
        sql.push(
            "SELECT key, count() AS v_visits, sum(s_pageviews) AS v_visit_pageviews, \
             sum(s_bounce) AS v_bounces, sum(s_duration) AS v_duration FROM (SELECT session_id, ",
        );
        key_expression(sql, q, true);
        let _ = write!(
            sql.template,
            " AS key FROM {db}.events WHERE name != 'engagement' AND "
        );
        visit_rows(sql, q);
        row_conditions(sql, q);
        sql.push(
            " GROUP BY session_id, key) AS l ALL INNER JOIN (SELECT session_id, \
             countIf(name = 'pageview') AS s_pageviews, sum(visit_bounce) AS s_bounce, \
             sum(visit_duration) AS s_duration ",
        );
        let _ = write!(sql.template, "FROM {db}.events WHERE ");
        visit_rows(sql, q);
        visit_conditions(sql, q);
        sql.push(" GROUP BY session_id) AS r USING session_id GROUP BY key");
        return;
    }
    sql.push("SELECT ");
    key_expression(sql, q, true);
    sql.push(
        " AS key, sum(visit_entry) AS v_visits, countIf(name = 'pageview') AS v_visit_pageviews, \
         sum(visit_bounce) AS v_bounces, sum(visit_duration) AS v_duration ",
    );
    let _ = write!(sql.template, "FROM {db}.events WHERE ");
    visit_rows(sql, q);
    visit_conditions(sql, q);
    matching_visits(sql, q);
    sql.push(" GROUP BY key");
}

/// The exit page breakdown: every figure from the period's visits, grouped by visit first.
/// Engagement reports carry no visit figures, so without engagement metrics they are left out
/// of the scan (in real traffic about half the rows).
fn exit_page_pass(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
    let engagement = if needs.engagement {
        "countIf(name = 'engagement') AS x_engaged_pages, \
         sumIf(engagement_ms, name = 'engagement') AS x_engaged_ms, \
         sumIf(scroll_depth, name = 'engagement') AS x_scroll, "
    } else {
        "toUInt64(0) AS x_engaged_pages, toUInt64(0) AS x_engaged_ms, toUInt64(0) AS x_scroll, "
    };
    let _ = write!(
        sql.template,
        "SELECT x_exit AS key, uniq(x_visitor) AS e_visitors, {}\
         sum(x_pageviews) AS e_pageviews, sum(x_events) AS e_events, \
         sum(x_engaged_pages) AS e_engaged_pages, sum(x_engaged_ms) AS e_engaged_ms, \
         sum(x_scroll) AS e_scroll_sum, count() AS v_visits, \
         sum(x_pageviews) AS v_visit_pageviews, sum(x_bounce) AS v_bounces, \
         sum(x_duration) AS v_duration \
         FROM (SELECT session_id, any(visitor_id) AS x_visitor, {} AS x_exit, \
         countIf(name = 'pageview') AS x_pageviews, countIf(name != 'engagement') AS x_events, \
         {engagement}sum(visit_bounce) AS x_bounce, sum(visit_duration) AS x_duration, \
         sum(visit_entry) AS x_entry FROM {}.events WHERE ",
        if needs.states {
            "uniqState(x_visitor) AS e_state, "
        } else {
            ""
        },
        visit_value(VisitProperty::ExitPage),
        q.database
    );
    visit_rows(sql, q);
    if !needs.engagement {
        sql.push(" AND name != 'engagement'");
    }
    visit_conditions(sql, q);
    matching_visits(sql, q);
    not_rolled(sql, q, needs);
    sql.push(" GROUP BY session_id HAVING x_entry > 0) GROUP BY key");
}

/// `live_source` from events only (the rolled days' rows left out, if any).
pub(super) fn raw_source(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
    if q.group == Group::Property(Property::Visit(VisitProperty::ExitPage)) {
        sql.push("(");
        exit_page_pass(sql, q, needs);
        sql.push(")");
        return;
    }
    if needs.visits && q.group.is_shared_by_visit() && !has_event_filters(q) {
        sql.push("(");
        events_and_visits_pass(sql, q, needs);
        sql.push(")");
        return;
    }
    sql.push("(SELECT key, e_visitors");
    if needs.states {
        sql.push(", e_state");
    }
    if !needs.visits {
        // Nothing asks for visit figures: `e` alone, with zeros for them.
        for (_, column) in SUMS {
            if column.starts_with("v_") {
                let _ = write!(sql.template, ", toUInt64(0) AS {column}");
            } else {
                let _ = write!(sql.template, ", {column}");
            }
        }
        sql.push(" FROM (");
        events_pass(sql, q, needs);
        sql.push("))");
        return;
    }
    for (_, column) in SUMS {
        let _ = write!(sql.template, ", {column}");
    }
    sql.push(" FROM (");
    events_pass(sql, q, needs);
    sql.push(") AS e ALL FULL OUTER JOIN (");
    visits_pass(sql, q);
    sql.push(") AS v USING key)");
}
