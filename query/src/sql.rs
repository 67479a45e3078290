//! The SQL builder. Identifiers come only from the whitelists below (the database name is
//! validated by the configuration); every value a client sent is a bound `?` parameter, escaped
//! by the `clickhouse` crate. Templates never contain a `?` of their own.
//!
//! Every statement runs on ClickHouse 18.16 and on current versions: no window functions, no
//! `WITH FILL`, no `toStartOfInterval`; time zones only as the explicit argument of
//! `toDate`/`toMonday`/`toStartOfMonth`/`formatDateTime`, which 18.16 honours.
//!
//! One statement answers aggregate, timeseries and breakdown alike:
//!
//! ```text
//! SELECT <key>, uniqExact(visitor), count() AS visits, sums…
//! FROM (  -- l: one row per (visit, key) with that visit's matching events' counts
//!         SELECT session_id, lkey, … FROM (one row per (visit, key, page)) GROUP BY …
//!      ) AS l
//! ANY INNER JOIN
//!      (  -- r: one row per visit in the range: entry/exit page, source, place, device…,
//!         --    bounce and duration; visit filters are its HAVING
//!      ) AS r USING session_id
//! GROUP BY key
//! ```
//!
//! Event filters narrow `l` (so `pageviews` counts only matching page views, while bounce rate
//! and duration describe the whole visits that had one), visit filters narrow `r`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::params::{EventProperty, Filter, FilterOp, Interval, Property, SortKey, VisitProperty};
use crate::params::{Metric, Sort};
use crate::period::{HOUR_FORMAT, MINUTE_FORMAT};

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
    /// `(limit, offset)`.
    pub page: Option<(u64, u64)>,
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

/// `StatsRow`'s columns after `key`: name and aggregate over the joined visits.
const AGGREGATES: [(&str, &str); 10] = [
    ("visitors", "uniqExact(l_visitor)"),
    ("visits", "count()"),
    ("pageviews", "sum(m_pageviews)"),
    ("events", "sum(m_events)"),
    ("visit_pageviews", "sum(s_pageviews)"),
    ("bounces", "sum(s_bounce)"),
    ("duration", "sum(s_duration)"),
    ("engaged_pages", "sum(m_engaged_pages)"),
    ("engaged_ms", "sum(m_engaged_ms)"),
    ("scroll_sum", "sum(m_scroll)"),
];

/// The aggregate over a visit's events (engagement excluded) that gives a visit property.
fn visit_expression(p: VisitProperty) -> String {
    let first = |column: &str| format!("argMin({column}, timestamp)");
    let raw = match p {
        VisitProperty::EntryPage => "argMinIf(pathname, timestamp, name = 'pageview')".into(),
        VisitProperty::ExitPage => "argMaxIf(pathname, timestamp, name = 'pageview')".into(),
        VisitProperty::Source => first("referrer_source"),
        VisitProperty::Referrer => first("referrer"),
        VisitProperty::UtmSource => first("utm_source"),
        VisitProperty::UtmMedium => first("utm_medium"),
        VisitProperty::UtmCampaign => first("utm_campaign"),
        VisitProperty::UtmTerm => first("utm_term"),
        VisitProperty::UtmContent => first("utm_content"),
        VisitProperty::Country => first("country"),
        VisitProperty::Region => first("region"),
        VisitProperty::City => first("city"),
        VisitProperty::Device => first("device"),
        VisitProperty::Browser => first("browser"),
        VisitProperty::BrowserVersion => first("browser_version"),
        VisitProperty::Os => first("os"),
        VisitProperty::OsVersion => first("os_version"),
    };
    // Plausible names a visit without source "Direct / None"; other empty values are "(none)".
    let empty = if matches!(p, VisitProperty::Source | VisitProperty::Referrer) {
        "Direct / None"
    } else {
        "(none)"
    };
    format!("if(empty({raw}), '{empty}', {raw})")
}

fn visit_alias(p: VisitProperty) -> String {
    format!("s_{}", p.name())
}

/// The expression for an event property, over one event's columns.
fn event_expression(sql: &mut Sql, p: &EventProperty) {
    match p {
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

fn time_range(sql: &mut Sql, q: &StatsQuery) {
    sql.push("site = ")
        .bind_str(q.site)
        .push(" AND timestamp >= toDateTime(")
        .bind_int(q.start)
        .push(") AND timestamp < toDateTime(")
        .bind_int(q.end)
        .push(")");
}

/// The bucket label of an event's timestamp in the site's time zone.
fn bucket_expression(sql: &mut Sql, interval: Interval, timezone: &str) {
    match interval {
        Interval::Minute => {
            let _ = write!(
                sql.template,
                "formatDateTime(timestamp, '{MINUTE_FORMAT}', "
            );
        }
        Interval::Hour => {
            let _ = write!(sql.template, "formatDateTime(timestamp, '{HOUR_FORMAT}', ");
        }
        Interval::Date => {
            sql.push("toString(toDate(timestamp, ");
        }
        Interval::Week => {
            sql.push("toString(toMonday(timestamp, ");
        }
        Interval::Month => {
            sql.push("toString(toStartOfMonth(timestamp, ");
        }
    }
    sql.bind_str(timezone);
    sql.push(if matches!(interval, Interval::Minute | Interval::Hour) {
        ")"
    } else {
        "))"
    });
}

/// `FROM l ANY INNER JOIN r USING session_id`, the source of every stats statement.
fn from_visits(sql: &mut Sql, q: &StatsQuery) {
    let db = q.database;
    // Visit properties the statement needs: the breakdown's and the filters'.
    let mut visit_props = BTreeSet::new();
    if let Group::Property(Property::Visit(p)) = &q.group {
        visit_props.insert(*p);
    }
    for f in q.filters {
        if let Property::Visit(p) = &f.property {
            visit_props.insert(*p);
        }
    }

    // l: (visit, key, page) → (visit, key).
    sql.push("FROM (SELECT session_id, lkey, any(i_visitor) AS l_visitor, ");
    sql.push(
        "sum(i_pageviews) AS m_pageviews, sum(i_events) AS m_events, \
         sum(i_engaged) AS m_engaged_pages, sum(i_ms) AS m_engaged_ms, sum(i_scroll) AS m_scroll \
         FROM (SELECT session_id, ",
    );
    match &q.group {
        Group::Bucket(interval) => bucket_expression(sql, *interval, q.timezone),
        Group::Property(Property::Event(p)) => event_expression(sql, p),
        Group::Total | Group::Property(Property::Visit(_)) => {
            sql.push("''");
        }
    }
    sql.push(
        " AS lkey, pathname AS i_page, any(visitor_id) AS i_visitor, \
         countIf(name = 'pageview') AS i_pageviews, countIf(name != 'engagement') AS i_events, \
         toUInt64(countIf(name = 'engagement') > 0) AS i_engaged, \
         sumIf(engagement_ms, name = 'engagement') AS i_ms, \
         maxIf(scroll_depth, name = 'engagement') AS i_scroll ",
    );
    let _ = write!(sql.template, "FROM {db}.events WHERE ");
    time_range(sql, q);
    for f in q.filters {
        let Property::Event(p) = &f.property else {
            continue;
        };
        sql.push(" AND ");
        if *p == EventProperty::Name {
            // Engagement reports belong to their page view, whatever its name filter says, so
            // that time on page and scroll depth survive; they are not counted as events.
            sql.push("(name = 'engagement' OR ");
            condition(sql, f, &|s: &mut Sql| event_expression(s, p));
            sql.push(")");
        } else {
            condition(sql, f, &|s: &mut Sql| event_expression(s, p));
        }
    }
    sql.push(
        " GROUP BY session_id, lkey, i_page) \
         GROUP BY session_id, lkey HAVING m_events > 0) AS l ",
    );

    // r: one row per visit.
    sql.push("ANY INNER JOIN (SELECT session_id, ");
    for p in &visit_props {
        let _ = write!(
            sql.template,
            "{} AS {}, ",
            visit_expression(*p),
            visit_alias(*p)
        );
    }
    sql.push(
        "countIf(name = 'pageview') AS s_pageviews, \
         (countIf(name = 'pageview') <= 1 AND countIf(name != 'pageview' AND interactive = 1) = 0) \
         AS s_bounce, \
         toUInt32(max(timestamp)) - toUInt32(min(timestamp)) AS s_duration ",
    );
    let _ = write!(sql.template, "FROM {db}.events WHERE ");
    time_range(sql, q);
    sql.push(" AND name != 'engagement' GROUP BY session_id");
    let mut first = true;
    for f in q.filters {
        let Property::Visit(p) = &f.property else {
            continue;
        };
        sql.push(if first { " HAVING " } else { " AND " });
        first = false;
        let alias = visit_alias(*p);
        condition(sql, f, &|s: &mut Sql| {
            s.push(&alias);
        });
    }
    sql.push(") AS r USING session_id");
}

/// The key column before `(other)` merging.
fn raw_key(group: &Group) -> String {
    match group {
        Group::Property(Property::Visit(p)) => visit_alias(*p),
        Group::Total => "''".into(),
        _ => "lkey".into(),
    }
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
        },
    }
}

/// The statement for one stats question; its rows are [`StatsRow`]s.
pub fn stats(q: &StatsQuery) -> Sql {
    let mut sql = Sql::default();
    let raw = raw_key(&q.group);
    let k = q.min_group_size;
    if k > 0 && matches!(q.group, Group::Property(_)) {
        // Keys with at least k visitors keep their name; the rest merge into one "(other)"
        // row. Visitors are merged as uniqExact states, so a visitor in two small groups counts
        // once. (18.16 cannot run an `IN (subquery)` over this join, and this needs one pass.)
        sql.push("SELECT if(k_visitors >= ")
            .bind_int(k.min(i64::MAX as u64) as i64)
            .push(", k_key, '(other)') AS key, toUInt64(uniqExactMerge(k_state)) AS visitors");
        for (name, _) in &AGGREGATES[1..] {
            let _ = write!(sql.template, ", toUInt64(sum(k_{name})) AS {name}");
        }
        let _ = write!(
            sql.template,
            " FROM (SELECT {raw} AS k_key, uniqExactState(l_visitor) AS k_state, \
             uniqExact(l_visitor) AS k_visitors"
        );
        for (name, aggregate) in &AGGREGATES[1..] {
            let _ = write!(sql.template, ", {aggregate} AS k_{name}");
        }
        sql.push(" ");
        from_visits(&mut sql, q);
        sql.push(" GROUP BY k_key)");
    } else {
        let _ = write!(sql.template, "SELECT {raw} AS key");
        for (name, aggregate) in AGGREGATES {
            let _ = write!(sql.template, ", toUInt64({aggregate}) AS {name}");
        }
        sql.push(" ");
        from_visits(&mut sql, q);
    }
    sql.push(" GROUP BY key");
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
            page: Some((10, 0)),
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
