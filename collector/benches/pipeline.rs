//! Per-event costs of the ingest path, in ns/event: payload parse, the whole beacon → row
//! pipeline, user-agent parsing uncached vs cached, GeoIP lookup, the visitor-id hash, and the
//! spool record encoding. `cargo bench -p glimpse-collector`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use glimpse_collector::ingest::beacon::{parse, BeaconLimits};
use glimpse_collector::ingest::geo::GeoIp;
use glimpse_collector::ingest::optout::PrivacySignals;
use glimpse_collector::ingest::pipeline::{process, Enrichers, RequestFacts};
use glimpse_collector::ingest::pseudonym::DailySalts;
use glimpse_collector::ingest::useragent::UserAgentParser;
use glimpse_collector::sink::spool::segment::encode_record;
use glimpse_core::config::Config;
use glimpse_core::site::Site;

const BODY: &[u8] = br#"{"n":"pageview","u":"https://www.example.com/blog/2026/rust-analytics?utm_source=newsletter&utm_medium=email","d":"example.com","r":"https://www.google.com/search?q=privacy+analytics","w":1440,"p":{"plan":"pro"}}"#;
const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

#[path = "../src/ingest/geo_test_dbs.rs"]
mod test_dbs;

/// A small GeoIP2-layout city database written for the run (lookup cost depends on the tree's
/// depth, a few dozen nodes more in a full-size database).
fn geoip() -> Option<GeoIp> {
    let dir = tempfile::tempdir().unwrap();
    let path = test_dbs::write(dir.path(), test_dbs::Kind::MaxMindCity);
    Some(GeoIp::open(&path).unwrap())
}

fn benches(c: &mut Criterion) {
    let limits = BeaconLimits::default();
    let config = Config {
        sites: vec![Site::new("example.com")],
        ..Config::default()
    };
    let enrichers = Enrichers::from_config(&config, geoip());
    let salts = DailySalts::ephemeral(20_000);
    let ip: IpAddr = "81.2.69.142".parse().unwrap();
    let beacon = parse(BODY, &limits).unwrap();

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_beacon", |b| {
        b.iter(|| parse(black_box(BODY), &limits).unwrap())
    });
    let mut i = 0usize;
    group.bench_function("pipeline_beacon_to_row", |b| {
        b.iter(|| {
            i += 1;
            let facts = RequestFacts {
                received_at: 1_700_000_000,
                client_ip: ip,
                user_agent: UAS[i % UAS.len()],
                signals: PrivacySignals::default(),
            };
            process(black_box(&beacon), &facts, &enrichers, &salts).unwrap()
        })
    });
    group.bench_function("user_agent_uncached", |b| {
        b.iter_batched(
            || UserAgentParser::new(1),
            |parser| {
                i += 1;
                parser.parse(black_box(UAS[i % UAS.len()]))
            },
            BatchSize::SmallInput,
        )
    });
    let cached = UserAgentParser::new(100);
    group.bench_function("user_agent_cached", |b| {
        b.iter(|| {
            i += 1;
            cached.parse(black_box(UAS[i % UAS.len()]))
        })
    });
    if enrichers.geo.current().is_some() {
        // Through the swappable handle, as the pipeline does.
        let geo = &enrichers.geo;
        group.bench_function("geoip_lookup", |b| b.iter(|| geo.lookup(black_box(ip))));
    }
    group.bench_function("visitor_id_hash", |b| {
        b.iter(|| salts.visitor_id(black_box("example.com"), black_box(ip), black_box(UAS[0])))
    });
    let facts = RequestFacts {
        received_at: 1_700_000_000,
        client_ip: ip,
        user_agent: UAS[0],
        signals: PrivacySignals::default(),
    };
    let rows: Vec<_> = process(&beacon, &facts, &enrichers, &salts)
        .unwrap()
        .into_iter()
        .map(|p| p.row)
        .collect();
    group.bench_function("spool_record_encode", |b| {
        b.iter(|| encode_record(black_box(&rows)))
    });
    group.finish();
}

criterion_group!(ingest, benches);
criterion_main!(ingest);
