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

#[derive(Clone)]
pub struct Filter {
    pub property: &'static str,
    pub op: &'static str,
    pub values: Vec<&'static str>,
}

impl Filter {
    pub fn new(property: &'static str, op: &'static str, values: &[&'static str]) -> Self {
        Self {
            property,
            op,
            values: values.to_vec(),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            "==" => self.values.contains(&value),
            "!=" => !self.values.contains(&value),
            "~" => self.values.iter().any(|v| value.contains(v)),
            _ => unreachable!(),
        }
    }

    pub fn query(filters: &[Filter]) -> String {
        filters
            .iter()
            .map(|f| format!("{}{}{}", f.property, f.op, f.values.join("|")))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// How expected rows are grouped.
pub enum Key<'a> {
    Total,
    Bucket(&'a dyn Fn(u32) -> String),
    Property(&'a str),
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
    (start, end): (i64, i64),
    filters: &[Filter],
    key: Key,
    min_group_size: usize,
) -> BTreeMap<String, Sums> {
    let site_rows: Vec<&EventRow> = fixture.iter().filter(|e| e.site == site).collect();
    let visits = visits(&site_rows);
    let in_period = |v: &Visit| (start..end).contains(&v.start);
    let visit_ok = |v: &Visit| {
        filters
            .iter()
            .all(|f| match f.property.strip_prefix("visit:") {
                Some("exit_page") => in_period(v) && f.matches(&v.props["exit_page"]),
                Some(p) => f.matches(&v.props[p]),
                None => true,
            })
    };
    let event_ok = |e: &EventRow| {
        filters.iter().all(|f| {
            if f.property.starts_with("visit:") {
                return true;
            }
            if f.property == "event:name" && e.name == "engagement" {
                return true;
            }
            if f.property == "event:goal" {
                let reached = goals_of(e);
                return match f.op {
                    "!=" => !reached.iter().any(|g| f.values.contains(&g.as_str())),
                    _ => reached.iter().any(|g| f.matches(g)),
                };
            }
            f.matches(&event_value(e, f.property))
        })
    };
    let event_filtered = filters.iter().any(|f| !f.property.starts_with("visit:"));
    let matching =
        |v: &Visit| !event_filtered || v.rows.iter().any(|e| e.name != "engagement" && event_ok(e));
    let exit_breakdown = matches!(key, Key::Property("visit:exit_page"));

    // Event figures.
    let mut event_sums: BTreeMap<String, Sums> = BTreeMap::new();
    if !exit_breakdown {
        for e in &site_rows {
            let visit = &visits[&e.session_id];
            if !(start..end).contains(&(e.timestamp as i64)) || !event_ok(e) || !visit_ok(visit) {
                continue;
            }
            let keys = match &key {
                Key::Total => vec![String::new()],
                Key::Bucket(f) => vec![f(e.timestamp)],
                Key::Property(p) => match p.strip_prefix("visit:") {
                    Some(vp) => vec![visit.props[vp].clone()],
                    None => event_values(e, p),
                },
            };
            for k in keys {
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
        if !in_period(visit) || !visit_ok(visit) {
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
                    .filter(|e| e.name != "engagement" && event_ok(e))
                    .flat_map(|e| event_values(e, p))
                    .collect(),
            },
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
