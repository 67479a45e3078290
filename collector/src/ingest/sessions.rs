//! Visits: a visitor's events with gaps under 30 minutes share a `session_id`, which the query
//! service needs for visits, bounce rate, visit duration, entry and exit pages.
//!
//! Sessions live in the collector's memory, keyed by site and visitor id, and expire after 30
//! idle minutes. With several collectors, the load balancer must send a client to the same
//! collector (hash on the client address, e.g. nginx `hash $remote_addr consistent`): visitor
//! ids agree across collectors (shared salts), but a visit split across collectors would count
//! as several visits. A restart ends open visits the same way.
//!
//! **Why every row carries its visit.** Counting visits, bounces and durations from raw events
//! means grouping a period's events by visit at query time, which grows with traffic (seconds
//! at 10 M events). Instead each row is stamped here with what the query service needs to read
//! visits in one pass without grouping:
//! - the visit's properties, all the visit's first event's: entry page, referrer, source and
//!   campaign in `visit_*` columns beside the event's own, place, device, browser and OS in
//!   the event's columns; so a visit filter or breakdown selects whole visits;
//! - `visit_start`, so a visit is counted in the period (and bucket) it started in;
//! - additive deltas whose sum over a visit's rows is the visit's figure: `visit_entry` (1 on
//!   the first event: sums to visits), `visit_bounce` (+1 when the visit becomes a bounce, -1
//!   when it stops being one: sums to 0 or 1), `visit_duration` (seconds since the visit's
//!   previous event: sums to last minus first event).
//!
//! A visit lasts at most [`MAX_VISIT_SECS`], so the query service knows how far after a
//! period's end a visit that started in it can still have rows.
//!
//! **Bounded memory.** Every distinct visitor opens a visit, and a flood of made-up visitors
//! must not grow the map without end: at most `max_open_visits` are held (over it the visit
//! idle longest is closed early, counted in `glimpse_visits_evicted_total`; its visitor's next
//! event starts a new visit), and each visit holds at most [`MAX_VISIT_PROP_BYTES`] of each
//! property (entry page, referrer, campaign…; longer values are cut on a character boundary
//! in the `visit_*` columns and `entry_page`, the event's own columns stay whole). So an open
//! visit takes at most [`MAX_VISIT_BYTES`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hashlink::LinkedHashMap;

use glimpse_core::schema::EventRow;

/// Idle time after which the next event starts a new visit.
pub const VISIT_TIMEOUT_SECS: u32 = 30 * 60;

pub use glimpse_core::visit::{DEFAULT_MAX_OPEN_VISITS, MAX_VISIT_SECS};

/// The name of engagement reports, which belong to a visit but neither start it nor count in
/// its page views, bounce or duration.
const ENGAGEMENT: &str = "engagement";

/// How many visit properties there are (see [`VisitProps::targets`]).
const PROPS: usize = 16;

/// Longest visit property kept, in bytes (entry page, referrer, campaign, …): an entry page
/// or referrer longer than this is cut in the visit's columns.
pub const MAX_VISIT_PROP_BYTES: usize = 256;

/// The most memory one open visit takes, in bytes: the visit, its key (the site's domain, at
/// most 253 bytes), its texts and the map's bookkeeping. 100,000 visits: under 500 MB even
/// when every property is at its longest; typical visits take a tenth of this.
pub const MAX_VISIT_BYTES: usize = ENTRY_BYTES + 253 + PROPS * MAX_VISIT_PROP_BYTES;

// What the configuration documents: at most ~4.5 KB an open visit.
const _: () = assert!(MAX_VISIT_BYTES <= 4_608);

/// One map entry without its heap texts: key, value and the linked map's two links and hash
/// slot.
const ENTRY_BYTES: usize =
    std::mem::size_of::<(String, u64)>() + std::mem::size_of::<Visit>() + 4 * 8;

/// A visit's properties: its first event's, stamped on every row of the visit. Open visits
/// are held for 30 minutes, so they are packed into one allocation (the texts one after the
/// other, and where each ends) rather than sixteen strings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VisitProps {
    text: Box<str>,
    ends: [u32; PROPS],
}

impl VisitProps {
    /// The first event's values, in the order of [`VisitProps::targets`].
    fn of(row: &EventRow) -> Self {
        let values: [&str; PROPS] = [
            &row.pathname,
            &row.referrer,
            &row.referrer_source,
            &row.utm_source,
            &row.utm_medium,
            &row.utm_campaign,
            &row.utm_term,
            &row.utm_content,
            &row.country,
            &row.region,
            &row.city,
            &row.device,
            &row.browser,
            &row.browser_version,
            &row.os,
            &row.os_version,
        ];
        let values = values.map(|v| truncate(v, MAX_VISIT_PROP_BYTES));
        let mut text = String::with_capacity(values.iter().map(|v| v.len()).sum());
        let mut ends = [0u32; PROPS];
        for (end, value) in ends.iter_mut().zip(values) {
            text.push_str(value);
            // Row fields are bounded by the collector's limits, far below 4 GiB.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        VisitProps {
            text: text.into_boxed_str(),
            ends,
        }
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    /// The row's columns that carry the visit's properties. Place, device, browser and OS
    /// come from the address and user agent, which the visitor id hashes: the same for the
    /// whole visit (but for a resized window's device class), so they take the event's own
    /// columns; the entry page, referrer, source and campaign have `visit_` columns beside the
    /// event's own.
    fn targets(row: &mut EventRow) -> [&mut String; PROPS] {
        [
            &mut row.entry_page,
            &mut row.visit_referrer,
            &mut row.visit_referrer_source,
            &mut row.visit_utm_source,
            &mut row.visit_utm_medium,
            &mut row.visit_utm_campaign,
            &mut row.visit_utm_term,
            &mut row.visit_utm_content,
            &mut row.country,
            &mut row.region,
            &mut row.city,
            &mut row.device,
            &mut row.browser,
            &mut row.browser_version,
            &mut row.os,
            &mut row.os_version,
        ]
    }

    fn stamp(&self, row: &mut EventRow) {
        for (i, target) in Self::targets(row).into_iter().enumerate() {
            let value = self.get(i);
            if target != value {
                target.clear();
                target.push_str(value);
            }
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One visit's state: what the next event needs to compute its row's visit columns.
#[derive(Debug, Clone)]
pub struct Visit {
    session_id: u64,
    visitor_id: u64,
    start: u32,
    /// Last event of any kind: the idle timeout runs from here.
    last_seen: u32,
    /// Last event that counts for the duration (not an engagement report).
    last_counted: u32,
    pageviews: u32,
    /// An interactive custom event happened: the visit is no bounce.
    interacted: bool,
    props: VisitProps,
}

impl Visit {
    /// Starts a visit with `row`, its first event, and stamps the row.
    pub fn start(session_id: u64, row: &mut EventRow) -> Visit {
        let mut visit = Visit {
            session_id,
            visitor_id: row.visitor_id,
            start: row.timestamp,
            last_seen: row.timestamp,
            last_counted: row.timestamp,
            pageviews: 0,
            interacted: false,
            props: VisitProps::of(row),
        };
        visit.count(row, true);
        visit
    }

    /// Adds `row`, a later event of the visit, and stamps it.
    pub fn add(&mut self, row: &mut EventRow) {
        self.last_seen = self.last_seen.max(row.timestamp);
        self.count(row, false);
    }

    fn is_bounce(&self) -> bool {
        self.pageviews <= 1 && !self.interacted
    }

    fn count(&mut self, row: &mut EventRow, first: bool) {
        let (mut bounce_delta, mut duration_delta) = (0i8, 0u32);
        if row.name != ENGAGEMENT {
            let was_bounce = !first && self.is_bounce();
            if row.name == "pageview" {
                self.pageviews += 1;
            } else if row.interactive == 1 {
                self.interacted = true;
            }
            bounce_delta = i8::from(self.is_bounce()) - i8::from(was_bounce);
            let at = row.timestamp.max(self.last_counted);
            duration_delta = at - self.last_counted;
            self.last_counted = at;
        }
        self.props.stamp(row);
        row.visitor_id = self.visitor_id;
        row.session_id = self.session_id;
        row.visit_start = self.start;
        row.visit_entry = u8::from(first);
        row.visit_bounce = bounce_delta;
        row.visit_duration = duration_delta;
    }

    /// Whether an event at `at` continues this visit.
    fn continues_at(&self, at: u32) -> bool {
        at.saturating_sub(self.last_seen) < VISIT_TIMEOUT_SECS
            && at.saturating_sub(self.start) < MAX_VISIT_SECS
    }
}

/// Stamps an event that belongs to no visit (an engagement report whose visit is unknown):
/// a visit of its own that is never counted.
fn stamp_lone(session_id: u64, row: &mut EventRow) {
    row.session_id = session_id;
    row.entry_page.clear();
    row.visit_start = row.timestamp;
    row.visit_entry = 0;
    row.visit_bounce = 0;
    row.visit_duration = 0;
}

/// Computes the visit columns of rows whose `session_id`s are already known, as the collector
/// would have stamped them: for rows that reach ClickHouse another way (imports of other
/// tools' data, test fixtures, benchmark data). Each session's rows are taken in time order;
/// a session's first event that is not an engagement report starts its visit.
pub fn stamp_visits(rows: &mut [EventRow]) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (rows[i].session_id, rows[i].timestamp));
    let mut open: Option<Visit> = None;
    for i in order {
        let row = &mut rows[i];
        match &mut open {
            Some(visit) if visit.session_id == row.session_id => visit.add(row),
            _ if row.name == ENGAGEMENT => {
                open = None;
                stamp_lone(row.session_id, row);
            }
            _ => open = Some(Visit::start(row.session_id, row)),
        }
    }
}

/// Open visits, at most `max_open` of them, in the order they last saw an event. Cheap to
/// share behind an `Arc`.
#[derive(Debug)]
pub struct Sessions {
    open: Mutex<LinkedHashMap<(String, u64), Visit>>,
    max_open: usize,
    evicted: AtomicU64,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    /// At most [`DEFAULT_MAX_OPEN_VISITS`] open visits.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_OPEN_VISITS)
    }

    /// At most `max_open` open visits (at least 1).
    pub fn with_limit(max_open: usize) -> Self {
        Self {
            open: Mutex::new(LinkedHashMap::new()),
            max_open: max_open.max(1),
            evicted: AtomicU64::new(0),
        }
    }

    /// Puts `row` (its site, visitor id and time) into the visitor's open visit or starts one,
    /// and stamps the row's visit columns. `previous_visitor_id` is the id the visitor had
    /// under yesterday's salt: a visit open under it continues across midnight, keeping
    /// yesterday's id until it ends. Engagement reports do not begin visits on their own.
    /// Starting a visit when `max_open` are open first closes the one idle longest. Returns
    /// whether the row continued a visit open here.
    pub fn assign(&self, row: &mut EventRow, previous_visitor_id: Option<u64>) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let candidates = [Some(row.visitor_id), previous_visitor_id];
        for id in candidates.into_iter().flatten() {
            let key = (row.site.clone(), id);
            if open
                .get(&key)
                .is_some_and(|v| v.continues_at(row.timestamp))
            {
                // Most recently seen at the back: the front is the next to go.
                if let Some(visit) = open.to_back(&key) {
                    visit.add(row);
                    return true;
                }
            }
        }
        let session_id = new_session_id();
        if row.name == ENGAGEMENT {
            stamp_lone(session_id, row);
            return false;
        }
        let visit = Visit::start(session_id, row);
        let key = (row.site.clone(), row.visitor_id);
        if !open.contains_key(&key) {
            while open.len() >= self.max_open {
                if open.pop_front().is_none() {
                    break;
                }
                self.evicted.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("glimpse_visits_evicted_total").increment(1);
            }
        }
        open.insert(key, visit);
        false
    }

    /// Forgets visits idle for longer than the timeout (or past their longest); returns how
    /// many remain.
    pub fn expire(&self, now: u32) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, v| v.continues_at(now));
        open.len()
    }

    /// How many visits are open, and the bytes they hold (an estimate: the entries and their
    /// texts, not the allocator's slack).
    pub fn footprint(&self) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = open
            .iter()
            .map(|((site, _), visit)| ENTRY_BYTES + site.capacity() + visit.props.text.len())
            .sum();
        (open.len(), bytes)
    }

    /// Visits closed early because `max_open` were open.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

fn new_session_id() -> u64 {
    // Random, so a visit id says nothing about who or when; 0 means "no visit".
    getrandom::u64().unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(site: &str, visitor: u64, at: u32, name: &str, page: &str) -> EventRow {
        EventRow {
            site: site.into(),
            visitor_id: visitor,
            timestamp: at,
            name: name.into(),
            pathname: page.into(),
            interactive: 1,
            ..EventRow::default()
        }
    }

    fn assign(s: &Sessions, mut row: EventRow, previous: Option<u64>) -> EventRow {
        s.assign(&mut row, previous);
        row
    }

    #[test]
    fn gaps_under_30_minutes_continue_the_visit() {
        let s = Sessions::new();
        let a = assign(&s, event("e.com", 7, 1000, "pageview", "/"), None);
        let b = assign(&s, event("e.com", 7, 1000 + 29 * 60, "pageview", "/"), None);
        assert_eq!(a.session_id, b.session_id);
        let c = assign(&s, event("e.com", 7, 1000 + 59 * 60, "pageview", "/"), None);
        assert_eq!(c.visitor_id, 7);
        // `assign` tells whether the event continued a visit open here.
        let mut d = event("e.com", 7, 1000 + 60 * 60, "pageview", "/");
        assert!(s.assign(&mut d, None));
        let mut e = event("e.com", 8, 1000 + 60 * 60, "pageview", "/");
        assert!(!s.assign(&mut e, None));
        assert_ne!(c.session_id, a.session_id);
        assert_eq!((a.visit_entry, b.visit_entry, c.visit_entry), (1, 0, 1));
    }

    #[test]
    fn a_visit_lasts_at_most_a_day() {
        let s = Sessions::new();
        let first = assign(&s, event("e.com", 7, 0, "pageview", "/"), None);
        let mut at = 0;
        let mut last = first.clone();
        while at + 20 * 60 < MAX_VISIT_SECS {
            at += 20 * 60;
            last = assign(&s, event("e.com", 7, at, "pageview", "/"), None);
        }
        assert_eq!(last.session_id, first.session_id);
        let next = assign(&s, event("e.com", 7, at + 20 * 60, "pageview", "/"), None);
        assert_ne!(next.session_id, first.session_id);
        assert_eq!(next.visit_start, at + 20 * 60);
    }

    #[test]
    fn visitors_and_sites_are_separate() {
        let s = Sessions::new();
        let a = assign(&s, event("e.com", 7, 0, "pageview", "/"), None);
        let b = assign(&s, event("e.com", 8, 1, "pageview", "/"), None);
        let c = assign(&s, event("o.com", 7, 1, "pageview", "/"), None);
        assert_ne!(a.session_id, b.session_id);
        assert_ne!(a.session_id, c.session_id);
    }

    #[test]
    fn visits_continue_across_midnight_under_yesterdays_id() {
        let s = Sessions::new();
        let before = assign(&s, event("e.com", 111, 86_400 - 60, "pageview", "/"), None);
        // After midnight the visitor hashes to 222 today, 111 under yesterday's salt.
        let after = assign(
            &s,
            event("e.com", 222, 86_400 + 60, "pageview", "/"),
            Some(111),
        );
        assert_eq!(
            (after.session_id, after.visitor_id),
            (before.session_id, 111)
        );
        assert_eq!(after.visit_start, 86_400 - 60);
        // A visitor with no open visit yesterday gets today's id.
        let fresh = assign(
            &s,
            event("e.com", 333, 86_400 + 60, "pageview", "/"),
            Some(444),
        );
        assert_eq!(fresh.visitor_id, 333);
    }

    #[test]
    fn engagement_does_not_start_visits() {
        let s = Sessions::new();
        let lone = assign(&s, event("e.com", 9, 0, "engagement", "/"), None);
        assert_eq!((lone.visit_entry, lone.visit_bounce), (0, 0));
        let next = assign(&s, event("e.com", 9, 10, "pageview", "/"), None);
        assert_ne!(lone.session_id, next.session_id);
        let report = assign(&s, event("e.com", 9, 20, "engagement", "/"), None);
        assert_eq!(report.session_id, next.session_id);
        assert_eq!((report.visit_bounce, report.visit_duration), (0, 0));
    }

    #[test]
    fn expiry_forgets_idle_visits() {
        let s = Sessions::new();
        assign(&s, event("e.com", 1, 0, "pageview", "/"), None);
        assign(&s, event("e.com", 2, 1000, "pageview", "/"), None);
        assert_eq!(s.expire(VISIT_TIMEOUT_SECS + 500), 1);
        assert_eq!(s.expire(VISIT_TIMEOUT_SECS * 3), 0);
    }

    /// The deltas of a visit's rows, in order.
    fn deltas(rows: &[EventRow]) -> Vec<(u8, i8, u32)> {
        rows.iter()
            .map(|r| (r.visit_entry, r.visit_bounce, r.visit_duration))
            .collect()
    }

    #[test]
    fn deltas_sum_to_visits_bounces_and_duration() {
        let s = Sessions::new();
        let mut custom = event("e.com", 5, 100, "Signup", "/b");
        custom.interactive = 0;
        let rows = vec![
            assign(&s, event("e.com", 5, 0, "pageview", "/a"), None),
            assign(&s, event("e.com", 5, 30, "engagement", "/a"), None),
            // A non-interactive custom event leaves the bounce standing.
            assign(&s, custom, None),
            assign(&s, event("e.com", 5, 160, "pageview", "/b"), None),
            assign(&s, event("e.com", 5, 200, "pageview", "/c"), None),
        ];
        assert_eq!(
            deltas(&rows),
            [(1, 1, 0), (0, 0, 0), (0, 0, 100), (0, -1, 60), (0, 0, 40)]
        );
        let sum_bounce: i32 = rows.iter().map(|r| i32::from(r.visit_bounce)).sum();
        let sum_duration: u32 = rows.iter().map(|r| r.visit_duration).sum();
        assert_eq!((sum_bounce, sum_duration), (0, 200));

        // An interactive custom event ends a bounce too.
        let t = Sessions::new();
        let rows = vec![
            assign(&t, event("e.com", 6, 0, "pageview", "/a"), None),
            assign(&t, event("e.com", 6, 5, "Signup", "/a"), None),
        ];
        assert_eq!(deltas(&rows), [(1, 1, 0), (0, -1, 5)]);
    }

    #[test]
    fn every_row_carries_the_visits_properties() {
        let s = Sessions::new();
        let mut first = event("e.com", 5, 0, "pageview", "/landing");
        first.referrer_source = "Google".into();
        first.utm_campaign = "spring".into();
        first.device = "mobile".into();
        first.country = "DE".into();
        let mut second = event("e.com", 5, 10, "pageview", "/pricing");
        second.referrer_source = "example.com".into();
        second.device = "tablet".into();
        assign(&s, first, None);
        let second = assign(&s, second, None);
        assert_eq!(second.entry_page, "/landing");
        assert_eq!(second.pathname, "/pricing");
        assert_eq!(
            (
                second.visit_referrer_source.as_str(),
                second.visit_utm_campaign.as_str(),
                second.device.as_str(),
                second.country.as_str()
            ),
            ("Google", "spring", "mobile", "DE")
        );
        // The event's own referrer and campaign stay as they came.
        assert_eq!(
            (
                second.referrer_source.as_str(),
                second.utm_campaign.as_str()
            ),
            ("example.com", "")
        );
        assert_eq!(second.visit_start, 0);
    }

    #[test]
    fn an_open_visit_is_small() {
        // Held for 30 minutes per visitor: the struct plus one allocation for its texts.
        assert!(
            std::mem::size_of::<Visit>() <= 128,
            "{}",
            std::mem::size_of::<Visit>()
        );
        let mut row = event("e.com", 1, 0, "pageview", "/landing");
        row.country = "DE".into();
        row.device = "mobile".into();
        let props = VisitProps::of(&row);
        assert_eq!(&*props.text, "/landingDEmobile");
        let mut later = event("e.com", 1, 5, "pageview", "/next");
        props.stamp(&mut later);
        assert_eq!(
            (
                later.entry_page.as_str(),
                later.country.as_str(),
                later.device.as_str()
            ),
            ("/landing", "DE", "mobile")
        );
        assert_eq!(later.visit_referrer, "");
    }

    #[test]
    fn a_flood_of_distinct_visitors_stays_under_the_caps() {
        let cap = 1_000;
        let s = Sessions::with_limit(cap);
        let path = format!("/{}", "p".repeat(4095));
        let referrer = format!("https://spam.example/{}", "é".repeat(2000));
        let flood = 5 * cap as u64;
        for visitor in 0..flood {
            let mut row = event(
                "e.com",
                visitor,
                1_000 + (visitor / 100) as u32,
                "pageview",
                &path,
            );
            row.referrer = referrer.clone();
            row.utm_campaign = "c".repeat(4096);
            row.utm_content = "x".repeat(4096);
            s.assign(&mut row, None);
            // The event's own columns stay whole; the visit's are cut.
            assert_eq!(row.pathname.len(), 4096);
            assert_eq!(row.entry_page.len(), MAX_VISIT_PROP_BYTES);
            assert!(row.visit_referrer.len() <= MAX_VISIT_PROP_BYTES);
            assert!(referrer.starts_with(&row.visit_referrer));
        }
        let (count, bytes) = s.footprint();
        assert_eq!(count, cap);
        assert!(bytes <= cap * MAX_VISIT_BYTES, "{bytes} bytes");
        // Well under what the texts as sent would take (≈ 16 KB a visit).
        assert!(bytes < cap * 2_000, "{bytes} bytes for {count} visits");
        assert_eq!(s.evicted(), flood - cap as u64);
        // The oldest visits were closed, the newest are open.
        let newest = flood - 1;
        let at = 1_000 + (newest / 100) as u32 + 5;
        let first = assign(&s, event("e.com", 0, at, "pageview", "/"), None);
        assert_eq!(first.visit_entry, 1, "visitor 0's visit was closed");
        let last = assign(&s, event("e.com", newest, at, "pageview", "/"), None);
        assert_eq!(last.visit_entry, 0, "the newest visit is still open");
        assert_eq!(s.footprint().0, cap);
    }

    #[test]
    fn the_visit_idle_longest_is_closed_first() {
        let s = Sessions::with_limit(2);
        let a = assign(&s, event("e.com", 1, 0, "pageview", "/"), None);
        assign(&s, event("e.com", 2, 1, "pageview", "/"), None);
        // Visitor 1 comes back: visitor 2 is now the one idle longest.
        assign(&s, event("e.com", 1, 2, "pageview", "/"), None);
        assign(&s, event("e.com", 3, 3, "pageview", "/"), None);
        let again = assign(&s, event("e.com", 1, 4, "pageview", "/"), None);
        assert_eq!(again.session_id, a.session_id);
        let two = assign(&s, event("e.com", 2, 5, "pageview", "/"), None);
        assert_eq!(two.visit_entry, 1);
        assert_eq!(s.evicted(), 2);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("ééé", 5), "éé");
    }

    #[test]
    fn stamping_stored_rows_agrees_with_the_collector() {
        let s = Sessions::new();
        let mut live = Vec::new();
        let script = [
            (1, 0, "pageview", "/"),
            (2, 5, "pageview", "/x"),
            (1, 20, "engagement", "/"),
            (1, 40, "pageview", "/docs"),
            (2, 4000, "pageview", "/y"),
            (1, 90, "Signup", "/docs"),
        ];
        for (visitor, at, name, page) in script {
            live.push(assign(&s, event("e.com", visitor, at, name, page), None));
        }
        let mut stored: Vec<EventRow> = live
            .iter()
            .map(|r| {
                let mut raw = event("e.com", r.visitor_id, r.timestamp, &r.name, &r.pathname);
                raw.session_id = r.session_id;
                raw
            })
            .collect();
        stored.reverse();
        stamp_visits(&mut stored);
        stored.reverse();
        assert_eq!(stored, live);
    }
}
