//! Imported data (`imported_daily`, from a Plausible export): which questions its daily
//! per-dimension totals can answer, and the pass that adds them to the live figures.

use std::fmt::Write as _;

use super::builder::Sql;
use super::expr::named_empty;
use super::question::{Group, Needs, StatsQuery, SUMS};
use super::rolled::live_source;
use crate::params::{Condition, EventProperty, Interval, Property, VisitProperty};

/// The imported aggregates that answer a question: the export's table (`kind`) and the key
/// over its columns, written like the live key (`visit_value`'s names for empty values).
/// `None` where the export has nothing for it: filtered questions (its rows are per one
/// dimension, so they cannot be narrowed by another), hours and minutes (its rows are days),
/// and the properties it does not export (city, host name, custom properties, goals).
fn imported_table(
    group: &Group,
    filters: &[Condition],
) -> Option<(&'static [&'static str], String)> {
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
        // Imported tables hold one property each: no combinations.
        Group::Property(Property::Event(_)) | Group::Tuple(_) => None,
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
pub fn imported_answers(group: &Group, filters: &[Condition]) -> bool {
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
pub(super) fn source(sql: &mut Sql, q: &StatsQuery, needs: Needs) {
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
