//! Funnels (`POST /api/v2/funnel`) end to end: hand-made visits on a site of their own whose
//! numbers are worked out by hand (out-of-order, repeated and cross-visit steps, a visit past
//! midnight), the fixture's random visits against a plain-Rust walk of each visit, filters,
//! refusals and who may ask.

use std::collections::{BTreeMap, HashMap};

use glimpse_collector::ingest::sessions::stamp_visits;
use glimpse_core::schema::EventRow;
use serde_json::{json, Value};

use crate::fixture::utc_seconds;
use crate::service::Service;
use crate::{BERLIN, FUNNEL_SITE, SHARE_TOKEN, SITE};

/// The funnel site's goals.
pub const FUNNEL_GOALS: [&str; 2] = ["Signup", "Visit /thanks*"];

/// Hand-made visits on `FUNNEL_SITE`, 2026-03-25 (UTC) unless said otherwise: (visitor,
/// visit, country, events in order; `!Name` is a custom event, else a page view).
const VISITS: &[(u64, u64, &str, &[&str])] = &[
    // In order: all three steps.
    (1, 1, "FR", &["/pricing", "!Signup", "/thanks/pro"]),
    // Out of order: the signup before the pricing page counts for nothing.
    (2, 2, "DE", &["!Signup", "/pricing"]),
    // Across visits: the steps of the second visit do not continue the first's.
    (3, 3, "DE", &["/pricing"]),
    (3, 4, "DE", &["!Signup", "/thanks"]),
    // Repeated steps and other pages between.
    (4, 5, "DE", &["/pricing", "/docs", "/pricing", "!Signup"]),
    // No step at all.
    (5, 6, "DE", &["/", "/blog"]),
    // Two visits: the visitor counts once, as far as their furthest visit went.
    (6, 7, "DE", &["/pricing", "!Signup"]),
    (6, 8, "DE", &["/pricing", "!Signup", "/thanks"]),
    // The last step before the first does not count.
    (7, 9, "DE", &["/thanks", "/pricing", "!Signup"]),
];

/// The hand-made rows, visit columns stamped as the collector would.
pub fn rows() -> Vec<EventRow> {
    let mut rows = Vec::new();
    let mut push = |visitor: u64, visit: u64, country: &str, ts: i64, event: &str| {
        let (name, path) = match event.strip_prefix('!') {
            Some(name) => (name, "/"),
            None => ("pageview", event),
        };
        rows.push(EventRow {
            site: FUNNEL_SITE.into(),
            timestamp: ts as u32,
            name: name.into(),
            hostname: FUNNEL_SITE.into(),
            pathname: path.into(),
            visitor_id: 7_000 + visitor,
            session_id: 7_000 + visit,
            country: country.into(),
            device: "desktop".into(),
            interactive: 1,
            ..EventRow::default()
        });
    };
    for &(visitor, visit, country, events) in VISITS {
        let start = utc_seconds("2026-03-25", 8 + visit as i64, 0);
        for (i, event) in events.iter().enumerate() {
            push(visitor, visit, country, start + 60 * i as i64, event);
        }
    }
    // A visit started 2026-03-26 23:59, its signup after midnight: it belongs to the 26th.
    let late = utc_seconds("2026-03-26", 23, 59);
    push(8, 10, "DE", late, "/pricing");
    push(8, 10, "DE", late + 120, "!Signup");
    // 2026-03-24: a pricing page view and a signup in the same second, in no knowable order:
    // never counted as in order.
    let same = utc_seconds("2026-03-24", 12, 0);
    push(9, 11, "DE", same, "/pricing");
    push(9, 11, "DE", same, "!Signup");
    stamp_visits(&mut rows);
    rows
}

impl Service {
    /// A funnel question: status and body.
    pub async fn post_funnel(
        &self,
        key: Option<&str>,
        share: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut url = format!("{}/api/v2/funnel", self.base);
        if let Some(token) = share {
            url.push_str(&format!("?auth={token}"));
        }
        let mut request = self.http.post(url).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Visitors per step of a funnel that must succeed (the operator's key: every site).
    async fn funnel_visitors(&self, body: Value) -> Vec<u64> {
        let (status, got) = self
            .post_funnel(Some(&self.operator_key), None, &body)
            .await;
        assert_eq!(status, 200, "{body}: {got}");
        got["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("{got}"))
            .iter()
            .map(|s| s["visitors"].as_u64().unwrap())
            .collect()
    }
}

pub async fn hand_made_visits(s: &Service) {
    let day = json!(["2026-03-25", "2026-03-25"]);
    let checkout = json!([{"page": "/pricing"}, {"event": "Signup"}, {"goal": "Visit /thanks*"}]);
    let body = json!({"site_id": FUNNEL_SITE, "date_range": day, "steps": checkout});
    let (status, got) = s.post_funnel(Some(&s.operator_key), None, &body).await;
    assert_eq!(status, 200, "{got}");
    // Pricing: visitors 1, 2, 3, 4, 6, 7; then signup: 1, 4, 6, 7; then thanks: 1, 6.
    let steps = got["steps"].as_array().unwrap();
    let visitors: Vec<u64> = steps
        .iter()
        .map(|s| s["visitors"].as_u64().unwrap())
        .collect();
    assert_eq!(visitors, [6, 4, 2], "{got}");
    assert_eq!(steps[0]["label"], "Visit /pricing");
    assert_eq!(steps[2]["label"], "Visit /thanks*");
    assert_eq!(steps[1]["conversion_rate"], json!(66.67));
    assert_eq!(steps[2]["conversion_rate"], json!(33.33));
    assert_eq!(steps[2]["conversion_rate_step"], json!(50.0));
    assert_eq!(steps[1]["dropoff"], json!(2));
    assert_eq!(steps[1]["dropoff_percentage"], json!(33.33));
    assert_eq!(steps[0]["dropoff"], json!(0));
    assert_eq!(got["meta"]["conversion_rate"], json!(33.33));
    assert_eq!(
        got["meta"]["date_range"],
        json!(["2026-03-25", "2026-03-25"])
    );

    // A repeated step: only visitor 4 saw /pricing again after /docs.
    let repeated = json!({"site_id": FUNNEL_SITE, "date_range": day,
        "steps": [{"page": "/pricing"}, {"page": "/docs"}, {"page": "/pricing"}]});
    assert_eq!(s.funnel_visitors(repeated).await, [6, 1, 1]);
    // One event is never two steps: /pricing twice needs two page views (visitor 4's).
    let twice = json!({"site_id": FUNNEL_SITE, "date_range": day,
        "steps": [{"page": "/pricing"}, {"page": "/pricing"}]});
    assert_eq!(s.funnel_visitors(twice).await, [6, 1]);
    // `*` patterns: /thanks and /thanks/pro after a signup (visitors 1, 3's second visit, 6;
    // 7 thanked before signing up).
    let patterns = json!({"site_id": FUNNEL_SITE, "date_range": day,
        "steps": [{"event": "Signup"}, {"page": "/thanks*"}]});
    assert_eq!(s.funnel_visitors(patterns).await, [6, 3]);
    // Filters choose the visits: only visitor 1 is in France; event filters keep the visits
    // with a matching event.
    let filtered = |filters: Value| json!({"site_id": FUNNEL_SITE, "date_range": day, "steps": checkout, "filters": filters});
    assert_eq!(
        s.funnel_visitors(filtered(json!([["is", "visit:country", ["FR"]]])))
            .await,
        [1, 1, 1]
    );
    assert_eq!(
        s.funnel_visitors(filtered(json!([["is", "event:page", ["/docs"]]])))
            .await,
        [1, 1, 0]
    );
    assert_eq!(
        s.funnel_visitors(filtered(json!([["not", ["is", "visit:country", ["FR"]]]])))
            .await,
        [5, 3, 1]
    );
    // The visit past midnight belongs to the day it started.
    let late = |day: &str| {
        json!({"site_id": FUNNEL_SITE, "date_range": [day, day],
            "steps": [{"page": "/pricing"}, {"event": "Signup"}]})
    };
    assert_eq!(s.funnel_visitors(late("2026-03-26")).await, [1, 1]);
    assert_eq!(s.funnel_visitors(late("2026-03-27")).await, [0, 0]);
    assert_eq!(
        s.funnel_visitors(late("2026-03-24")).await,
        [1, 0],
        "the same second"
    );
}

/// Whether an event is a step.
type StepTest = dyn Fn(&EventRow) -> bool;

/// The furthest step of `steps` a visit reaches, walked in plain Rust: events in time order
/// (the fixture's visits have one event per second at most), each taking the visit one step
/// further when it is the next step; one event is never two steps.
fn reached(events: &[&EventRow], steps: &[&StepTest]) -> usize {
    let mut events = events.to_vec();
    events.sort_by_key(|e| e.timestamp);
    let mut level = 0;
    for e in events {
        if level < steps.len() && steps[level](e) {
            level += 1;
        }
    }
    level
}

pub async fn on_the_fixture(s: &Service) {
    let (start, end) = (
        utc_seconds("2026-03-24", 0, 0),
        utc_seconds("2026-04-01", 0, 0),
    );
    let page = |p: &'static str| move |e: &EventRow| e.name == "pageview" && e.pathname == p;
    let blog = |e: &EventRow| e.name == "pageview" && e.pathname.starts_with("/blog/");
    let signup = |e: &EventRow| e.name == "Signup";
    let home = page("/");
    let pricing = page("/pricing");
    let docs = page("/docs");
    let cases: Vec<(Value, Vec<&StepTest>, Option<&str>)> = vec![
        (
            json!([{"page": "/"}, {"page": "/pricing"}, {"event": "Signup"}]),
            vec![&home, &pricing, &signup],
            None,
        ),
        (
            json!([{"page": "/blog/*"}, {"goal": "Signup"}, {"page": "/blog/*"}, {"page": "/docs"}]),
            vec![&blog, &signup, &blog, &docs],
            None,
        ),
        (
            json!([{"page": "/pricing"}, {"page": "/pricing"}]),
            vec![&pricing, &pricing],
            Some("FR"),
        ),
    ];
    for (steps, conditions, country) in cases {
        let mut visits: HashMap<u64, Vec<&EventRow>> = HashMap::new();
        for e in &s.fixture {
            let started = i64::from(e.visit_start);
            if e.site == SITE
                && e.name != "engagement"
                && (start..end).contains(&started)
                && country.is_none_or(|c| e.country == c)
            {
                visits.entry(e.session_id).or_default().push(e);
            }
        }
        let mut furthest: BTreeMap<u64, usize> = BTreeMap::new();
        for events in visits.values() {
            let level = reached(events, &conditions);
            let best = furthest.entry(events[0].visitor_id).or_default();
            *best = (*best).max(level);
        }
        let want: Vec<u64> = (1..=conditions.len())
            .map(|i| furthest.values().filter(|&&l| l >= i).count() as u64)
            .collect();
        assert!(want[0] > 0, "a funnel worth checking: {want:?}");
        println!("funnel {steps} {country:?}: {want:?}");
        let mut body = json!({"site_id": SITE, "date_range": ["2026-03-24", "2026-03-31"],
            "steps": steps.clone()});
        if let Some(c) = country {
            body["filters"] = json!([["is", "visit:country", [c]]]);
        }
        assert_eq!(s.funnel_visitors(body.clone()).await, want, "{body}");
    }
}

pub async fn refusals_and_access(s: &Service) {
    let body = json!({"site_id": SITE, "date_range": "7d", "date": "2026-03-31",
        "steps": [{"page": "/pricing"}, {"event": "Signup"}]});
    // Who may ask, as for v2: the site's key, its share link, the operator's key.
    for (key, share) in [
        (Some(s.key.as_str()), None),
        (None, Some(SHARE_TOKEN)),
        (Some(s.operator_key.as_str()), None),
    ] {
        let (status, got) = s.post_funnel(key, share, &body).await;
        assert_eq!(status, 200, "{key:?} {share:?}: {got}");
    }
    let (status, _) = s.post_funnel(None, None, &body).await;
    assert_eq!(status, 401, "no credentials");
    let (status, _) = s.post_funnel(Some("nope"), None, &body).await;
    assert_eq!(status, 401, "an unknown key");
    let (status, _) = s.post_funnel(Some(&s.berlin_key), None, &body).await;
    assert_eq!(status, 403, "another site's key");
    let mut unknown = body.clone();
    unknown["site_id"] = json!("nowhere.example");
    let (status, _) = s.post_funnel(Some(&s.key), None, &unknown).await;
    assert_eq!(status, 404, "an unknown site");
    let mut berlin = body.clone();
    berlin["site_id"] = json!(BERLIN);
    let (status, _) = s.post_funnel(None, Some(SHARE_TOKEN), &berlin).await;
    assert_eq!(status, 401, "a share link of another site");

    // Bad bodies: 400 naming the field.
    let bad = |field: &str, value: Value| {
        let mut b = body.clone();
        b[field] = value;
        b
    };
    for (request, says) in [
        (bad("steps", json!([{"page": "/pricing"}])), "#/steps"),
        (
            bad("steps", json!([{"page": "/a"}, {"goal": "Nope"}])),
            "#/steps/1/goal",
        ),
        (
            bad("steps", json!([{"page": "a"}, {"event": "b"}])),
            "#/steps/0/page",
        ),
        (bad("date_range", json!("fortnight")), "#/date_range"),
        (
            bad("filters", json!([["is", "visit:nope", ["x"]]])),
            "filters",
        ),
        (bad("funnel", json!("Saved")), "not both"),
        (bad("pagination", json!({})), "unknown field"),
    ] {
        let (status, got) = s.post_funnel(Some(&s.key), None, &request).await;
        assert_eq!(status, 400, "{request}: {got}");
        assert!(got.to_string().contains(says), "{request}: {got}");
    }
    // A saved funnel that does not exist: 404.
    let saved = json!({"site_id": SITE, "date_range": "7d", "funnel": "Nope"});
    let (status, got) = s.post_funnel(Some(&s.key), None, &saved).await;
    assert_eq!(status, 404, "{got}");
}
