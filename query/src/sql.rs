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

use std::fmt::Write as _;

use crate::params::{EventProperty, Filter, FilterOp, Interval, Property, SortKey, VisitProperty};
use crate::params::{Metric, Sort};
use crate::period::{HOUR_FORMAT, MINUTE_FORMAT};
use glimpse_core::goals::{Goal, GoalKind};

/// A value bound to a `?` of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// A statement with `?` placeholders and the values bound to them, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sql {
    pub template: String,
    pub binds: Vec<Value>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.template.push_str(text);
        self
    }

    fn bind_str(&mut self, value: &str) -> &mut Self {
        self.template.push('?');
        self.binds.push(Value::Str(value.to_string()));
        self
    }

    fn bind_int(&mut self, value: i64) -> &mut Self {
        self.template.push('?');
        self.binds.push(Value::Int(value));
        self
    }

    /// A `clickhouse` query with every value bound.
    pub fn query(&self, client: &clickhouse::Client) -> clickhouse::query::Query {
        let mut query = client.query(&self.template);
        for value in &self.binds {
            query = match value {
                Value::Str(s) => query.bind(s.as_str()),
                Value::Int(n) => query.bind(*n),
            };
        }
        query
    }

    /// The final text ClickHouse receives (before the crate appends `FORMAT RowBinary`),
    /// with values inlined by the crate's own escaping.
    pub fn final_text(&self) -> String {
        let client = clickhouse::Client::default();
        self.query(&client).sql_display().to_string()
    }
}

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
    /// statement reads those instead of their events where it can (see [`rollup_answers`]).
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

/// Longest a visit lasts (the collector starts a new one after): how far after a period's end
/// the rows of a visit that started in it can reach.
const MAX_VISIT_SECS: i64 = glimpse_core::visit::MAX_VISIT_SECS as i64;

/// Whether answering `metric` needs the visits of the period (not only its events).
fn is_visit_metric(metric: Metric) -> bool {
    matches!(
        metric,
        Metric::Visits | Metric::ViewsPerVisit | Metric::BounceRate | Metric::VisitDuration
    )
}

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
fn visit_value(p: VisitProperty) -> String {
    named_empty(p, visit_column(p).unwrap_or(EXIT_PAGE))
}

/// `expr`, a value of visit property `p`, with an empty value named: "Direct / None" for a
/// visit without source or referrer, else "(none)".
fn named_empty(p: VisitProperty, expr: &str) -> String {
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
fn event_expression(sql: &mut Sql, p: &EventProperty, goals: &[Goal]) {
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

/// `site = ? AND` rows with `from <= timestamp < to`, with the day bounds spelled out so that
/// ClickHouse 18.16 narrows the scan by the table's `toDate(timestamp)` key, which it does not
/// derive from a `timestamp` range alone (the server's time zone, like the key's).
fn rows_between(sql: &mut Sql, site: &str, from: i64, to: i64) {
    sql.push("site = ").bind_str(site).push(" AND ");
    timestamps_between(sql, from, to);
}

/// `from <= timestamp < to`, with the day bounds spelled out (see `rows_between`).
fn timestamps_between(sql: &mut Sql, from: i64, to: i64) {
    sql.push("toDate(timestamp) >= toDate(toDateTime(")
        .bind_int(from)
        .push(")) AND toDate(timestamp) <= toDate(toDateTime(")
        .bind_int(to - 1)
        .push(")) AND timestamp >= toDateTime(")
        .bind_int(from)
        .push(") AND timestamp < toDateTime(")
        .bind_int(to)
        .push(")");
}

/// The events of the period.
fn event_rows(sql: &mut Sql, q: &StatsQuery) {
    rows_between(sql, q.site, q.start, q.end);
}

/// Every row of the visits that started in the period, including those after its end.
fn visit_rows(sql: &mut Sql, q: &StatsQuery) {
    rows_between(sql, q.site, q.start, q.end + MAX_VISIT_SECS);
    sql.push(" AND ");
    started_in_period(sql, q);
}

/// Whether a row's visit started in the period.
fn started_in_period(sql: &mut Sql, q: &StatsQuery) {
    sql.push("visit_start >= toDateTime(")
        .bind_int(q.start)
        .push(") AND visit_start < toDateTime(")
        .bind_int(q.end)
        .push(")");
}

/// ` AND …` for each visit filter: a row condition on the stamped properties, or for the exit
/// page, membership of the visits whose last page view matches.
fn visit_conditions(sql: &mut Sql, q: &StatsQuery) {
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
fn event_conditions(sql: &mut Sql, q: &StatsQuery) {
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

fn has_event_filters(q: &StatsQuery) -> bool {
    q.filters
        .iter()
        .any(|f| matches!(f.property, Property::Event(_)))
}

/// With event filters, ` AND session_id IN (visits of the period with a matching event)`.
fn matching_visits(sql: &mut Sql, q: &StatsQuery) {
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
fn key_expression(sql: &mut Sql, q: &StatsQuery, of_visit: bool) {
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

/// The `StatsRow` columns after `visitors`, each with the column of a pass it comes from: `e`
/// fills the event ones, `v` the visit ones.
const SUMS: [(&str, &str); 9] = [
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
struct Needs {
    /// Visit figures (visits, bounces, durations, their page views).
    visits: bool,
    /// Engagement reports (time on page, scroll depth).
    engagement: bool,
    /// Mergeable visitor states, for `(other)` rows.
    states: bool,
}

impl Needs {
    fn of(q: &StatsQuery) -> Needs {
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

/// The imported aggregates that answer a question: the export's table (`kind`) and the key
/// over its columns, written like the live key (`visit_value`'s names for empty values).
/// `None` where the export has nothing for it: filtered questions (its rows are per one
/// dimension, so they cannot be narrowed by another), hours and minutes (its rows are days),
/// and the properties it does not export (city, host name, custom properties, goals).
fn imported_table(group: &Group, filters: &[Filter]) -> Option<(&'static [&'static str], String)> {
    if !filters.is_empty() {
        return None;
    }
    match group {
        Group::Total => Some((&["visitors"], "''".to_string())),
        Group::Bucket(Interval::Date) => Some((&["visitors"], "toString(date)".to_string())),
        Group::Bucket(Interval::Week) => {
            Some((&["visitors"], "toString(toMonday(date))".to_string()))
        }
        Group::Bucket(Interval::Month) => {
            Some((&["visitors"], "toString(toStartOfMonth(date))".to_string()))
        }
        Group::Bucket(Interval::Hour | Interval::Minute) => None,
        Group::Property(Property::Event(EventProperty::Page)) => {
            Some((&["pages"], "page".to_string()))
        }
        // Custom events, and page views as the `pageview` event.
        Group::Property(Property::Event(EventProperty::Name)) => Some((
            &["custom_events", "visitors"],
            "if(kind = 'visitors', 'pageview', name)".to_string(),
        )),
        Group::Property(Property::Event(_)) => None,
        Group::Property(Property::Visit(p)) => {
            let kind: &'static [&'static str] = match p {
                VisitProperty::EntryPage => &["entry_pages"],
                VisitProperty::ExitPage => &["exit_pages"],
                VisitProperty::Source
                | VisitProperty::Referrer
                | VisitProperty::UtmSource
                | VisitProperty::UtmMedium
                | VisitProperty::UtmCampaign
                | VisitProperty::UtmTerm
                | VisitProperty::UtmContent => &["sources"],
                VisitProperty::Country | VisitProperty::Region => &["locations"],
                VisitProperty::City => return None,
                VisitProperty::Device => &["devices"],
                VisitProperty::Browser | VisitProperty::BrowserVersion => &["browsers"],
                VisitProperty::Os | VisitProperty::OsVersion => &["operating_systems"],
            };
            // `imported_daily` names its dimension columns as the API names the properties.
            Some((kind, named_empty(*p, p.name())))
        }
    }
}

/// Whether imported aggregates can be added to the answer of a question grouped by `group`
/// with `filters` (see [`imported_table`]).
pub fn imported_answers(group: &Group, filters: &[Filter]) -> bool {
    imported_table(group, filters).is_some()
}

/// `i`: the imported aggregates of the period's days by key. A table contributes only the
/// figures it has in full: visit figures (visits, their page views, bounces, durations) come
/// from the tables that export all four, so that rates are never diluted; the pages and
/// custom events tables add visitors and counts only. Engagement (time on page, scroll depth)
/// is not imported.
fn imported_pass(sql: &mut Sql, q: &StatsQuery) {
    let Some((kinds, key)) = imported_table(&q.group, q.filters) else {
        return;
    };
    let visit_figures = !kinds.contains(&"pages") && !kinds.contains(&"custom_events");
    let _ = write!(
        sql.template,
        "SELECT {key} AS key, sum(visitors) AS i_visitors,          sum(if(kind = 'custom_events', 0, pageviews)) AS i_pageviews,          sum(if(kind = 'custom_events', events, pageviews)) AS i_events, "
    );
    if visit_figures {
        sql.push(
            "sum(visits) AS i_visits, sum(pageviews) AS i_visit_pageviews,              sum(bounces) AS i_bounces, sum(visit_duration) AS i_duration ",
        );
    } else {
        sql.push(
            "toUInt64(0) AS i_visits, toUInt64(0) AS i_visit_pageviews,              toUInt64(0) AS i_bounces, toUInt64(0) AS i_duration ",
        );
    }
    let _ = write!(
        sql.template,
        "FROM {}.imported_daily WHERE site = ",
        q.database
    );
    sql.bind_str(q.site).push(" AND kind IN (");
    for (i, kind) in kinds.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind_str(kind);
    }
    // The site's days that lie in the period.
    sql.push(") AND date >= toDate(toDateTime(")
        .bind_int(q.start)
        .push("), ")
        .bind_str(q.timezone)
        .push(") AND date < toDate(toDateTime(")
        .bind_int(q.end)
        .push("), ")
        .bind_str(q.timezone)
        .push(") GROUP BY key");
}

/// The imported column added to each `SUMS` column, if any.
fn imported_column(column: &str) -> Option<&'static str> {
    Some(match column {
        "v_visits" => "i_visits",
        "e_pageviews" => "i_pageviews",
        "e_events" => "i_events",
        "v_visit_pageviews" => "i_visit_pageviews",
        "v_bounces" => "i_bounces",
        "v_duration" => "i_duration",
        _ => return None,
    })
}

/// The statement's source: one row per key with `key`, `e_visitors`, `e_state` (with
/// `(other)` rows) and the columns of `SUMS`; with imports, the live figures plus the
/// imported ones (and `i_visitors`, for `(other)` rows).
fn source(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
    if !q.imported || !imported_answers(&q.group, q.filters) {
        live_source(sql, q, needs);
        return;
    }
    // The live columns renamed (`l_…`), so that the sums can take the usual names.
    sql.push("(SELECT key, l_visitors + i_visitors AS e_visitors, i_visitors");
    if needs.states {
        sql.push(", l_state AS e_state");
    }
    for (_, column) in SUMS {
        match imported_column(column) {
            Some(imported) => {
                let _ = write!(sql.template, ", l_{column} + {imported} AS {column}");
            }
            None => {
                let _ = write!(sql.template, ", l_{column} AS {column}");
            }
        }
    }
    sql.push(" FROM (SELECT key, e_visitors AS l_visitors");
    if needs.states {
        sql.push(", e_state AS l_state");
    }
    for (_, column) in SUMS {
        let _ = write!(sql.template, ", {column} AS l_{column}");
    }
    sql.push(" FROM ");
    live_source(sql, q, needs);
    sql.push(") AS l ALL FULL OUTER JOIN (");
    imported_pass(sql, q);
    sql.push(") AS i USING key)");
}

/// The live source: `source` without imports; with rolled days, the rollup's figures for them
/// added to those of the other days' events. Visitors add up because visitor ids of different
/// days never meet (the id's salt is the day's, and a visit keeps its first day's id).
fn live_source(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
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

/// `live_source` from events only (the rolled days' rows left out, if any).
fn raw_source(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
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

/// Seconds of a UTC day: rolled days are UTC days since 1970.
pub const DAY: i64 = 86_400;

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
fn rollup_answers(q: &StatsQuery, needs: Needs) -> bool {
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

/// Runs of consecutive days in sorted `days`, as `(first, last)`.
pub fn day_runs(days: &[i64]) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &d in days {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == d => *last = d,
            _ => runs.push((d, d)),
        }
    }
    runs
}

/// ` AND …` leaving the rolled days' visits out of a pass over events: by their `visit_start`,
/// and (so that ClickHouse skips them by its key) the days of timestamps that hold nothing
/// else. Day t holds rows of visits started on days t - 1 and t only.
fn not_rolled(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
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

/// `day` within the runs of `days` (UTC days).
fn days_condition(sql: &mut Sql, days: &[i64]) {
    sql.push("(");
    for (i, (first, last)) in day_runs(days).into_iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        day_range(sql, first, last);
    }
    sql.push(")");
}

/// `first <= day <= last` (UTC days).
fn day_range(sql: &mut Sql, first: i64, last: i64) {
    sql.push("day >= toDate(toDateTime(")
        .bind_int(first * DAY)
        .push("), 'UTC') AND day <= toDate(toDateTime(")
        .bind_int(last * DAY)
        .push("), 'UTC')");
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

/// The `INSERT` of build `version` of `site`'s per-day figures for one grouping of the rollup,
/// for the UTC days `first..=last`: every row of the visits started on those days.
pub fn rollup_build(
    database: &str,
    site: &str,
    (first, last): (i64, i64),
    version: u64,
    property: &str,
    group: &Group,
) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "INSERT INTO {database}.rollup_daily (site, property, day, version, key, visitors, \
         pageviews, events, visits, visit_pageviews, bounces, duration) SELECT "
    );
    sql.bind_str(site)
        .push(", ")
        .bind_str(property)
        .push(", day, toUInt64(")
        .bind_int(i64::try_from(version).unwrap_or(i64::MAX))
        .push("), key, ");
    let exit = *group == Group::Property(Property::Visit(VisitProperty::ExitPage));
    if exit {
        // As `exit_page_pass`: each visit's figures under its last page view.
        let _ = write!(
            sql.template,
            "uniqExact(x_visitor), sum(x_pageviews), sum(x_events), count(), sum(x_pageviews), \
             sum(x_bounce), sum(x_duration) FROM (SELECT session_id, any(visitor_id) AS x_visitor, \
             toDate(any(visit_start), 'UTC') AS day, {} AS key, \
             countIf(name = 'pageview') AS x_pageviews, count() AS x_events, \
             sum(visit_bounce) AS x_bounce, sum(visit_duration) AS x_duration, \
             sum(visit_entry) AS x_entry",
            visit_value(VisitProperty::ExitPage)
        );
    } else {
        sql.push(
            "uniqExact(visitor_id), countIf(name = 'pageview'), count(), sum(visit_entry), \
             countIf(name = 'pageview'), sum(visit_bounce), sum(visit_duration) FROM (SELECT \
             visitor_id, name, visit_entry, visit_bounce, visit_duration, \
             toDate(visit_start, 'UTC') AS day, ",
        );
        match group {
            Group::Property(Property::Visit(p)) => {
                sql.push(&visit_value(*p));
            }
            Group::Property(Property::Event(EventProperty::Page)) => {
                sql.push("pathname");
            }
            _ => {
                sql.push("''");
            }
        }
        sql.push(" AS key");
    }
    let _ = write!(sql.template, " FROM {database}.events WHERE ");
    rows_between(&mut sql, site, first * DAY, (last + 2) * DAY);
    sql.push(" AND visit_start >= toDateTime(")
        .bind_int(first * DAY)
        .push(") AND visit_start < toDateTime(")
        .bind_int((last + 1) * DAY)
        .push(") AND name != 'engagement'");
    sql.push(if exit {
        " GROUP BY session_id HAVING x_entry > 0) GROUP BY day, key"
    } else {
        ") GROUP BY day, key"
    });
    sql
}

/// What the rollup of each site and UTC day (`YYYY-MM-DD`) is built from, for visits started
/// before `until`: the number of rows and a checksum of their visitor ids (rows of a day
/// arriving late, erased or expired change one or the other).
pub fn rollup_fingerprints(database: &str, until: i64) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT toString(site), toString(toDate(visit_start, 'UTC')) AS day, count(), \
         sum(visitor_id) FROM {database}.events WHERE name != 'engagement' AND \
         visit_start >= toDateTime(86400) AND visit_start < toDateTime("
    );
    sql.bind_int(until).push(") GROUP BY site, day");
    sql
}

/// The newest complete build of every rolled day: site, day, version and what it was built from.
pub fn rollup_manifest(database: &str) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT toString(site), toString(day), max(version), argMax(rows, version), \
         argMax(checksum, version) FROM {database}.rollup_days GROUP BY site, day"
    );
    sql
}

/// The `ALTER TABLE … DELETE`s of a site's rollup for `days`: all builds, or only those older
/// than `below_version`. The listing (`rollup_days`) goes first, so that no reader takes a day
/// whose figures are being deleted.
pub fn rollup_deletes(
    database: &str,
    site: &str,
    days: &[i64],
    below_version: Option<u64>,
) -> [Sql; 2] {
    ["rollup_days", "rollup_daily"].map(|table| {
        let mut sql = Sql::default();
        let _ = write!(
            sql.template,
            "ALTER TABLE {database}.{table} DELETE WHERE site = "
        );
        sql.bind_str(site).push(" AND ");
        days_condition(&mut sql, days);
        if let Some(version) = below_version {
            sql.push(" AND version < ")
                .bind_int(i64::try_from(version).unwrap_or(i64::MAX));
        }
        sql
    })
}

/// A site's rolled days (`YYYY-MM-DD`) from `first` to `last` (UTC days).
pub fn rolled_days(database: &str, site: &str, first: i64, last: i64) -> Sql {
    let mut sql = Sql::default();
    let _ = write!(
        sql.template,
        "SELECT DISTINCT toString(day) FROM {database}.rollup_days WHERE site = "
    );
    sql.bind_str(site).push(" AND ");
    day_range(&mut sql, first, last);
    sql
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::parse_filters;

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
    fn days_come_in_runs() {
        assert_eq!(day_runs(&[]), vec![]);
        assert_eq!(
            day_runs(&[3, 4, 5, 7, 9, 10]),
            vec![(3, 5), (7, 7), (9, 10)]
        );
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
