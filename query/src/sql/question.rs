//! One stats question in SQL terms (`StatsQuery`), the rows every stats statement returns
//! (`StatsRow`), and what a statement must compute for it (`Needs`).

use crate::params::{Condition, Interval, Metric, Property, Sort, SortKey};
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
    /// A breakdown by several parts (Stats API v2's dimensions), each a `Bucket` or a
    /// `Property`: the key joins the parts' values (see [`join_key`]).
    Tuple(Vec<Group>),
}

/// Between the parts of a `Tuple` key. A part's own \x01 bytes are written \x01\x03, so
/// that the separator \x01\x02 never occurs inside a part and keys split back exactly. Not
/// NUL: statements travel as C strings in places (chdb).
const KEY_SEPARATOR: &str = "\x01\x02";
pub(super) const ESCAPE: char = '\x01';
const ESCAPED: &str = "\x01\x03";

/// The parts of a `Tuple` key, `parts` of them; `(other)` (rows under the threshold merged)
/// is `(other)` in every part.
pub fn split_key(key: &str, parts: usize) -> Vec<String> {
    if key == "(other)" {
        return vec![key.to_string(); parts];
    }
    key.split(KEY_SEPARATOR)
        .map(|part| part.replace(ESCAPED, &ESCAPE.to_string()))
        .collect()
}

/// The key of a `Tuple` row whose parts are `parts`, as the statement writes it.
#[cfg(test)]
pub fn join_key(parts: &[String]) -> String {
    parts
        .iter()
        .map(|p| p.replace(ESCAPE, ESCAPED))
        .collect::<Vec<_>>()
        .join(KEY_SEPARATOR)
}

impl Group {
    /// Whether an event property is (part of) the key: visits then count once per key among
    /// their events.
    pub fn has_event_part(&self) -> bool {
        match self {
            Group::Property(Property::Event(_)) => true,
            Group::Tuple(parts) => parts.iter().any(Group::has_event_part),
            _ => false,
        }
    }

    /// Whether every row of a visit has the same key, for events as for visits: the total,
    /// and visit properties stamped on every row.
    pub fn is_shared_by_visit(&self) -> bool {
        match self {
            Group::Total | Group::Property(Property::Visit(_)) => true,
            Group::Tuple(parts) => parts
                .iter()
                .all(|p| matches!(p, Group::Property(Property::Visit(_)))),
            Group::Bucket(_) | Group::Property(Property::Event(_)) => false,
        }
    }
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
    /// Joined by `and`.
    pub filters: &'a [Condition],
    /// Breakdown rows with fewer visitors merge into `(other)`; 0 is off.
    pub min_group_size: u64,
    /// By each in turn, then by the key.
    pub sort: &'a [Sort],
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
    /// Only the rows of these keys (a breakdown's comparison: the keys of the page it
    /// compares); `None`: every key.
    pub keys: Option<&'a [String]>,
    /// Read only 1 in N visitors (`sampled_visitors`) and scale counts by N; `None`: every
    /// row. Never with rolled days or imported aggregates, which are exact (the caller checks).
    pub sample: Option<u64>,
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
        let sorted_by = q.sort.iter().filter_map(|s| match s {
            Sort {
                key: SortKey::Metric(m),
                ..
            } => Some(*m),
            _ => None,
        });
        let asked =
            |f: fn(Metric) -> bool| q.metrics.iter().copied().chain(sorted_by.clone()).any(f);
        Needs {
            visits: asked(is_visit_metric),
            engagement: asked(|m| matches!(m, Metric::TimeOnPage | Metric::ScrollDepth)),
            states: q.min_group_size > 0 && matches!(q.group, Group::Property(_) | Group::Tuple(_)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_keys_split_back_exactly() {
        for parts in [
            vec!["Google".to_string(), "DE".to_string()],
            vec!["".to_string(), "".to_string(), "".to_string()],
            vec![
                "a\x01b".to_string(),
                "\x01\x02".to_string(),
                "c\x01".to_string(),
            ],
        ] {
            let key = join_key(&parts);
            assert_eq!(split_key(&key, parts.len()), parts, "{key:?}");
        }
        assert_eq!(split_key("(other)", 2), ["(other)", "(other)"]);
        // Keys sort as the tuples of their parts.
        let a = join_key(&["a".into(), "z".into()]);
        let b = join_key(&["a b".into(), "a".into()]);
        assert!(a < b);
    }
}
