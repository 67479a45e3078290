//! The load generator: keep-alive HTTP/1.1 clients posting realistic, varied beacons to one
//! URL, either as fast as they can or at a fixed total rate, for a fixed time. Loopback only.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The result of one load run.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub requests: u64,
    pub accepted: u64,
    pub errors: u64,
    pub seconds: f64,
    pub latency: Histogram<u64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// Latency percentile in milliseconds.
    pub fn ms(&self, percentile: f64) -> f64 {
        self.latency.value_at_quantile(percentile / 100.0) as f64 / 1000.0
    }
}

const PAGES: &[&str] = &[
    "/",
    "/pricing",
    "/blog",
    "/blog/privacy-first-analytics",
    "/docs",
    "/docs/install",
    "/docs/api",
    "/about",
    "/contact",
    "/careers",
    "/blog/rust-at-scale",
    "/changelog",
];
const REFERRERS: &[&str] = &[
    "",
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://news.ycombinator.com/",
    "https://www.reddit.com/r/rust/",
    "https://github.com/",
    "https://t.co/abc",
    "",
];
pub const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36",
];

/// A realistic beacon: varied pages (skewed to the first ones), referrers, widths, campaigns.
pub fn beacon(i: u64) -> String {
    let page = PAGES[((i * 7919) % 97 % PAGES.len() as u64) as usize];
    let referrer = REFERRERS[(i % REFERRERS.len() as u64) as usize];
    let width = [390, 412, 768, 1280, 1440, 1920][(i % 6) as usize];
    let campaign = if i.is_multiple_of(10) {
        "?utm_source=newsletter&utm_medium=email"
    } else {
        ""
    };
    let name = if i.is_multiple_of(20) {
        "Signup"
    } else {
        "pageview"
    };
    format!(
        r#"{{"n":"{name}","u":"https://example.com{page}{campaign}","d":"example.com","r":"{referrer}","w":{width}}}"#
    )
}

/// The client address request `i` claims (`X-Forwarded-For`) out of the distinct ones numbered
/// `clients`, in the benchmarking range 198.18.0.0/15: only a header value, the traffic goes
/// to loopback. Loads sent to different collectors get disjoint ranges, as a load balancer
/// hashing on the client address would give them.
pub fn client_address(i: u64, clients: &Range<u32>) -> String {
    let count = u64::from(clients.end.saturating_sub(clients.start).max(1));
    let n = clients.start + (i % count) as u32;
    format!("198.{}.{}.{}", 18 + (n >> 16 & 1), n >> 8 & 255, n & 255)
}

/// Runs `concurrency` clients against `url` for `duration`, as the distinct visitor addresses
/// numbered `clients` (so the collector holds that many open visits). With `rate` (requests/s in
/// total), each client paces itself; without, each sends as fast as answers come.
pub async fn run(
    url: &str,
    concurrency: usize,
    duration: Duration,
    rate: Option<f64>,
    clients: Range<u32>,
) -> LoadResult {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let uri: hyper::Uri = url.parse().expect("load URL");
    let started = Instant::now();
    let deadline = started + duration;
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..4096).map(|i| Bytes::from(beacon(i))).collect());
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let client = client.clone();
            let uri = uri.clone();
            let bodies = bodies.clone();
            let clients = clients.clone();
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let (mut requests, mut accepted, mut errors) = (0u64, 0u64, 0u64);
                let interval = rate.map(|r| Duration::from_secs_f64(concurrency as f64 / r));
                let mut next = Instant::now() + Duration::from_micros(c as u64 * 97 % 1000);
                let mut i = c as u64;
                while Instant::now() < deadline {
                    if let Some(interval) = interval {
                        tokio::time::sleep_until(next.into()).await;
                        next += interval;
                    }
                    let request = hyper::Request::post(uri.clone())
                        .header("content-type", "text/plain")
                        .header(
                            "user-agent",
                            USER_AGENTS[(i % USER_AGENTS.len() as u64) as usize],
                        )
                        .header("x-forwarded-for", client_address(i, &clients))
                        .body(Full::new(
                            bodies[(i % bodies.len() as u64) as usize].clone(),
                        ))
                        .expect("request");
                    i += concurrency as u64;
                    let sent = Instant::now();
                    match client.request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            let _ = response.into_body().collect().await;
                            let micros = sent.elapsed().as_micros() as u64;
                            let _ = histogram.record(micros.max(1));
                            requests += 1;
                            if status == 202 {
                                accepted += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (histogram, requests, accepted, errors)
            })
        })
        .collect();
    let mut result = LoadResult {
        requests: 0,
        accepted: 0,
        errors: 0,
        seconds: 0.0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
    };
    for task in tasks {
        let (histogram, requests, accepted, errors) = task.await.expect("load task");
        let _ = result.latency.add(histogram);
        result.requests += requests;
        result.accepted += accepted;
        result.errors += errors;
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}
