//! Expected numbers, computed from the fixture in plain Rust.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use glimpse_core::schema::EventRow;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde_json::{json, Value};

/// A visit, from all its events (of any period): properties, start and figures computed
/// directly from the events, not from the visit columns the collector stamps.
struct Visit<'a> {
    visitor: u64,
    props: HashMap<&'static str, String>,
    /// The first event's time (engagement reports excluded).
    start: i64,
    pageviews: u64,
    bounce: bool,
    duration: i64,
    /// Every row of the visit, engagement reports included.
    rows: Vec<&'a EventRow>,
}

fn or_none(s: &str, none: &str) -> String {
    if s.is_empty() {
        none.into()
    } else {
        s.into()
    }
}

fn visits<'a>(events: &[&'a EventRow]) -> HashMap<u64, Visit<'a>> {
    let mut by_session: BTreeMap<u64, Vec<&EventRow>> = BTreeMap::new();
    for e in events {
        by_session.entry(e.session_id).or_default().push(e);
    }
    by_session
        .into_iter()
        .map(|(id, mut rows)| {
            rows.sort_by_key(|e| e.timestamp);
            let evs: Vec<&EventRow> = rows
                .iter()
                .copied()
                .filter(|e| e.name != "engagement")
                .collect();
            let first = evs[0];
            let pvs: Vec<&&EventRow> = evs.iter().filter(|e| e.name == "pageview").collect();
            let mut props = HashMap::new();
            props.insert("entry_page", or_none(&first.pathname, "(none)"));
            props.insert(
                "exit_page",
                or_none(pvs.last().map_or("", |e| &e.pathname), "(none)"),
            );
            props.insert("source", or_none(&first.referrer_source, "Direct / None"));
            props.insert("referrer", or_none(&first.referrer, "Direct / None"));
            for (name, value) in [
                ("utm_source", &first.utm_source),
                ("utm_medium", &first.utm_medium),
                ("utm_campaign", &first.utm_campaign),
                ("utm_term", &first.utm_term),
                ("utm_content", &first.utm_content),
                ("country", &first.country),
                ("region", &first.region),
                ("city", &first.city),
                ("device", &first.device),
                ("browser", &first.browser),
                ("browser_version", &first.browser_version),
                ("os", &first.os),
                ("os_version", &first.os_version),
            ] {
                props.insert(name, or_none(value, "(none)"));
            }
            let interactive_events = evs
                .iter()
                .filter(|e| e.name != "pageview" && e.interactive == 1)
                .count();
            let visit = Visit {
                visitor: first.visitor_id,
                props,
                start: first.timestamp as i64,
                pageviews: pvs.len() as u64,
                bounce: pvs.len() <= 1 && interactive_events == 0,
                duration: evs.last().unwrap().timestamp as i64 - first.timestamp as i64,
                rows,
            };
            (id, visit)
        })
        .collect()
}

/// The goals configured for `SITE`: overlapping on purpose (`/blog/a` reaches two).
pub const GOALS: [&str; 4] = ["Signup", "Visit /pricing", "Visit /blog/*", "Visit /*"];

/// The goals an event reached, in configuration order.
pub fn goals_of(e: &EventRow) -> Vec<String> {
    GOALS
        .iter()
        .filter(|goal| match goal.strip_prefix("Visit ") {
            Some(pattern) => {
                e.name == "pageview"
                    && match pattern.strip_suffix('*') {
                        Some(prefix) => e.pathname.starts_with(prefix),
                        None => e.pathname == pattern,
                    }
            }
            None => e.name == **goal,
        })
        .map(|g| g.to_string())
        .collect()
}

/// The values an event has for a property: one, or for `event:goal` each goal it reached.
fn event_values(e: &EventRow, property: &str) -> Vec<String> {
    if property == "event:goal" {
        goals_of(e)
    } else {
        vec![event_value(e, property)]
    }
}

fn event_value(e: &EventRow, property: &str) -> String {
    match property {
        "event:page" => e.pathname.clone(),
        "event:name" => e.name.clone(),
        "event:hostname" => e.hostname.clone(),
        p => {
            let key = p.strip_prefix("event:props:").expect("event property");
            e.prop_keys
                .iter()
                .position(|k| k == key)
                .map_or("(none)".into(), |i| e.prop_values[i].clone())
        }
    }
}

#[derive(Clone, Debug)]
pub struct Filter {
    pub property: &'static str,
    /// v1's `==`, `!=`, `~`, or v2's operator names.
    pub op: &'static str,
    pub values: Vec<&'static str>,
    /// v2's `{"case_sensitive": false}`.
    pub ignore_case: bool,
}

impl Filter {
    pub fn new(property: &'static str, op: &'static str, values: &[&'static str]) -> Self {
        Self {
            property,
            op,
            values: values.to_vec(),
            ignore_case: false,
        }
    }

    /// The same filter, whatever the letters' case.
    pub fn ignoring_case(self) -> Self {
        Self {
            ignore_case: true,
            ..self
        }
    }

    /// Whether the operator holds where the values do not.
    fn negative(op: &str) -> bool {
        matches!(op, "!=" | "is_not" | "contains_not" | "matches_not")
    }

    /// The operator's positive form (`is_not` → `is`).
    fn positive(op: &str) -> &'static str {
        match op {
            "==" | "!=" | "is" | "is_not" => "is",
            "~" | "contains" | "contains_not" => "contains",
            "matches" | "matches_not" => "matches",
            other => panic!("unknown operator {other}"),
        }
    }

    /// Whether one of the values holds for `value` under the positive form of the operator.
    fn any_value(&self, value: &str) -> bool {
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        let value = fold(value);
        match Self::positive(self.op) {
            "is" => self.values.iter().any(|v| fold(v) == value),
            "contains" => self.values.iter().any(|v| value.contains(&fold(v))),
            _ => self.values.iter().any(|v| {
                regex::RegexBuilder::new(v)
                    .case_insensitive(self.ignore_case)
                    .build()
                    .unwrap()
                    .is_match(&value)
            }),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        self.any_value(value) != Self::negative(self.op)
    }

    /// The filter that holds exactly where this one does not.
    fn negated(&self) -> Filter {
        let op = match self.op {
            "==" | "is" => "is_not",
            "!=" | "is_not" => "is",
            "~" | "contains" => "contains_not",
            "contains_not" => "contains",
            "matches" => "matches_not",
            "matches_not" => "matches",
            other => panic!("unknown operator {other}"),
        };
        Filter { op, ..self.clone() }
    }

    pub fn query(filters: &[Filter]) -> String {
        filters
            .iter()
            .map(|f| format!("{}{}{}", f.property, f.op, f.values.join("|")))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Filters combined (Stats API v2's `and`, `or`, `not`).
#[derive(Clone, Debug)]
pub enum Cond {
    Leaf(Filter),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    fn has_event_filter(&self) -> bool {
        match self {
            Cond::Leaf(f) => !f.property.starts_with("visit:"),
            Cond::And(cs) | Cond::Or(cs) => cs.iter().any(Cond::has_event_filter),
            Cond::Not(c) => c.has_event_filter(),
        }
    }

    /// The condition with its negations taken to the filters: `not` says which values an
    /// event or visit must not have.
    fn pushed_down(&self, negate: bool) -> Cond {
        match (self, negate) {
            (Cond::Leaf(f), false) => Cond::Leaf(f.clone()),
            (Cond::Leaf(f), true) => Cond::Leaf(f.negated()),
            (Cond::Not(c), _) => c.pushed_down(!negate),
            (Cond::And(cs), _) | (Cond::Or(cs), _) => {
                let cs = cs.iter().map(|c| c.pushed_down(negate)).collect();
                if matches!(self, Cond::And(_)) != negate {
                    Cond::And(cs)
                } else {
                    Cond::Or(cs)
                }
            }
        }
    }

    /// Whether event `e` of `visit` meets the condition (negations pushed down).
    fn holds(&self, e: &EventRow, visit: &Visit, in_period: bool) -> bool {
        match self {
            Cond::And(cs) => cs.iter().all(|c| c.holds(e, visit, in_period)),
            Cond::Or(cs) => cs.iter().any(|c| c.holds(e, visit, in_period)),
            Cond::Not(_) => unreachable!("negations are pushed down"),
            Cond::Leaf(f) => match f.property.strip_prefix("visit:") {
                // Only the period's visits have an exit page to match.
                Some("exit_page") => in_period && f.matches(&visit.props["exit_page"]),
                Some(p) => f.matches(&visit.props[p]),
                // Engagement reports stay with their page view whatever its name.
                None if f.property == "event:name" && e.name == "engagement" => true,
                None if f.property == "event:goal" => {
                    goals_of(e).iter().any(|g| f.any_value(g)) != Filter::negative(f.op)
                }
                None => f.matches(&event_value(e, f.property)),
            },
        }
    }
}

/// How expected rows are grouped.
pub enum Key<'a> {
    Total,
    Bucket(&'a dyn Fn(u32) -> String),
    Property(&'a str),
    /// Several at once (v2's dimensions): the row key is the parts' values joined by
    /// [`PART_SEPARATOR`], which sorts below every character of the fixture's values, so
    /// that keys sort as the tuples of their parts.
    Tuple(Vec<Key<'a>>),
}

pub const PART_SEPARATOR: &str = "\u{1}";

/// Every combination of one value from each list, joined.
fn product(lists: Vec<Vec<String>>) -> Vec<String> {
    lists
        .into_iter()
        .fold(vec![Vec::new()], |acc, values| {
            acc.iter()
                .flat_map(|prefix: &Vec<String>| {
                    values.iter().map(move |v| {
                        let mut next = prefix.clone();
                        next.push(v.clone());
                        next
                    })
                })
                .collect()
        })
        .into_iter()
        .map(|parts| parts.join(PART_SEPARATOR))
        .collect()
}

/// The keys event `e` of `visit` counts under.
fn event_keys(key: &Key, e: &EventRow, visit: &Visit) -> Vec<String> {
    match key {
        Key::Total => vec![String::new()],
        Key::Bucket(f) => vec![f(e.timestamp)],
        Key::Property(p) => match p.strip_prefix("visit:") {
            Some(vp) => vec![visit.props[vp].clone()],
            None => event_values(e, p),
        },
        Key::Tuple(parts) => product(parts.iter().map(|k| event_keys(k, e, visit)).collect()),
    }
}

fn has_event_part(key: &Key) -> bool {
    match key {
        Key::Property(p) => !p.starts_with("visit:"),
        Key::Tuple(parts) => parts.iter().any(has_event_part),
        Key::Total | Key::Bucket(_) => false,
    }
}

/// The keys of a visit's own (its properties, the bucket of its start), or with event
/// properties among them, of `e`, one of its events.
fn visit_keys(key: &Key, e: &EventRow, visit: &Visit) -> Vec<String> {
    match key {
        Key::Bucket(f) => vec![f(visit.start as u32)],
        Key::Tuple(parts) => product(parts.iter().map(|k| visit_keys(k, e, visit)).collect()),
        other => event_keys(other, e, visit),
    }
}

#[derive(Default, Debug, Clone)]
pub struct Sums {
    pub visitors: HashSet<u64>,
    pub visits: u64,
    pub pageviews: u64,
    pub events: u64,
    pub visit_pageviews: u64,
    pub bounces: u64,
    pub duration: i64,
    pub engaged_pages: u64,
    pub engaged_ms: u64,
    pub scroll_sum: u64,
}

impl Sums {
    pub fn metric(&self, metric: &str) -> Value {
        let ratio = |a: f64, b: u64| if b == 0 { 0.0 } else { a / b as f64 };
        match metric {
            "visitors" => json!(self.visitors.len()),
            "visits" => json!(self.visits),
            "pageviews" => json!(self.pageviews),
            "events" => json!(self.events),
            "views_per_visit" => {
                json!((ratio(self.visit_pageviews as f64, self.visits) * 100.0).round() / 100.0)
            }
            "bounce_rate" => {
                json!((ratio(self.bounces as f64, self.visits) * 100.0).round() as u64)
            }
            "visit_duration" => json!(ratio(self.duration as f64, self.visits).round() as u64),
            "time_on_page" => {
                json!((ratio(self.engaged_ms as f64, self.engaged_pages) / 1000.0).round() as u64)
            }
            "scroll_depth" => {
                json!(ratio(self.scroll_sum as f64, self.engaged_pages).round() as u64)
            }
            m => panic!("unknown metric {m}"),
        }
    }
}

pub const ALL_METRICS: &str = "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events,time_on_page,scroll_depth";

/// Per key: event figures from the period's events (visitors, page views, events, engagement
/// reports), and visit figures from the visits that started in the period (visits, their page
/// views, bounces, durations). Visit filters select visits (and so their events); event
/// filters select events, and visits that have a matching event. The exit page is known per
/// visit, so its breakdown and filter take the period's visits.
pub fn expected(
    fixture: &[EventRow],
    site: &str,
    range: (i64, i64),
    filters: &[Filter],
    key: Key,
    min_group_size: usize,
) -> BTreeMap<String, Sums> {
    let all = Cond::And(filters.iter().cloned().map(Cond::Leaf).collect());
    expected_where(fixture, site, range, &all, key, min_group_size)
}

/// [`expected`] for a condition tree: an event counts where it meets the condition, a visit
/// where one of its events (not an engagement report) does.
pub fn expected_where(
    fixture: &[EventRow],
    site: &str,
    (start, end): (i64, i64),
    condition: &Cond,
    key: Key,
    min_group_size: usize,
) -> BTreeMap<String, Sums> {
    let site_rows: Vec<&EventRow> = fixture.iter().filter(|e| e.site == site).collect();
    let visits = visits(&site_rows);
    let in_period = |v: &Visit| (start..end).contains(&v.start);
    let condition = condition.pushed_down(false);
    let event_ok = |e: &EventRow, v: &Visit| condition.holds(e, v, in_period(v));
    let event_filtered = condition.has_event_filter();
    let matching = |v: &Visit| {
        v.rows
            .iter()
            .any(|e| e.name != "engagement" && event_ok(e, v))
            || (!event_filtered && event_ok(v.rows[0], v))
    };
    let exit_breakdown = matches!(key, Key::Property("visit:exit_page"));

    // Event figures.
    let mut event_sums: BTreeMap<String, Sums> = BTreeMap::new();
    if !exit_breakdown {
        for e in &site_rows {
            let visit = &visits[&e.session_id];
            if !(start..end).contains(&(e.timestamp as i64)) || !event_ok(e, visit) {
                continue;
            }
            for k in event_keys(&key, e, visit) {
                let sums = event_sums.entry(k).or_default();
                if e.name == "engagement" {
                    sums.engaged_pages += 1;
                    sums.engaged_ms += e.engagement_ms as u64;
                    sums.scroll_sum += e.scroll_depth as u64;
                } else {
                    sums.visitors.insert(e.visitor_id);
                    sums.events += 1;
                    sums.pageviews += u64::from(e.name == "pageview");
                }
            }
        }
        // Keys with only engagement reports have no event figures.
        event_sums.retain(|_, s| s.events > 0);
    }

    // Visit figures, and every figure of the exit page breakdown.
    let mut out = event_sums;
    for visit in visits.values() {
        if !in_period(visit) {
            continue;
        }
        let keys: BTreeSet<String> = match &key {
            Key::Total => [String::new()].into(),
            Key::Bucket(f) => [f(visit.start as u32)].into(),
            Key::Property(p) => match p.strip_prefix("visit:") {
                Some(vp) => [visit.props[vp].clone()].into(),
                None => visit
                    .rows
                    .iter()
                    .filter(|e| e.name != "engagement" && event_ok(e, visit))
                    .flat_map(|e| event_values(e, p))
                    .collect(),
            },
            // A visit counts once per key among its matching events.
            Key::Tuple(_) if has_event_part(&key) => visit
                .rows
                .iter()
                .filter(|e| e.name != "engagement" && event_ok(e, visit))
                .flat_map(|e| visit_keys(&key, e, visit))
                .collect(),
            Key::Tuple(_) => visit_keys(&key, visit.rows[0], visit).into_iter().collect(),
        };
        if keys.is_empty() || !matching(visit) {
            continue;
        }
        for k in keys {
            let sums = out.entry(k).or_default();
            sums.visits += 1;
            sums.visit_pageviews += visit.pageviews;
            sums.bounces += u64::from(visit.bounce);
            sums.duration += visit.duration;
            if exit_breakdown {
                sums.visitors.insert(visit.visitor);
                sums.pageviews += visit.pageviews;
                for e in &visit.rows {
                    if e.name == "engagement" {
                        sums.engaged_pages += 1;
                        sums.engaged_ms += e.engagement_ms as u64;
                        sums.scroll_sum += e.scroll_depth as u64;
                    } else {
                        sums.events += 1;
                    }
                }
            }
        }
    }

    if min_group_size == 0 {
        return out;
    }
    let mut merged: BTreeMap<String, Sums> = BTreeMap::new();
    for (k, sums) in out {
        let k = if sums.visitors.len() >= min_group_size {
            k
        } else {
            "(other)".to_string()
        };
        let m = merged.entry(k).or_default();
        m.visitors.extend(sums.visitors);
        m.visits += sums.visits;
        m.pageviews += sums.pageviews;
        m.events += sums.events;
        m.visit_pageviews += sums.visit_pageviews;
        m.bounces += sums.bounces;
        m.duration += sums.duration;
        m.engaged_pages += sums.engaged_pages;
        m.engaged_ms += sums.engaged_ms;
        m.scroll_sum += sums.scroll_sum;
    }
    merged
}

/// Breakdown order: visitors descending, then the key.
pub fn sorted(rows: &BTreeMap<String, Sums>) -> Vec<(&String, &Sums)> {
    let mut rows: Vec<_> = rows.iter().collect();
    rows.sort_by(|a, b| {
        b.1.visitors
            .len()
            .cmp(&a.1.visitors.len())
            .then(a.0.cmp(b.0))
    });
    rows
}

pub fn local_label(tz: &str, format: &str) -> impl Fn(u32) -> String {
    let tz = TimeZone::get(tz).unwrap();
    let format = format.to_string();
    move |ts| {
        jiff::Timestamp::from_second(ts as i64)
            .unwrap()
            .to_zoned(tz.clone())
            .strftime(&format)
            .to_string()
    }
}

pub fn day_range(tz: &str, first: &str, last: &str) -> (i64, i64) {
    let tz = TimeZone::get(tz).unwrap();
    let first: Date = first.parse().unwrap();
    let last: Date = last.parse().unwrap();
    let start = first.to_zoned(tz.clone()).unwrap().timestamp().as_second();
    let end = last
        .tomorrow()
        .unwrap()
        .to_zoned(tz)
        .unwrap()
        .timestamp()
        .as_second();
    (start, end)
}
