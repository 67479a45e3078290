//! nginx (Debian's package) in front of two collectors, with the configuration the README
//! gives (`packaging/nginx/glimpse-collectors.conf`, `hash $remote_addr consistent`), on a
//! real ClickHouse cluster (`common::cluster`). The collectors have separate data directories
//! and share their salts through the cluster (`salt_key`).
//!
//! Distinct clients are distinct source addresses: every client's connections to nginx are
//! bound to its own loopback address (127.0.0.10, 127.0.0.11, …; Linux routes all of
//! 127.0.0.0/8 to `lo`), which is nginx's `$remote_addr`, the hash key, as a real client's
//! address would be. nginx then tells the collectors that address in `X-Forwarded-For`.
//!
//! Checked: each client's requests all reach one collector (nginx's access log names the
//! upstream), both collectors get clients, and every visit is one visit in `glimpse.events`
//! (one session id per visitor). Then one collector stops in the middle of a visit: nginx
//! moves the client to the other collector, the visit splits in two, and
//! `glimpse_visits_begun_elsewhere_total` counts it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{ClusterNode, NodeCount, TestCluster};
use common::{free_addr, serve_metrics_until, wait_for_200, FIREFOX};
use glimpse_core::config::Secret;
use glimpse_core::schema;
use glimpse_core::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NGINX: &str = "/usr/sbin/nginx";
const CLIENTS: u8 = 16;
const PAGES: usize = 4;
const WAIT: Duration = Duration::from_secs(60);

/// nginx as a child process with its own prefix, killed when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    access_log: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// The committed configuration with the two collectors' and nginx's own addresses put in,
    /// inside a minimal main configuration whose files all live in `dir`.
    fn start(dir: &Path, collectors: [SocketAddr; 2]) -> Self {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/nginx/glimpse-collectors.conf"),
        )
        .unwrap();
        let addr = free_addr();
        let access_log = dir.join("access.log");
        let site = shipped
            .replace("collector-a:8080", &collectors[0].to_string())
            .replace("collector-b:8080", &collectors[1].to_string())
            .replace("listen 80;", &format!("listen {addr};"))
            // The test's own log of who reached which collector (the shipped file logs nothing).
            .replace(
                "access_log off;",
                &format!("access_log {} affinity;", access_log.display()),
            );
        assert!(
            shipped.contains("access_log off;"),
            "no visitor addresses on disk"
        );
        assert!(site.contains("hash $remote_addr consistent;"));
        assert!(!site.contains("collector-a") && !site.contains("listen 80;"));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::write(dir.join("glimpse-collectors.conf"), site).unwrap();
        let d = dir.display();
        let main = format!(
            "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format affinity '$remote_addr $status $upstream_addr';
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    include {d}/glimpse-collectors.conf;
}}
",
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx (Debian's nginx package) at /usr/sbin/nginx");
        let nginx = Self {
            child,
            addr,
            access_log,
        };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    /// Which upstreams served each client address, from the access log.
    fn upstreams_by_client(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut map = BTreeMap::<String, BTreeSet<String>>::new();
        for line in std::fs::read_to_string(&self.access_log).unwrap().lines() {
            // A retried request names every upstream tried: `a:1, b:2`.
            let mut parts = line.splitn(3, ' ');
            let (Some(client), Some(_status), Some(upstreams)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            map.entry(client.to_string())
                .or_default()
                .extend(upstreams.split(", ").map(str::to_string));
        }
        map
    }
}

struct Collector {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<glimpse_collector::ServeReport, glimpse_collector::ServeError>>,
}

impl Collector {
    async fn start(cluster: &TestCluster, node: &ClusterNode, data_dir: &Path) -> Self {
        let base = cluster.config();
        let config = Config {
            clickhouse_url: Some(node.server.url().to_string()),
            data_dir: data_dir.to_path_buf(),
            // nginx's address: its X-Forwarded-For is believed.
            trusted_proxies: glimpse_core::proxies::ProxyNets::parse(&["127.0.0.1".into()])
                .unwrap(),
            collector: glimpse_core::config::CollectorConfig {
                salt_key: Some(Secret::from(
                    "the cluster's salt key, 32 characters or more",
                )),
                ..base.collector.clone()
            },
            ..base
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(glimpse_collector::serve(config, listener, async {
            let _ = stopped.await;
        }));
        wait_for_200(
            &reqwest::Client::new(),
            &format!("http://{addr}/ready"),
            WAIT,
        )
        .await;
        Self { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().expect("collector");
    }
}

/// A browser at its own loopback address.
fn client_at(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(FIREFOX)
        .local_address(IpAddr::V4(ip))
        .build()
        .unwrap()
}

fn client_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + i)
}

/// A page view of `path`, reached from `from` on the same site when given.
async fn page_view(client: &reqwest::Client, nginx: SocketAddr, path: &str, from: Option<&str>) {
    let mut body = serde_json::json!({
        "n": "pageview",
        "u": format!("https://example.com{path}"),
        "d": "example.com",
    });
    if let Some(from) = from {
        body["r"] = format!("https://example.com{from}").into();
    }
    let status = client
        .post(format!("http://{nginx}/api/event"))
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202, "{path}");
}

async fn wait_for_rows(node: &ClusterNode, sql: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = node.count(sql).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_hashing_client_addresses_keeps_every_visit_on_one_collector() {
    let cluster = TestCluster::start().await;
    let config = cluster.config();
    let client = glimpse_core::db::connect(&config, config.clickhouse_url.as_deref().unwrap());
    schema::migrate_on(&client, "glimpse", config.clickhouse_cluster.as_ref())
        .await
        .unwrap_or_else(|e| panic!("migrations: {e:?}\n{}", cluster.log_tails()));
    let metrics_stop = CancellationToken::new();
    let metrics_url = serve_metrics_until(&metrics_stop).await;

    let a = Collector::start(&cluster, cluster.node(1, 1), &cluster.dir().join("a")).await;
    let b = Collector::start(&cluster, cluster.node(2, 1), &cluster.dir().join("b")).await;
    let nginx_dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(nginx_dir.path(), [a.addr, b.addr]);

    // Every client browses PAGES pages, the clients' visits interleaved.
    let clients: Vec<reqwest::Client> = (0..CLIENTS).map(|i| client_at(client_ip(i))).collect();
    for page in 0..PAGES {
        for client in &clients {
            let from = page.checked_sub(1).map(|p| format!("/aff-{p}"));
            page_view(client, nginx.addr, &format!("/aff-{page}"), from.as_deref()).await;
        }
    }
    let upstreams = nginx.upstreams_by_client();
    assert_eq!(upstreams.len(), usize::from(CLIENTS), "{upstreams:?}");
    for (client, served_by) in &upstreams {
        assert_eq!(served_by.len(), 1, "{client} reached {served_by:?}");
    }
    let on_a: Vec<&String> = upstreams
        .iter()
        .filter(|(_, s)| s.contains(&a.addr.to_string()))
        .map(|(c, _)| c)
        .collect();
    println!(
        "clients on collector a: {} of {CLIENTS}; access log: {upstreams:?}",
        on_a.len()
    );
    assert!(
        !on_a.is_empty() && on_a.len() < usize::from(CLIENTS),
        "both collectors should have clients: {upstreams:?}"
    );
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &metrics,
            "glimpse_visits_begun_elsewhere_total{signal=\"internal_referrer\"}"
        ),
        0,
        "no visit began elsewhere while every client stayed on its collector"
    );

    // A client of collector a is in the middle of a visit when a stops.
    let moved: Ipv4Addr = on_a[0].parse().unwrap();
    let moved_client = client_at(moved);
    page_view(&moved_client, nginx.addr, "/die-0", Some("/aff-3")).await;
    a.stop().await;
    page_view(&moved_client, nginx.addr, "/die-1", Some("/die-0")).await;
    let served_by = &nginx.upstreams_by_client()[&moved.to_string()];
    assert!(
        served_by.contains(&b.addr.to_string()),
        "nginx did not move {moved} to collector b: {served_by:?}"
    );
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &metrics,
            "glimpse_visits_begun_elsewhere_total{signal=\"internal_referrer\"}"
        ),
        1,
        "the split visit is counted"
    );
    b.stop().await;
    metrics_stop.cancel();

    let node = cluster.node(1, 2);
    let views = u64::from(CLIENTS) * PAGES as u64;
    wait_for_rows(
        node,
        "SELECT count() FROM glimpse.events WHERE pathname LIKE '/aff-%'",
        views,
    )
    .await;
    let visitors = node
        .count("SELECT uniqExact(visitor_id) FROM glimpse.events WHERE pathname LIKE '/aff-%'")
        .await;
    assert_eq!(visitors, u64::from(CLIENTS));
    // One visit per visitor: a visit split between the collectors would have two session ids.
    let visits = node
        .count("SELECT uniqExact(session_id) FROM glimpse.events WHERE pathname LIKE '/aff-%'")
        .await;
    let most = node
        .count(
            "SELECT max(n) FROM (SELECT uniqExact(session_id) AS n FROM glimpse.events \
             WHERE pathname LIKE '/aff-%' GROUP BY visitor_id)",
        )
        .await;
    assert_eq!((visits, most), (u64::from(CLIENTS), 1));

    // The visit cut by the stop is two visits, the second begun on collector b.
    wait_for_rows(
        node,
        "SELECT count() FROM glimpse.events WHERE pathname LIKE '/die-%'",
        2,
    )
    .await;
    let split = node
        .count("SELECT uniqExact(session_id) FROM glimpse.events WHERE pathname LIKE '/die-%'")
        .await;
    assert_eq!(
        split, 2,
        "the stopped collector's visit continued elsewhere"
    );
}
