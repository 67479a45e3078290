//! The fixture: events of three sites, the same on every run.

use glimpse_collector::ingest::sessions::stamp_visits;
use glimpse_core::schema::EventRow;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::common::Lcg;
use crate::{BERLIN, OTHER, SITE};

pub fn utc_seconds(date: &str, hour: i64, minute: i64) -> i64 {
    let d: Date = date.parse().unwrap();
    d.to_zoned(TimeZone::UTC).unwrap().timestamp().as_second() + hour * 3600 + minute * 60
}

pub fn fixture() -> Vec<EventRow> {
    let mut rng = Lcg(2026);
    let pages = ["/", "/pricing", "/blog/a", "/blog/b", "/docs"];
    // (referrer_source, referrer, utm_source, utm_medium, utm_campaign)
    let sources = [
        ("", "", "", "", ""),
        ("Google", "google.com/", "", "", ""),
        ("Hacker News", "news.ycombinator.com/item", "", "", ""),
        ("newsletter", "", "newsletter", "email", "spring"),
    ];
    let places = [
        ("DE", "DE-BE", "Berlin"),
        ("FR", "FR-IDF", "Paris"),
        ("US", "US-CA", "San Francisco"),
        ("", "", ""),
    ];
    let devices = [
        ("desktop", "Firefox", "128", "GNU/Linux", ""),
        ("mobile", "Chrome", "131", "Android", "15"),
        ("tablet", "Safari", "17", "iOS", "17.1"),
    ];
    let mut rows = Vec::new();
    let mut session_id = 1000u64;
    for (site, visitors, days) in [(SITE, 40u64, 8u64), (BERLIN, 15, 3), (OTHER, 5, 8)] {
        for v in 0..visitors {
            let person = (site.len() as u64) * 1_000_000 + v * 7919 + 1;
            let place = places[rng.next(places.len() as u64) as usize];
            let device = devices[rng.next(devices.len() as u64) as usize];
            for _ in 0..1 + rng.next(3) {
                session_id += 1;
                // example.com and other.org: 2026-03-24..31; berlin.example: 28..30 UTC.
                let first_day = if site == BERLIN { 28 } else { 24 };
                let day = first_day + rng.next(days);
                // As the collector assigns them: one id per person and day of the visit's
                // start (the salt rotates at midnight UTC; a visit keeps its first day's id).
                let visitor_id = person * 100 + day;
                let mut ts = utc_seconds(&format!("2026-03-{day:02}"), 0, 0)
                    + rng.next(24) as i64 * 3600
                    + rng.next(60) as i64 * 60;
                let source = sources[rng.next(sources.len() as u64) as usize];
                let mut page = pages[rng.next(pages.len() as u64) as usize];
                for i in 0..1 + rng.next(5) {
                    let mut row = EventRow {
                        site: site.into(),
                        timestamp: ts as u32,
                        name: "pageview".into(),
                        hostname: site.into(),
                        pathname: page.into(),
                        visitor_id,
                        session_id,
                        browser: device.1.into(),
                        browser_version: device.2.into(),
                        os: device.3.into(),
                        os_version: device.4.into(),
                        device: device.0.into(),
                        country: place.0.into(),
                        region: place.1.into(),
                        city: place.2.into(),
                        interactive: 1,
                        ..EventRow::default()
                    };
                    if i == 0 {
                        row.referrer_source = source.0.into();
                        row.referrer = source.1.into();
                        row.utm_source = source.2.into();
                        row.utm_medium = source.3.into();
                        row.utm_campaign = source.4.into();
                    }
                    match rng.next(6) {
                        0 if i > 0 => {
                            row.name = "Signup".into();
                            let plan = if rng.next(2) == 0 { "pro" } else { "free" };
                            row.prop_keys = vec!["plan".into()];
                            row.prop_values = vec![plan.into()];
                        }
                        1 if i > 0 => {
                            row.name = "Download".into();
                            row.interactive = 0;
                        }
                        _ => page = pages[rng.next(pages.len() as u64) as usize],
                    }
                    if row.name == "pageview" {
                        row.pathname = page.into();
                    }
                    let is_pageview = row.name == "pageview";
                    rows.push(row.clone());
                    ts += 10 + rng.next(400) as i64;
                    if is_pageview && rng.next(2) == 0 {
                        rows.push(EventRow {
                            name: "engagement".into(),
                            timestamp: ts as u32,
                            scroll_depth: rng.next(101) as u8,
                            engagement_ms: 1000 + rng.next(60_000) as u32,
                            prop_keys: vec![],
                            prop_values: vec![],
                            referrer_source: String::new(),
                            referrer: String::new(),
                            utm_source: String::new(),
                            utm_medium: String::new(),
                            utm_campaign: String::new(),
                            ..row
                        });
                        ts += 10 + rng.next(100) as i64;
                    }
                }
            }
        }
    }
    // Two visits across midnight UTC, one past the end of March: their events count on the day
    // they happen, the visits on the day they started.
    for (n, day, next) in [
        (1u64, "2026-03-27", "2026-03-28"),
        (2, "2026-03-31", "2026-04-01"),
    ] {
        session_id += 1;
        let start_day: u64 = day[8..].parse().unwrap();
        for (i, ts) in [
            utc_seconds(day, 23, 50),
            utc_seconds(day, 23, 58),
            utc_seconds(next, 0, 5),
        ]
        .into_iter()
        .enumerate()
        {
            rows.push(EventRow {
                site: SITE.into(),
                timestamp: ts as u32,
                name: "pageview".into(),
                hostname: SITE.into(),
                pathname: pages[i].into(),
                visitor_id: (90_000_000 + n) * 100 + start_day,
                session_id,
                browser: "Firefox".into(),
                browser_version: "128".into(),
                os: "GNU/Linux".into(),
                device: "desktop".into(),
                interactive: 1,
                ..EventRow::default()
            });
        }
    }
    // The visit columns, as the collector stamps them on rows it receives.
    stamp_visits(&mut rows);
    rows
}
