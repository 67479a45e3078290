//! A bounded randomized attack on the live collector (real TCP, in-process server): 100,000
//! malformed, truncated, oversized, wrong-typed, invalid-UTF-8, deeply nested and mutated
//! bodies, plus valid ones. Every answer must be 2xx or 4xx, every body the parser rejects must
//! get a 4xx, and the only rows stored are those of `202`-answered valid beacons.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glimpse_collector::http::Readiness;
use glimpse_collector::ingest::beacon::{self, BeaconLimits};
use glimpse_collector::sink::{DropCounts, MemorySink};
use glimpse_core::config::Config;
use glimpse_core::site::Site;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOTAL: usize = 100_000;
const WORKERS: usize = 8;
const MAX_BODY: usize = 4096;
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn valid(rng: &mut StdRng, i: usize) -> String {
    format!(
        r#"{{"n":"pageview","u":"https://example.com/v/{i}?x={}","d":"example.com","r":"https://ref.example.org/","w":{},"p":{{"k":"{}"}}}}"#,
        rng.random::<u32>(),
        rng.random_range(0..4000),
        rng.random::<u16>()
    )
}

fn random_json(rng: &mut StdRng, depth: u32) -> String {
    match rng.random_range(0..8) {
        0 => "null".into(),
        1 => rng.random::<bool>().to_string(),
        2 => rng.random::<i64>().to_string(),
        3 => format!("{}", rng.random::<f64>() * 1e12 - 5e11),
        4 => format!("\"{}\"", "x".repeat(rng.random_range(0..50))),
        5 if depth < 4 => format!("[{}]", random_json(rng, depth + 1)),
        6 if depth < 4 => format!("{{\"a\":{}}}", random_json(rng, depth + 1)),
        _ => "\"\\u0000\"".into(),
    }
}

/// One hostile (or, 1 in 8, valid) body.
fn body(rng: &mut StdRng, i: usize) -> Vec<u8> {
    match i % 8 {
        0 => (0..rng.random_range(0..300))
            .map(|_| rng.random())
            .collect(),
        1 => {
            let mut b = valid(rng, i).into_bytes();
            let at = rng.random_range(10..b.len() - 2);
            b[at] = 0xC3; // a lone UTF-8 lead byte
            b[at + 1] = b'"';
            b
        }
        2 => {
            let b = valid(rng, i).into_bytes();
            let cut = rng.random_range(0..b.len());
            b[..cut].to_vec()
        }
        3 => {
            if rng.random_range(0..10) == 0 {
                // Oversized (over max_body_bytes), otherwise valid.
                format!(
                    r#"{{"n":"pageview","u":"https://example.com/{}","d":"example.com"}}"#,
                    "o".repeat(MAX_BODY)
                )
                .into_bytes()
            } else {
                format!(
                    r#"{{"n":"pageview","u":"https://example.com/","d":"example.com","p":{{{}}}}}"#,
                    (0..rng.random_range(31..60))
                        .map(|k| format!("\"k{k}\":1"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
                .into_bytes()
            }
        }
        4 => {
            let fields = ["n", "u", "d", "r", "w", "h", "p", "i", "sd", "e"];
            let field = fields[rng.random_range(0..fields.len())];
            let value = random_json(rng, 0);
            let mut b = valid(rng, i);
            b.pop();
            format!("{b},\"{field}\":{value}}}").into_bytes()
        }
        5 => {
            let depth = rng.random_range(100..3000);
            if rng.random::<bool>() {
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            } else {
                format!(
                    r#"{{"n":"x","u":"https://example.com/","d":"example.com","p":{{"k":{}1{}}}}}"#,
                    "[".repeat(depth),
                    "]".repeat(depth)
                )
                .into_bytes()
            }
        }
        6 => {
            let mut b = valid(rng, i).into_bytes();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
            }
            b
        }
        _ => valid(rng, i).into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_hostile_bodies() {
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        sites: vec![Site::new("example.com")],
        data_dir: data.path().to_path_buf(),
        collector: glimpse_core::config::CollectorConfig {
            max_body_bytes: MAX_BODY,
            batch_max_delay_ms: 50,
            ..Default::default()
        },
        ..Config::default()
    };
    let limits = BeaconLimits::from_config(&config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sink = MemorySink::default();
    let readiness = Arc::new(Readiness::new(None));
    readiness.migrated.store(true, Ordering::SeqCst);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(glimpse_collector::serve_with_sink(
        config,
        listener,
        async {
            let _ = stopped.await;
        },
        sink.clone(),
        readiness,
        Arc::new(DropCounts::default()),
    ));

    let limits = Arc::new(limits);
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let base = base.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .user_agent(FIREFOX)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut rng = StdRng::seed_from_u64(0x6c1_3b5e + w as u64);
                let (mut accepted, mut by_status) = (0u64, std::collections::BTreeMap::new());
                for i in (w..TOTAL).step_by(WORKERS) {
                    let body = body(&mut rng, i);
                    let parses = beacon::parse(&body, &limits).is_ok();
                    let status = client
                        .post(format!("{base}/api/event"))
                        .header("content-type", "text/plain")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("the server answers every request")
                        .status()
                        .as_u16();
                    *by_status.entry(status).or_insert(0u64) += 1;
                    assert!(
                        (200..300).contains(&status) || (400..500).contains(&status),
                        "status {status} for body {:?}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    );
                    if !parses {
                        assert!(
                            (400..500).contains(&status),
                            "invalid body answered {status}: {:?}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        );
                    }
                    if status == 202 {
                        assert!(parses);
                        accepted += 1;
                    }
                }
                (accepted, by_status)
            })
        })
        .collect();
    let mut accepted = 0;
    let mut by_status = std::collections::BTreeMap::new();
    for worker in workers {
        let (a, s) = worker.await.unwrap();
        accepted += a;
        for (k, v) in s {
            *by_status.entry(k).or_insert(0u64) += v;
        }
    }
    let elapsed = started.elapsed();
    // Still alive and well after the attack.
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    let rows = sink.rows.lock().unwrap().len() as u64;
    println!(
        "{TOTAL} bodies in {:.1} s; answers by status: {by_status:?}; {accepted} accepted, {rows} rows",
        elapsed.as_secs_f64()
    );
    assert_eq!(by_status.values().sum::<u64>(), TOTAL as u64);
    assert!(
        accepted >= (TOTAL / 8) as u64,
        "the valid control bodies were accepted"
    );
    assert_eq!(rows, accepted, "exactly the accepted beacons were stored");
    assert_eq!(report.rows_written, accepted);
}
