//! The stats statement: one question (`StatsQuery`) read in at most two passes over the events
//! (see the `sql` module), its rows `StatsRow`s.

use std::fmt::Write as _;

use super::builder::{rows_between, Sql};
use super::expr::{
    event_conditions, event_expression, event_rows, has_event_filters, key_expression,
    matching_visits, started_in_period, visit_conditions, visit_rows, visit_value, MAX_VISIT_SECS,
};
use super::imported::{imported_answers, source};
use super::rolled::not_rolled;
use crate::params::{Filter, Interval, Metric, Property, Sort, SortKey, VisitProperty};
use glimpse_core::goals::Goal;

/// How rows are grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// One row for everything (aggregate).
    Total,
    /// Timeseries buckets, labelled as `period::bucket_labels` labels them.
    Bucket(Interval),
    /// A breakdown.
    Property(Property),
}

/// One stats question in SQL terms.
#[derive(Debug, Clone)]
pub struct StatsQuery<'a> {
    pub database: &'a str,
    pub site: &'a str,
    /// An IANA name, validated by the caller.
    pub timezone: &'a str,
    /// `[start, end)`, Unix seconds.
    pub start: i64,
    pub end: i64,
    pub group: Group,
    pub filters: &'a [Filter],
    /// Breakdown rows with fewer visitors merge into `(other)`; 0 is off.
    pub min_group_size: u64,
    pub sort: Option<Sort>,
    /// The metrics asked for: visit figures are computed only when one needs them.
    pub metrics: &'a [Metric],
    /// The site's goals, for `event:goal`.
    pub goals: &'a [Goal],
    /// `(limit, offset)`.
    pub page: Option<(u64, u64)>,
    /// Add the site's imported daily aggregates; only where [`imported_answers`] says they
    /// can answer the question (the caller checks).
    pub imported: bool,
    /// UTC days (days since 1970) whose per-day figures are complete in `rollup_daily`: the
    /// statement reads those instead of their events where it can (see `rolled::rollup_answers`).
    pub rolled: &'a [i64],
}

/// The columns every stats statement returns, from which all metrics are computed.
#[derive(Debug, Clone, Default, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct StatsRow {
    pub key: String,
    pub visitors: u64,
    pub visits: u64,
    pub pageviews: u64,
    pub events: u64,
    /// Page views of the visits counted (not only of matching events).
    pub visit_pageviews: u64,
    pub bounces: u64,
    /// Sum of visit durations, seconds.
    pub duration: u64,
    /// (visit, page) pairs with engagement reports.
    pub engaged_pages: u64,
    pub engaged_ms: u64,
    /// Sum over those pairs of the largest scroll depth, percent.
    pub scroll_sum: u64,
}

/// Whether answering `metric` needs the visits of the period (not only its events).
fn is_visit_metric(metric: Metric) -> bool {
    matches!(
        metric,
        Metric::Visits | Metric::ViewsPerVisit | Metric::BounceRate | Metric::VisitDuration
    )
}

/// The `StatsRow` columns after `visitors`, each with the column of a pass it comes from: `e`
/// fills the event ones, `v` the visit ones.
pub(super) const SUMS: [(&str, &str); 9] = [
    ("visits", "v_visits"),
    ("pageviews", "e_pageviews"),
    ("events", "e_events"),
    ("visit_pageviews", "v_visit_pageviews"),
    ("bounces", "v_bounces"),
    ("duration", "v_duration"),
    ("engaged_pages", "e_engaged_pages"),
    ("engaged_ms", "e_engaged_ms"),
    ("scroll_sum", "e_scroll_sum"),
];

/// What a statement computes beyond visitors, page views and events, from the metrics (and
/// sort) asked for: each costs aggregation work on every row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Needs {
    /// Visit figures (visits, bounces, durations, their page views).
    pub(super) visits: bool,
    /// Engagement reports (time on page, scroll depth).
    pub(super) engagement: bool,
    /// Mergeable visitor states, for `(other)` rows.
    pub(super) states: bool,
}

impl Needs {
    pub(super) fn of(q: &StatsQuery) -> Needs {
        let sorted_by = match q.sort {
            Some(Sort {
                key: SortKey::Metric(m),
                ..
            }) => Some(m),
            _ => None,
        };
        let asked = |f: fn(Metric) -> bool| q.metrics.iter().copied().chain(sorted_by).any(f);
        Needs {
            visits: asked(is_visit_metric),
            engagement: asked(|m| matches!(m, Metric::TimeOnPage | Metric::ScrollDepth)),
            states: q.min_group_size > 0 && matches!(q.group, Group::Property(_)),
        }
    }
}

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
    visit_conditions(sql, q);
    event_conditions(sql, q);
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
    if let Group::Property(Property::Event(p)) = &q.group {
        // A visit counts once for each key among its matching events.
        sql.push(
            "SELECT key, count() AS v_visits, sum(s_pageviews) AS v_visit_pageviews, \
             sum(s_bounce) AS v_bounces, sum(s_duration) AS v_duration FROM (SELECT session_id, ",
        );
        event_expression(sql, p, q.goals);
        let _ = write!(
            sql.template,
            " AS key FROM {db}.events WHERE name != 'engagement' AND "
        );
        visit_rows(sql, q);
        visit_conditions(sql, q);
        event_conditions(sql, q);
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
    let shared_key = matches!(q.group, Group::Total | Group::Property(Property::Visit(_)));
    if needs.visits && shared_key && !has_event_filters(q) {
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

/// What ORDER BY sorts on for a sort key: whitelisted expressions over the output columns.
fn sort_expression(key: SortKey) -> &'static str {
    match key {
        SortKey::Property => "key",
        SortKey::Metric(m) => match m {
            Metric::Visitors => "visitors",
            Metric::Visits => "visits",
            Metric::Pageviews => "pageviews",
            Metric::Events => "events",
            Metric::ViewsPerVisit => "visit_pageviews / greatest(visits, 1)",
            Metric::BounceRate => "bounces / greatest(visits, 1)",
            Metric::VisitDuration => "duration / greatest(visits, 1)",
            Metric::TimeOnPage => "engaged_ms / greatest(engaged_pages, 1)",
            Metric::ScrollDepth => "scroll_sum / greatest(engaged_pages, 1)",
            // Every row's rate has the same denominator.
            Metric::ConversionRate => "visitors",
        },
    }
}

/// The statement for one stats question; its rows are [`StatsRow`]s.
pub fn stats(q: &StatsQuery) -> Sql {
    let mut sql = Sql::default();
    let k = q.min_group_size;
    let needs = Needs::of(q);
    if needs.states {
        // Keys with at least k visitors keep their name; the rest merge into one "(other)"
        // row, whose visitors are merged `uniq` states (a visitor in two small groups counts
        // once).
        // Imported visitors have no states: they add up.
        let imported = q.imported && imported_answers(&q.group, q.filters);
        sql.push("SELECT if(e_visitors >= ")
            .bind_int(k.min(i64::MAX as u64) as i64)
            .push(if imported {
                ", s_key, '(other)') AS key, toUInt64(uniqMerge(e_state) + sum(i_visitors)) AS visitors"
            } else {
                ", s_key, '(other)') AS key, toUInt64(uniqMerge(e_state)) AS visitors"
            });
        for (name, column) in SUMS {
            let _ = write!(sql.template, ", toUInt64(sum({column})) AS {name}");
        }
        sql.push(" FROM (SELECT key AS s_key, e_visitors, e_state");
        if imported {
            sql.push(", i_visitors");
        }
        for (_, column) in SUMS {
            let _ = write!(sql.template, ", {column}");
        }
        sql.push(" FROM ");
        source(&mut sql, q, needs);
        sql.push(") GROUP BY key");
    } else {
        sql.push("SELECT key, toUInt64(e_visitors) AS visitors");
        for (name, column) in SUMS {
            let _ = write!(sql.template, ", toUInt64(greatest({column}, 0)) AS {name}");
        }
        sql.push(" FROM ");
        source(&mut sql, q, needs);
    }
    if let Some(sort) = q.sort {
        let direction = if sort.descending { "DESC" } else { "ASC" };
        let _ = write!(
            sql.template,
            " ORDER BY {} {direction}, key ASC",
            sort_expression(sort.key)
        );
    }
    if let Some((limit, offset)) = q.page {
        sql.push(" LIMIT ")
            .bind_int(limit as i64)
            .push(" OFFSET ")
            .bind_int(offset as i64);
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{parse_filters, EventProperty};

    #[test]
    fn client_text_is_only_ever_bound() {
        let hostile = "x') OR 1=1 -- ; DROP TABLE glimpse.events; `\\?";
        let mut filters = parse_filters("event:page==a;visit:source~b;event:props:c!=d").unwrap();
        for f in &mut filters {
            f.values = vec![hostile.into(), "2".into()];
            if let Property::Event(EventProperty::Prop(name)) = &mut f.property {
                *name = hostile.into();
            }
        }
        let q = StatsQuery {
            database: "glimpse",
            site: hostile,
            timezone: "UTC",
            start: 0,
            end: 10,
            group: Group::Property(Property::Event(EventProperty::Prop(hostile.into()))),
            filters: &filters,
            min_group_size: 3,
            sort: None,
            metrics: &Metric::ALL,
            goals: &[],
            page: Some((10, 0)),
            imported: false,
            rolled: &[],
        };
        let sql = stats(&q);
        assert!(!sql.template.contains("DROP"), "{}", sql.template);
        assert!(!sql.template.contains("OR 1=1"));
        let text = sql.final_text();
        assert!(
            text.contains(r"'x\') OR 1=1 -- ; DROP TABLE glimpse.events; \`\\?'"),
            "{text}"
        );
    }
}
