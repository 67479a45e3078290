//! The spool's per-event costs: the record encoding (and the decoding the shipper does) and
//! the hand-off from request tasks to the open segment and back (32 concurrent appends, as
//! from 32 connections, and one writer alone, with fsync out of the way so that what is
//! measured is the hand-off). `cargo bench -p glimpse-collector --bench spool`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glimpse_collector::sink::spool::{self, segment::encode_record, FsyncPolicy, SpoolConfig};
use glimpse_collector::sink::{MemorySink, WriterControl};
use glimpse_core::schema::EventRow;

/// A row as the pipeline makes it from a typical page view (every visit column set).
fn typical_row() -> EventRow {
    EventRow {
        site: "example.com".into(),
        timestamp: 1_765_000_000,
        name: "pageview".into(),
        hostname: "example.com".into(),
        pathname: "/blog/2026/rust-analytics".into(),
        entry_page: "/blog/2026/rust-analytics".into(),
        referrer: "google.com/search".into(),
        referrer_source: "newsletter".into(),
        utm_source: "newsletter".into(),
        utm_medium: "email".into(),
        visit_referrer: "google.com/search".into(),
        visit_referrer_source: "newsletter".into(),
        visit_utm_source: "newsletter".into(),
        visit_utm_medium: "email".into(),
        visitor_id: 0x1234_5678_9abc_def0,
        session_id: 0x0fed_cba9_8765_4321,
        visit_start: 1_765_000_000,
        visit_entry: 1,
        visit_bounce: 1,
        browser: "Chrome".into(),
        browser_version: "131.0".into(),
        os: "Windows".into(),
        os_version: "10".into(),
        device: "desktop".into(),
        country: "GB".into(),
        region: "GB-ENG".into(),
        city: "London".into(),
        screen_width: 1440,
        interactive: 1,
        prop_keys: vec!["plan".into()],
        prop_values: vec!["pro".into()],
        ..EventRow::default()
    }
}

fn encoding(c: &mut Criterion) {
    let rows = vec![typical_row()];
    let record = encode_record(&rows);
    let mut group = c.benchmark_group("spool_record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_one_buffer", |b| {
        b.iter(|| encode_record(black_box(&rows)))
    });
    // What `encode_record` did before issue 21: serialise, then copy behind the header.
    group.bench_function("encode_serialise_then_copy", |b| {
        b.iter(|| {
            let payload = serde_json::to_vec(black_box(&rows)).unwrap();
            let mut out = Vec::with_capacity(8 + payload.len());
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
            out
        })
    });
    // The shipper's side: every spooled row is parsed back before its insert.
    group.bench_function("decode", |b| {
        b.iter(|| serde_json::from_slice::<Vec<EventRow>>(black_box(&record[8..])).unwrap())
    });
    group.finish();
    println!("spool record of one typical row: {} bytes", record.len());
}

fn hand_off(c: &mut Criterion) {
    const TASKS: u64 = 32;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        dir: dir.path().join("spool"),
        max_bytes: u64::MAX,
        min_free_bytes: 0,
        // The hand-off without the disk: an interval the benchmark never reaches.
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        segment_max_rows: 100_000,
        segment_max_age: Duration::from_secs(3600),
        queue_capacity: 10_000,
        drain_rows_per_sec: 0,
        dead_letter_dir: dir.path().join("dead-letter"),
    };
    let (spool, tasks) = runtime
        .block_on(async { spool::open(config, MemorySink::default(), WriterControl::default()) })
        .unwrap();
    let mut group = c.benchmark_group("spool_hand_off");
    group.throughput(Throughput::Elements(TASKS));
    group.bench_function("append_32_concurrent", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let appends: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let spool = spool.clone();
                        tokio::spawn(async move { spool.append(vec![typical_row()]).await })
                    })
                    .collect();
                for append in appends {
                    append.await.unwrap().unwrap();
                }
            })
        })
    });
    group.finish();
    // One connection's appends, one after another: each is a group of its own, so this is
    // the hand-off's fixed cost (two thread crossings) with no batching to share it.
    let mut group = c.benchmark_group("spool_hand_off");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_one_writer", |b| {
        b.iter(|| runtime.block_on(async { spool.append(vec![typical_row()]).await.unwrap() }))
    });
    group.finish();
    drop(spool);
    runtime.block_on(tasks.finish());
}

criterion_group!(spool_benches, encoding, hand_off);
criterion_main!(spool_benches);
