//! The stats statement: one question (`StatsQuery`) read in at most two passes over the events
//! (see the `sql` module), its rows `StatsRow`s.

use std::fmt::Write as _;

use super::builder::Sql;
use super::imported::{imported_answers, source};
pub use super::question::{Group, StatsQuery, StatsRow};
use super::question::{Needs, SUMS};
use crate::params::{Metric, SortKey};

/// What ORDER BY sorts on for a sort key: whitelisted expressions over the output columns.
fn sort_expression(key: SortKey, group: &Group) -> String {
    match (key, group) {
        // Each part of a tuple key is escaped in an order-keeping way: it sorts as its value.
        (SortKey::Part(i), Group::Tuple(_)) => {
            format!("splitByString('\\x01\\x02', key)[{}]", i + 1)
        }
        (SortKey::Property | SortKey::Part(_), _) => "key".to_string(),
        (SortKey::Metric(m), _) => metric_sort_expression(m).to_string(),
    }
}

fn metric_sort_expression(m: Metric) -> &'static str {
    match m {
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
    }
}

/// The number of rows `stats` (a stats statement) returns, as one `UInt64`.
pub fn row_count(stats: &Sql) -> Sql {
    Sql {
        template: format!("SELECT toUInt64(count()) AS rows FROM ({})", stats.template),
        binds: stats.binds.clone(),
    }
}

/// The statement for one stats question; its rows are [`StatsRow`]s.
pub fn stats(q: &StatsQuery) -> Sql {
    let mut sql = Sql::default();
    let k = q.min_group_size;
    let needs = Needs::of(q);
    // A sample of 1 in N visitors: every count times N (rates and averages, quotients of two
    // counts, come out the same). The `(other)` threshold compares the sampled visitors: a
    // key shown then has at least k real visitors too.
    let scale = match q.sample {
        Some(n) if n > 1 => format!(" * {n}"),
        _ => String::new(),
    };
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
                ", s_key, '(other)') AS key, toUInt64(uniqMerge(e_state)"
            });
        if !imported {
            let _ = write!(sql.template, "{scale}) AS visitors");
        }
        for (name, column) in SUMS {
            let _ = write!(sql.template, ", toUInt64(sum({column}){scale}) AS {name}");
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
        only_keys(&mut sql, q.keys);
        sql.push(") GROUP BY key");
    } else {
        let _ = write!(
            sql.template,
            "SELECT key, toUInt64(e_visitors{scale}) AS visitors"
        );
        for (name, column) in SUMS {
            let _ = write!(
                sql.template,
                ", toUInt64(greatest({column}, 0){scale}) AS {name}"
            );
        }
        sql.push(" FROM ");
        source(&mut sql, q, needs);
        only_keys(&mut sql, q.keys);
    }
    if !q.sort.is_empty() {
        sql.push(" ORDER BY ");
        for sort in q.sort {
            let direction = if sort.descending { "DESC" } else { "ASC" };
            let _ = write!(
                sql.template,
                "{} {direction}, ",
                sort_expression(sort.key, &q.group)
            );
        }
        sql.push("key ASC");
    }
    if let Some((limit, offset)) = q.page {
        sql.push(" LIMIT ")
            .bind_int(limit as i64)
            .push(" OFFSET ")
            .bind_int(offset as i64);
    }
    sql
}

/// `WHERE key IN (…)` after the source, each key bound; nothing for `None`. An empty list
/// keeps no row.
fn only_keys(sql: &mut Sql, keys: Option<&[String]>) {
    let Some(keys) = keys else { return };
    if keys.is_empty() {
        // `IN ()` is not SQL.
        sql.push(" WHERE 0");
        return;
    }
    sql.push(" WHERE key IN (");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind_str(key);
    }
    sql.push(")");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{parse_filters, Condition, EventProperty, Property};

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
        let filters: Vec<Condition> = filters.into_iter().map(Condition::from).collect();
        let q = StatsQuery {
            database: "glimpse",
            site: hostile,
            timezone: "UTC",
            start: 0,
            end: 10,
            group: Group::Property(Property::Event(EventProperty::Prop(hostile.into()))),
            filters: &filters,
            min_group_size: 3,
            sort: &[],
            metrics: &Metric::ALL,
            goals: &[],
            page: Some((10, 0)),
            imported: false,
            rolled: &[],
            keys: Some(&[hostile.to_string()]),
            sample: None,
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
