//! Privacy end to end: beacons with distinctive client addresses (direct, from other loopback
//! addresses, and through a trusted proxy) and distinctive user agents go through the real
//! `glimpse collector` into a real ClickHouse. Then both are stopped and every file under their
//! directories, and the collector's log, is searched for each address (as text and as 4/16
//! bytes) and each raw user agent: there must be none. Bots and opted-out visitors leave no
//! row, only a count.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{free_addr, wait_for_200, TestClickHouse};
use glimpse_core::schema::EventRow;

const PROBE_UA_1: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.207 Safari/537.36";
const PROBE_UA_2: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const HEADLESS: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36";

#[path = "../collector/src/ingest/geo_test_dbs.rs"]
mod geo_test_dbs;

/// A GeoIP2-layout city database with known answers (London, Milton, 2001:218::/32 in Japan),
/// written into `dir` for the run.
fn geoip_db(dir: &Path) -> PathBuf {
    geo_test_dbs::write(dir, geo_test_dbs::Kind::MaxMindCity)
}

struct Send<'a> {
    /// Local loopback address to connect from (the collector sees it as the peer).
    from: &'static str,
    user_agent: &'a str,
    headers: Vec<(&'static str, String)>,
    path: &'a str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_address_or_user_agent_reaches_disk_or_logs() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let ch = TestClickHouse::start().await;
    let addr = free_addr();
    // Outside the directories searched below: the database is not the collector's output.
    let geo_dir = tempfile::tempdir().unwrap();
    let log_path = ch.data_dir().join("collector.log");
    std::fs::create_dir_all(ch.data_dir()).unwrap();
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .arg("collector")
        .env("GLIMPSE_CLICKHOUSE_URL", ch.url())
        .env("GLIMPSE_COLLECTOR_ADDR", addr.to_string())
        .env("GLIMPSE_METRICS_ADDR", "127.0.0.1:0")
        .env("GLIMPSE_SITES", "example.com")
        .env("GLIMPSE_DATA_DIR", ch.data_dir())
        .env("GLIMPSE_GEOIP_DB", geoip_db(geo_dir.path()))
        // Only 127.0.0.1 is a trusted proxy; other loopback addresses are direct clients.
        .env("GLIMPSE_TRUSTED_PROXIES", "127.0.0.1/32")
        .env("GLIMPSE_STORE_IP_PREFIX", "true")
        .env("GLIMPSE_IPV4_PREFIX_LENGTH", "16")
        .env("GLIMPSE_BATCH_MAX_DELAY_MS", "100")
        // The most verbose logging, to prove nothing sensitive is logged even then.
        .env("GLIMPSE_LOG", "trace")
        .stderr(log.try_clone().unwrap())
        .stdout(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{addr}");
    wait_for_200(
        &reqwest::Client::new(),
        &format!("{base}/ready"),
        Duration::from_secs(30),
    )
    .await;

    // Visitors: one through the proxy from London (GeoIP test DB), one via IPv6 through the
    // proxy, two direct from distinctive loopback addresses.
    let visitors = [
        Send {
            from: "127.0.0.1",
            user_agent: PROBE_UA_1,
            headers: vec![("x-forwarded-for", "81.2.69.142".into())],
            path: "/london",
        },
        Send {
            from: "127.0.0.1",
            user_agent: PROBE_UA_2,
            headers: vec![("x-forwarded-for", "[2001:218:4d2:6c::77]:4711".into())],
            path: "/japan",
        },
        Send {
            from: "127.83.41.9",
            user_agent: PROBE_UA_1,
            headers: vec![],
            path: "/direct",
        },
        // A spoofed header from a client that is not a trusted proxy is ignored.
        Send {
            from: "127.61.7.203",
            user_agent: PROBE_UA_2,
            headers: vec![("x-forwarded-for", "216.160.83.56".into())],
            path: "/spoofed",
        },
    ];
    // Filtered visitors: each must be answered 202 and leave no row.
    let filtered = [
        Send {
            from: "127.0.0.1",
            user_agent: GOOGLEBOT,
            headers: vec![("x-forwarded-for", "89.160.20.112".into())],
            path: "/bot",
        },
        Send {
            from: "127.0.0.1",
            user_agent: HEADLESS,
            headers: vec![],
            path: "/headless",
        },
        Send {
            from: "127.0.0.1",
            user_agent: PROBE_UA_1,
            headers: vec![("dnt", "1".into())],
            path: "/dnt",
        },
        Send {
            from: "127.0.0.1",
            user_agent: PROBE_UA_1,
            headers: vec![("sec-gpc", "1".into())],
            path: "/gpc",
        },
        Send {
            from: "127.0.0.1",
            user_agent: PROBE_UA_1,
            headers: vec![("cookie", "glimpse_opt_out=1".into())],
            path: "/cookie",
        },
    ];
    for send in visitors.iter().chain(filtered.iter()) {
        let client = reqwest::Client::builder()
            .local_address(send.from.parse::<IpAddr>().unwrap())
            .user_agent(send.user_agent)
            .build()
            .unwrap();
        let mut request = client
            .post(format!("{base}/api/event"))
            .header("content-type", "text/plain")
            .body(format!(
                r#"{{"n":"pageview","u":"https://example.com{}","d":"example.com","w":1280}}"#,
                send.path
            ));
        for (name, value) in &send.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 202, "{}", send.path);
    }

    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "collector exit status {status}");

    let rows: Vec<EventRow> = ch
        .client
        .query("SELECT ?fields FROM glimpse.events ORDER BY pathname")
        .fetch_all()
        .await
        .unwrap();
    let paths: Vec<&str> = rows.iter().map(|r| r.pathname.as_str()).collect();
    assert_eq!(
        paths,
        ["/direct", "/japan", "/london", "/spoofed"],
        "bots and opt-outs leave no row"
    );
    let by_path = |p: &str| rows.iter().find(|r| r.pathname == p).unwrap();
    let london = by_path("/london");
    assert_eq!(
        (london.country.as_str(), london.city.as_str()),
        ("GB", "London")
    );
    assert_eq!(london.ip_prefix, "81.2.0.0/16");
    assert_eq!(
        (london.browser.as_str(), london.browser_version.as_str()),
        ("Chrome", "124")
    );
    assert_eq!(london.os, "Linux");
    let japan = by_path("/japan");
    assert_eq!(japan.country, "JP");
    assert_eq!(japan.ip_prefix, "2001:218:4d2::/48");
    assert_eq!(
        japan.device, "desktop",
        "w=1280 makes it a desktop-sized screen"
    );
    assert_eq!(by_path("/direct").ip_prefix, "127.83.0.0/16");
    let spoofed = by_path("/spoofed");
    assert_eq!(
        spoofed.ip_prefix, "127.61.0.0/16",
        "header from an untrusted peer ignored"
    );
    assert_eq!(spoofed.country, "", "not the spoofed address's US");

    // Filtered traffic is counted per reason, nothing else about it kept.
    let counts: Vec<(String, u64)> = ch
        .client
        .query(
            "SELECT reason, sum(count) FROM glimpse.dropped_events GROUP BY reason ORDER BY reason",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        counts,
        [
            ("bot".to_string(), 2),
            ("dnt".into(), 1),
            ("gpc".into(), 1),
            ("opt_out".into(), 1)
        ]
    );

    // Stop ClickHouse so everything it holds is on disk, then search every file.
    let TestClickHouse { server, client, .. } = ch;
    let dir = server.dir().parent().unwrap().to_path_buf();
    drop(client);
    server.stop().await;
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for ip in [
        "81.2.69.142",
        "2001:218:4d2:6c::77",
        "127.83.41.9",
        "127.61.7.203",
        "89.160.20.112",
        "216.160.83.56",
    ] {
        let parsed: IpAddr = ip.parse().unwrap();
        needles.push((format!("{ip} as text"), ip.as_bytes().to_vec()));
        let octets = match parsed {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        needles.push((format!("{ip} as bytes"), octets));
    }
    for ua in [
        PROBE_UA_1,
        PROBE_UA_2,
        "124.0.6367.207",
        "17_4_1",
        GOOGLEBOT,
        HEADLESS,
    ] {
        needles.push((format!("user agent {ua:?}"), ua.as_bytes().to_vec()));
    }
    let files = all_files(&dir);
    assert!(files.len() > 20, "searched only {} files", files.len());
    assert!(
        files.iter().any(|f| f == &log_path),
        "the collector log is searched"
    );
    let log_text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log_text.contains("TRACE") || log_text.contains("DEBUG"),
        "verbose log captured"
    );
    let mut hits = Vec::new();
    for file in &files {
        let bytes = readable_content(file);
        for (what, needle) in &needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                hits.push(format!("{what} in {}", file.display()));
            }
        }
    }
    // Positive control: values that are stored must be found by the same search, so a search
    // that could not see into ClickHouse's (compressed) column files would fail here.
    for stored in ["81.2.0.0/16", "127.83.0.0/16", "/spoofed"] {
        let found = files.iter().any(|f| {
            let bytes = readable_content(f);
            bytes.windows(stored.len()).any(|w| w == stored.as_bytes())
        });
        assert!(
            found,
            "the search does not even find the stored value {stored:?}"
        );
    }
    println!(
        "searched {} files for {} needles: {} hits",
        files.len(),
        needles.len(),
        hits.len()
    );
    assert!(
        hits.is_empty(),
        "raw data found on disk:\n{}",
        hits.join("\n")
    );
}

/// A file's bytes, followed, for ClickHouse column files, by their decompressed blocks: LZ4
/// can turn a stored value into back-references, which a byte search would miss.
fn readable_content(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "bin") {
        let decompressed = clickhouse_blocks(&bytes);
        bytes.extend_from_slice(&decompressed);
    }
    bytes
}

/// Decompresses ClickHouse's compressed-file framing: per block a 16-byte checksum, a method
/// byte (0x82 LZ4, 0x02 none), the compressed size (incl. the 9-byte header) and the
/// decompressed size, little endian. Stops at anything it does not understand.
fn clickhouse_blocks(file: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 25 <= file.len() {
        let method = file[at + 16];
        let compressed = u32::from_le_bytes(file[at + 17..at + 21].try_into().unwrap()) as usize;
        let size = u32::from_le_bytes(file[at + 21..at + 25].try_into().unwrap()) as usize;
        let Some(end) = (at + 16)
            .checked_add(compressed)
            .filter(|e| *e <= file.len() && compressed >= 9)
        else {
            break;
        };
        let data = &file[at + 25..end];
        match method {
            0x82 => match lz4_flex::block::decompress(data, size) {
                Ok(block) => out.extend_from_slice(&block),
                Err(_) => break,
            },
            0x02 => out.extend_from_slice(data),
            _ => break,
        }
        at = end;
    }
    out
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .collect()
}
