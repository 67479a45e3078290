//! The query benchmark's events: realistic visits (power-law pages, sources, countries,
//! browsers and devices; many visitors; 90 days; 3 sites of very different sizes), made by a
//! deterministic generator in chunks of whole visits, so that memory stays bounded whatever the
//! size and the same run always produces the same data.

use glimpse_core::schema::EventRow;

pub const SITES: [&str; 3] = ["example.com", "shop.example", "blog.example"];
pub const DAYS: u32 = 90;

pub const SOURCES: [&str; 12] = [
    "",
    "Google",
    "",
    "DuckDuckGo",
    "Hacker News",
    "Reddit",
    "GitHub",
    "Bing",
    "X (Twitter)",
    "newsletter",
    "LinkedIn",
    "Facebook",
];
const COUNTRIES: [&str; 10] = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "NL", "CA", "SE"];
const BROWSERS: [&str; 5] = ["Chrome", "Safari", "Firefox", "Edge", "Samsung Internet"];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];

/// A deterministic generator (xorshift): the same data every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A power-law pick in 0..n: low indices much more likely (Zipf-like).
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) - 1.0) as usize % n
    }
}

/// Visits ending before `now`, spread over the [`DAYS`] before it.
pub struct Generator {
    rng: Rng,
    now: u32,
}

impl Generator {
    pub fn new(now: u32) -> Self {
        Self {
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            now,
        }
    }

    /// Appends whole visits to `out` until it holds at least `chunk` rows or `remaining` rows
    /// were written (the last visit of the size is cut there, as a size is an exact count);
    /// returns the rows written. The rows follow from the generator's state alone, so cutting
    /// a size into chunks gives the same events as writing it in one go.
    pub fn chunk(&mut self, chunk: usize, remaining: u64, out: &mut Vec<EventRow>) -> u64 {
        let mut written = 0;
        while out.len() < chunk && written < remaining {
            written += self.visit(None, remaining - written, out);
        }
        written
    }

    /// One visit on the largest site starting at `t` (Unix seconds), as a late arrival for the
    /// rollup's upkeep to find: its rows.
    pub fn late_visit(&mut self, t: u32, out: &mut Vec<EventRow>) -> u64 {
        let before = out.len();
        // The site is drawn as usual (keeping the draws in step), then fixed.
        self.visit(Some(t), u64::MAX, out);
        for row in &mut out[before..] {
            row.site = SITES[0].into();
            row.hostname = SITES[0].into();
        }
        (out.len() - before) as u64
    }

    /// One visit starting at `start` (else at a random moment of the [`DAYS`] before now), at
    /// most `limit` rows of it; the rows written.
    fn visit(&mut self, start: Option<u32>, limit: u64, out: &mut Vec<EventRow>) -> u64 {
        let rng = &mut self.rng;
        let now = self.now;
        let site = SITES[rng.zipf(SITES.len())];
        let person = rng.next() % 2_000_000;
        let session = rng.next();
        let drawn = now - DAYS * 86_400 + (rng.next() % u64::from(DAYS * 86_400)) as u32;
        let mut t = start.unwrap_or(drawn);
        // As the collector assigns ids: one per person and day of the visit's start (the salt
        // rotates at midnight UTC; a visit keeps its first day's id).
        let visitor = (person ^ (u64::from(t / 86_400) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let pages = 1 + rng.zipf(8);
        let source = SOURCES[rng.zipf(SOURCES.len())];
        let country = COUNTRIES[rng.zipf(COUNTRIES.len())];
        let browser = BROWSERS[rng.zipf(BROWSERS.len())];
        let device = DEVICES[rng.zipf(DEVICES.len())];
        let visit_rows = out.len();
        let mut written = 0;
        for p in 0..pages {
            let page = rng.zipf(500);
            out.push(EventRow {
                site: site.into(),
                timestamp: t.min(now - 1),
                name: if p > 0 && rng.next().is_multiple_of(25) {
                    "Signup"
                } else {
                    "pageview"
                }
                .into(),
                hostname: site.into(),
                pathname: format!("/page/{page}"),
                referrer_source: if p == 0 { source } else { "" }.into(),
                visitor_id: visitor,
                session_id: session,
                browser: browser.into(),
                browser_version: "131".into(),
                os: "Linux".into(),
                device: device.into(),
                country: country.into(),
                screen_width: 1280,
                interactive: 1,
                ..EventRow::default()
            });
            t += 5 + (rng.next() % 120) as u32;
            written += 1;
            if written >= limit {
                break;
            }
        }
        // The visit columns, as the collector stamps them.
        glimpse_collector::ingest::sessions::stamp_visits(&mut out[visit_rows..]);
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks cut a size into pieces without changing it: the same rows, the exact count.
    #[test]
    fn chunks_give_the_rows_of_one_go() {
        let now = 2_000_000_000;
        let mut whole = Vec::new();
        assert_eq!(
            Generator::new(now).chunk(usize::MAX, 10_001, &mut whole),
            10_001
        );
        let mut generator = Generator::new(now);
        let (mut pieces, mut remaining) = (Vec::new(), 10_001);
        while remaining > 0 {
            let mut chunk = Vec::new();
            let written = generator.chunk(1000, remaining, &mut chunk);
            assert!(chunk.len() < 1000 + 8, "{}", chunk.len());
            remaining -= written;
            pieces.extend(chunk);
        }
        assert_eq!(whole.len(), 10_001);
        let key = |r: &EventRow| (r.session_id, r.timestamp, r.pathname.clone(), r.visit_entry);
        assert!(whole.iter().map(key).eq(pieces.iter().map(key)));
    }
}
