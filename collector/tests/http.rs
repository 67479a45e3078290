//! The collector's HTTP behaviour, served in-process on a real socket with an in-memory sink:
//! statuses, CORS, limits, health endpoints and graceful shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glimpse_collector::http::Readiness;
use glimpse_collector::sink::{DropCounts, MemorySink};
use glimpse_collector::{serve_with_sink, ServeReport};
use glimpse_core::config::Config;
use glimpse_core::site::Site;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    base: String,
    /// The process's metrics listener (`metrics_addr`), apart from the collector's port.
    metrics_base: String,
    sink: MemorySink,
    drops: Arc<DropCounts>,
    _data: tempfile::TempDir,
    readiness: Arc<Readiness>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<ServeReport, glimpse_collector::ServeError>>,
    client: reqwest::Client,
}

impl Server {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config {
            sites: vec![Site::new("example.com")],
            data_dir: data.path().to_path_buf(),
            collector: glimpse_core::config::CollectorConfig {
                batch_max_delay_ms: 20,
                ..Default::default()
            },
            ..Config::default()
        };
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_base = format!("http://{}", metrics.local_addr().unwrap());
        // Lives as long as the test's runtime.
        tokio::spawn(glimpse_core::telemetry::serve_metrics(
            metrics,
            std::future::pending(),
        ));
        let sink = MemorySink::default();
        let readiness = Arc::new(Readiness::new(None));
        readiness.migrated.store(true, Ordering::SeqCst);
        let (stop, stopped) = oneshot::channel::<()>();
        let drops = Arc::new(DropCounts::default());
        let task = tokio::spawn(serve_with_sink(
            config,
            listener,
            async {
                let _ = stopped.await;
            },
            sink.clone(),
            readiness.clone(),
            drops.clone(),
        ));
        Self {
            base,
            metrics_base,
            sink,
            drops,
            _data: data,
            readiness,
            stop: Some(stop),
            task,
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> Reply {
        let mut request = self
            .client
            .post(format!("{}/api/event", self.base))
            .header("user-agent", FIREFOX)
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        Reply::from(request.send().await.unwrap()).await
    }

    async fn event(&self, body: &str) -> Reply {
        self.post(Some("text/plain;charset=UTF-8"), body.to_string())
            .await
    }

    async fn stop(mut self) -> (ServeReport, MemorySink) {
        let _ = self.stop.take().unwrap().send(());
        let report = self.task.await.unwrap().unwrap();
        (report, self.sink)
    }
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

const PAGEVIEW: &str = r#"{"n":"pageview","u":"https://example.com/a","d":"example.com","w":1024}"#;

#[tokio::test]
async fn accepted_beacon_is_202_with_cors_and_reaches_the_sink() {
    let server = Server::start(|_| {}).await;
    let reply = server.event(PAGEVIEW).await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let json = server
        .post(Some("application/json"), PAGEVIEW.to_string())
        .await;
    assert_eq!(json.status, 202);
    let no_type = server.post(None, PAGEVIEW.to_string()).await;
    assert_eq!(no_type.status, 202);
    let (report, sink) = server.stop().await;
    assert_eq!(report.rows_written, 3);
    let rows = sink.rows.lock().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].site, "example.com");
    assert_eq!(rows[0].pathname, "/a");
    assert_eq!(rows[0].screen_width, 1024);
}

#[tokio::test]
async fn preflight_allows_any_origin() {
    let server = Server::start(|_| {}).await;
    let response = server
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/event", server.base),
        )
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    let reply = Reply::from(response).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        reply.header("access-control-allow-methods"),
        Some("POST, OPTIONS")
    );
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("Content-Type")
    );
    server.stop().await;
}

#[tokio::test]
async fn invalid_beacons_get_400_naming_the_field_and_store_nothing() {
    let server = Server::start(|_| {}).await;
    let cases = [
        ("{not json", "body"),
        ("[]", "body"),
        (r#"{"u":"https://example.com/","d":"example.com"}"#, "n"),
        (r#"{"n":"pageview","u":"nope","d":"example.com"}"#, "u"),
        (r#"{"n":"pageview","u":"https://example.com/"}"#, "d"),
        (
            r#"{"n":"pageview","u":"https://example.com/","d":"example.com","w":"wide"}"#,
            "w",
        ),
        (
            r#"{"n":"x","u":"https://example.com/","d":"example.com","p":{"a":{"b":1}}}"#,
            "p.a",
        ),
    ];
    for (body, field) in cases {
        let reply = server.event(body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.json()["field"], field, "{body}");
        assert!(reply.json()["error"].as_str().unwrap().len() > 3);
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    }
    let invalid_utf8 = server
        .post(Some("text/plain"), vec![b'{', 0xff, 0xfe, b'}'])
        .await;
    assert_eq!(invalid_utf8.status, 400);
    let (report, sink) = server.stop().await;
    assert_eq!(report.rows_written, 0);
    assert!(sink.rows.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unknown_site_is_refused_and_counted() {
    let server = Server::start(|_| {}).await;
    let before = metric(
        &server,
        "glimpse_events_dropped_total{reason=\"unknown_site\"}",
    )
    .await;
    let reply = server
        .event(r#"{"n":"pageview","u":"https://evil.test/","d":"evil.test"}"#)
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["field"], "d");
    let after = metric(
        &server,
        "glimpse_events_dropped_total{reason=\"unknown_site\"}",
    )
    .await;
    assert!(after >= before + 1.0, "{before} -> {after}");
    let (_, sink) = server.stop().await;
    assert!(sink.rows.lock().unwrap().is_empty());
}

#[tokio::test]
async fn limits_answer_413_and_415() {
    let server = Server::start(|c| c.collector.max_body_bytes = 200).await;
    let big = format!(
        r#"{{"n":"pageview","u":"https://example.com/{}","d":"example.com"}}"#,
        "a".repeat(300)
    );
    assert_eq!(server.event(&big).await.status, 413);
    // Without Content-Length (chunked), the limit still holds.
    assert_eq!(raw_chunked_post(&server.base, big.as_bytes()).await, 413);
    // A chunked body under the limit is fine.
    assert_eq!(
        raw_chunked_post(&server.base, PAGEVIEW.as_bytes()).await,
        202
    );

    let form = server
        .post(
            Some("application/x-www-form-urlencoded"),
            PAGEVIEW.to_string(),
        )
        .await;
    assert_eq!(form.status, 415);
    assert!(form.json()["error"]
        .as_str()
        .unwrap()
        .contains("text/plain"));
    let (_, sink) = server.stop().await;
    // Only the small chunked beacon was stored.
    assert_eq!(sink.rows.lock().unwrap().len(), 1);
}

/// Sends a chunked POST by hand (no Content-Length) and returns the status code.
async fn raw_chunked_post(base: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST /api/event HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
         User-Agent: {FIREFOX}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(64) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer 413 and close before reading everything; ignore write errors.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let server = Server::start(|_| {}).await;
    let response = server
        .client
        .get(format!("{}/api/event", server.base))
        .send()
        .await
        .unwrap();
    let reply = Reply::from(response).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST, OPTIONS"));
    let response = server
        .client
        .post(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let response = server
        .client
        .get(format!("{}/nope", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    server.stop().await;
}

#[tokio::test]
async fn full_queue_answers_503_with_retry_after() {
    let server = Server::start(|c| {
        c.collector.spool = false;
        c.collector.queue_capacity = 2;
        c.collector.batch_max_rows = 1;
    })
    .await;
    server.sink.failing.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let reply = server.event(PAGEVIEW).await;
        if reply.status == 503 {
            assert_eq!(reply.header("retry-after"), Some("1"));
        }
        statuses.push(reply.status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!(
        (2..=3).contains(&accepted),
        "queue of 2 (+1 batch in the writer): {statuses:?}"
    );
    server.sink.failing.store(false, Ordering::SeqCst);
    let (report, sink) = server.stop().await;
    // Every 202 was written; no 503 was.
    assert_eq!(report.rows_written as usize, accepted);
    assert_eq!(sink.rows.lock().unwrap().len(), accepted);
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let server = Server::start(|c| c.collector.spool = false).await;
    let get = |path: &str| {
        let request = server.client.get(format!("{}{path}", server.base));
        async move { Reply::from(request.send().await.unwrap()).await }
    };
    assert_eq!(get("/health").await.status, 200);
    assert_eq!(get("/ready").await.status, 200);
    server.readiness.migrated.store(false, Ordering::SeqCst);
    let not_ready = get("/ready").await;
    assert_eq!(not_ready.status, 503);
    assert!(not_ready.json()["reason"]
        .as_str()
        .unwrap()
        .contains("migrations"));
    server.readiness.migrated.store(true, Ordering::SeqCst);

    assert_eq!(server.event(PAGEVIEW).await.status, 202);
    assert_eq!(server.event("{").await.status, 400);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not on the public port: only on the metrics listener.
    assert_eq!(get("/metrics").await.status, 404);
    let metrics = Reply::from(
        server
            .client
            .get(format!("{}/metrics", server.metrics_base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(metrics.status, 200);
    for name in [
        "glimpse_events_accepted_total",
        "glimpse_events_rejected_total{reason=\"invalid\"}",
        "glimpse_queue_depth",
        "glimpse_batches_total",
        "glimpse_rows_written_total",
        "glimpse_insert_duration_seconds_bucket",
        "# HELP glimpse_events_accepted_total ",
        "glimpse_build_info{",
    ] {
        assert!(
            metrics.body.contains(name),
            "no {name} in\n{}",
            metrics.body
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_writes_everything_accepted() {
    let server = Server::start(|c| {
        c.collector.batch_max_rows = 10_000;
        c.collector.batch_max_delay_ms = 60_000;
    })
    .await;
    let mut accepted = 0;
    for _ in 0..50 {
        if server.event(PAGEVIEW).await.status == 202 {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 50);
    // Nothing flushed yet (huge batch, long delay); shutdown must flush it.
    assert!(server.sink.rows.lock().unwrap().is_empty());
    let base = server.base.clone();
    let (report, sink) = server.stop().await;
    assert_eq!(report.rows_written, 50);
    assert_eq!(sink.rows.lock().unwrap().len(), 50);
    // The listener is closed.
    assert!(reqwest::get(format!("{base}/health")).await.is_err());
}

async fn metric(server: &Server, name: &str) -> f64 {
    let body = server
        .client
        .get(format!("{}/metrics", server.metrics_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn opted_out_visitors_and_bots_get_202_and_are_only_counted() {
    let server = Server::start(|_| {}).await;
    let send = |headers: Vec<(&'static str, &'static str)>| {
        let mut request = server
            .client
            .post(format!("{}/api/event", server.base))
            .header("content-type", "text/plain")
            .body(PAGEVIEW);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let firefox = ("user-agent", FIREFOX);
    assert_eq!(send(vec![firefox, ("dnt", "1")]).await, 202);
    assert_eq!(send(vec![firefox, ("sec-gpc", "1")]).await, 202);
    assert_eq!(
        send(vec![firefox, ("cookie", "glimpse_opt_out=1")]).await,
        202
    );
    assert_eq!(
        send(vec![(
            "user-agent",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
        )])
        .await,
        202
    );
    assert_eq!(send(vec![("user-agent", "curl/8.5.0")]).await, 202);
    assert_eq!(send(vec![]).await, 202, "no user agent at all");
    assert_eq!(send(vec![firefox]).await, 202);
    let mut counts: Vec<(String, String, u64)> = server
        .drops
        .take()
        .into_iter()
        .map(|r| (r.site, r.reason, r.count))
        .collect();
    counts.sort();
    let site = "example.com".to_string();
    assert_eq!(
        counts,
        [
            (site.clone(), "bot".to_string(), 3),
            (site.clone(), "dnt".to_string(), 1),
            (site.clone(), "gpc".to_string(), 1),
            (site, "opt_out".to_string(), 1),
        ]
    );
    let (report, sink) = server.stop().await;
    assert_eq!(
        report.rows_written, 1,
        "only the ordinary visitor is stored"
    );
    assert_eq!(sink.rows.lock().unwrap()[0].browser, "Firefox");
}

#[tokio::test]
async fn opt_out_page_works_without_javascript() {
    let server = Server::start(|_| {}).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client
        .get(format!("{}/opt-out", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<form method="post" action="/opt-out">"#),
        "{html}"
    );
    assert!(html.contains("does not store your IP address"));

    let opted = client
        .post(format!("{}/opt-out", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(opted.status().as_u16(), 303);
    assert_eq!(opted.headers()["location"], "/opt-out");
    let cookie = opted.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("glimpse_opt_out=1;"), "{cookie}");
    assert!(
        cookie.contains("Max-Age=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    let page = client
        .get(format!("{}/opt-out", server.base))
        .header("cookie", "glimpse_opt_out=1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("You have opted out"));
    assert!(page.contains(r#"action="/opt-in""#));

    let back = client
        .post(format!("{}/opt-in", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status().as_u16(), 303);
    let cleared = back.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let wrong = client
        .delete(format!("{}/opt-out", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 405);
    server.stop().await;
}

#[tokio::test]
async fn spool_budget_answers_503_then_recovers() {
    let server = Server::start(|c| {
        c.collector.spool_max_bytes = 3000;
        c.collector.batch_max_rows = 1;
        c.collector.batch_max_delay_ms = 10;
    })
    .await;
    server.sink.failing.store(true, Ordering::SeqCst);
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..100 {
        let reply = server.event(PAGEVIEW).await;
        match reply.status {
            202 => accepted += 1,
            503 => {
                refused = Some(reply);
                break;
            }
            other => panic!("status {other}"),
        }
    }
    let refused = refused.expect("the spool budget is enforced");
    assert_eq!(refused.header("retry-after"), Some("30"));
    assert!(refused.json()["error"].as_str().unwrap().contains("spool"));
    assert!(accepted > 0);
    let ready = server
        .client
        .get(format!("{}/ready", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503, "a full spool is not ready");

    // ClickHouse (here: the sink) comes back: the spool drains and beacons are accepted again.
    server.sink.failing.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if server.event(PAGEVIEW).await.status == 202 {
            accepted += 1;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool never drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (report, sink) = server.stop().await;
    assert_eq!(report.rows_written, accepted);
    let rows = sink.rows.lock().unwrap();
    assert_eq!(rows.len() as u64, accepted, "every 202 stored once");
    assert!(
        rows.iter().all(|r| r.batch_id != 0),
        "spooled rows carry their batch id"
    );
}

#[tokio::test]
async fn with_the_spool_ready_does_not_need_clickhouse() {
    let server = Server::start(|_| {}).await;
    server.readiness.migrated.store(false, Ordering::SeqCst);
    let ready = server
        .client
        .get(format!("{}/ready", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["migrated"], false);
    assert!(body["buffer"]["spool_bytes"].is_u64(), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn rate_limit_per_client_answers_429() {
    let server = Server::start(|c| {
        c.collector.rate_limit_per_ip = 1;
        c.collector.rate_limit_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let reply = server.event(PAGEVIEW).await;
        if reply.status == 429 {
            retry_after = reply.header("retry-after").map(String::from);
            assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
        }
        statuses.push(reply.status);
    }
    assert_eq!(&statuses[..3], [202, 202, 202], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let (report, _) = server.stop().await;
    let accepted = statuses.iter().filter(|s| **s == 202).count() as u64;
    assert_eq!(report.rows_written, accepted);
}

#[tokio::test]
async fn slow_bodies_and_slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(|c| c.request_timeout_secs = 1).await;
    let addr = server.base.trim_start_matches("http://").to_string();

    // Headers complete, body promised but never sent: 408 after the timeout.
    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST /api/event HTTP/1.1\r\nHost: x\r\nUser-Agent: {FIREFOX}\r\n\
                 Content-Type: text/plain\r\nContent-Length: 500\r\n\r\n{{\"n\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let started = std::time::Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow_body.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4));

    // Headers dribbled and never finished: the connection is closed.
    let mut slow_head = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_head
        .write_all(b"POST /api/event HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), slow_head.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server closed the connection");
    let (report, _) = server.stop().await;
    assert_eq!(report.rows_written, 0, "nothing half-written");
}

#[tokio::test]
async fn connection_limit_makes_new_clients_wait() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(|c| c.collector.max_connections = 1).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    // One idle connection takes the only slot.
    let mut hog = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = Box::pin(server.event(PAGEVIEW));
    let mut waiting = waiting;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a second client is not served while the slot is taken"
    );
    hog.shutdown().await.unwrap();
    drop(hog);
    let reply = tokio::time::timeout(Duration::from_secs(15), &mut waiting)
        .await
        .expect("served once the slot is free");
    assert_eq!(reply.status, 202);
    drop(waiting);
    server.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let server = Server::start(|c| c.max_header_bytes = 8192).await;
    let response = server
        .client
        .post(format!("{}/api/event", server.base))
        .header("user-agent", FIREFOX)
        .header("x-padding", "a".repeat(20_000))
        .body(PAGEVIEW)
        .send()
        .await;
    // hyper answers 431, or closes the connection when the head is far over the limit.
    if let Ok(r) = response {
        assert_eq!(r.status().as_u16(), 431);
    }
    let (report, _) = server.stop().await;
    assert_eq!(report.rows_written, 0);
}

#[tokio::test]
async fn privacy_page_states_the_configuration() {
    let server = Server::start(|c| {
        c.collector.store_ip_prefix = true;
        c.collector.ipv4_prefix_length = 16;
    })
    .await;
    let get = |path: &str| server.client.get(format!("{}{path}", server.base)).send();
    let page = get("/privacy").await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Analytics on example.com"), "{html}");
    assert!(html.contains("first 16 of the 32 bits"));
    assert!(html.contains("180 days"));
    assert_eq!(
        get("/privacy?site=nope.test")
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    // Without ClickHouse (this in-memory server), the visitor-data pages say so.
    assert_eq!(
        get("/privacy/my-data").await.unwrap().status().as_u16(),
        503
    );
    server.stop().await;
}

/// Posts a pageview as if through a proxy on loopback that appended `81.2.69.142` to
/// `X-Forwarded-For`, with `extra` headers the client itself wrote.
async fn proxied_event(server: &Server, extra: &[(&str, String)]) -> Reply {
    let mut request = server
        .client
        .post(format!("{}/api/event", server.base))
        .header("user-agent", FIREFOX)
        .header("content-type", "text/plain")
        .header("x-forwarded-for", "81.2.69.142")
        .body(PAGEVIEW);
    for (name, value) in extra {
        request = request.header(*name, value);
    }
    Reply::from(request.send().await.unwrap()).await
}

#[tokio::test]
async fn forged_forwarding_headers_behind_a_trusted_proxy_are_ignored() {
    // The rate limiter keys on the real address: forging another one each time does not help.
    let server = Server::start(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.collector.rate_limit_per_ip = 1;
        c.collector.rate_limit_burst = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for n in 1..=6 {
        let forged = [
            ("forwarded", format!("for=198.51.100.{n}")),
            ("x-real-ip", format!("203.0.113.{n}")),
        ];
        statuses.push(proxied_event(&server, &forged).await.status);
    }
    assert_eq!(&statuses[..2], [202, 202], "{statuses:?}");
    assert!(statuses[2..].iter().all(|s| *s == 429), "{statuses:?}");
    server.stop().await;

    // Visitor ids are the real address's: forged headers do not make another visitor.
    let server = Server::start(|c| c.trusted_proxies = "127.0.0.1".parse().unwrap()).await;
    assert_eq!(proxied_event(&server, &[]).await.status, 202);
    let forged_forwarded = [("forwarded", "for=198.51.100.7".to_string())];
    assert_eq!(proxied_event(&server, &forged_forwarded).await.status, 202);
    let forged_real_ip = [("x-real-ip", "203.0.113.7".to_string())];
    assert_eq!(proxied_event(&server, &forged_real_ip).await.status, 202);
    // A visitor at another address is another visitor (the comparison can fail).
    let other = server
        .client
        .post(format!("{}/api/event", server.base))
        .header("user-agent", FIREFOX)
        .header("x-forwarded-for", "81.2.69.143")
        .body(PAGEVIEW)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 202);
    let (_, sink) = server.stop().await;
    let ids: Vec<u64> = sink
        .rows
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.visitor_id)
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], ids[1], "forged Forwarded changed the visitor");
    assert_eq!(ids[0], ids[2], "forged X-Real-IP changed the visitor");
    assert_ne!(ids[0], ids[3]);
}

/// A Matomo bulk body of `n` page views of example.com (`idsite` 1).
fn matomo_bulk(n: usize) -> String {
    let requests: Vec<String> = (0..n)
        .map(|i| format!("\"?idsite=1&rec=1&url=https%3A%2F%2Fexample.com%2Fp{i}\""))
        .collect();
    format!(r#"{{"requests":[{}]}}"#, requests.join(","))
}

#[tokio::test]
async fn rate_limit_counts_every_event_of_a_bulk_request() {
    let server = Server::start(|c| {
        c.collector.rate_limit_per_ip = 1;
        c.collector.rate_limit_burst = 10;
        c.collector.matomo_sites = [("1".to_string(), "example.com".to_string())].into();
    })
    .await;
    let bulk = |n: usize| {
        server
            .client
            .post(format!("{}/matomo.php", server.base))
            .header("user-agent", FIREFOX)
            .body(matomo_bulk(n))
            .send()
    };
    // Larger than the burst: it could never pass, so it is refused outright.
    let too_big = bulk(11).await.unwrap();
    assert_eq!(too_big.status(), 413);
    let first = bulk(8).await.unwrap();
    assert_eq!(first.status(), 200);
    let summary: serde_json::Value = first.json().await.unwrap();
    assert_eq!(summary["tracked"], 8);
    // Eight of the ten tokens are gone: another eight events are too many.
    let second = bulk(8).await.unwrap();
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    // ...and so is a single beacon soon after, as fast as the burst allows.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(server.event(PAGEVIEW).await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let (report, _) = server.stop().await;
    let singles = statuses.iter().filter(|s| **s == 202).count() as u64;
    assert_eq!(report.rows_written, 8 + singles);
}

#[tokio::test]
async fn rate_limit_counts_every_site_of_a_beacon() {
    // A beacon for several sites records an event for each.
    let server = Server::start(|c| {
        c.collector.rate_limit_per_ip = 1;
        c.collector.rate_limit_burst = 3;
        c.sites.push(glimpse_core::site::Site::new("example.org"));
    })
    .await;
    let both = r#"{"n":"pageview","u":"https://example.com/a","d":"example.com,example.org"}"#;
    assert_eq!(server.event(both).await.status, 202);
    // One token left: two more events are too many.
    assert_eq!(server.event(both).await.status, 429);
    let (report, _) = server.stop().await;
    assert_eq!(report.rows_written, 2);
}

#[path = "../src/ingest/geo_test_dbs.rs"]
mod geo_test_dbs;

/// Replaces `path` the way `geoipupdate` and `glimpse geoip update` do: a new file renamed
/// over the old one.
fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, bytes).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// Waits until the metric exceeds `before` (the reload happened), for at most 15 s.
async fn wait_for_metric_above(server: &Server, name: &str, before: f64) -> f64 {
    for _ in 0..150 {
        let now = metric(server, name).await;
        if now > before {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} stayed at {before}");
}

/// The place of the next stored row: a beacon from 81.2.69.142 (London in the city
/// database), each time from another browser, so a new visit (a visit keeps its first place).
async fn next_place(server: &Server) -> (String, String) {
    let before = server.sink.rows.lock().unwrap().len();
    let version = 100 + before;
    let reply = server
        .client
        .post(format!("{}/api/event", server.base))
        .header(
            "user-agent",
            format!("Mozilla/5.0 (X11; Linux x86_64; rv:{version}.0) Gecko/20100101 Firefox/{version}.0"),
        )
        .header("x-forwarded-for", "81.2.69.142")
        .body(PAGEVIEW)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 202);
    for _ in 0..200 {
        if let Some(row) = server.sink.rows.lock().unwrap().get(before) {
            return (row.country.clone(), row.city.clone());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the beacon did not reach the sink");
}

#[tokio::test]
async fn geoip_database_is_reloaded_when_its_file_changes_and_a_damaged_one_is_refused() {
    use geo_test_dbs::Kind;
    const OK: &str = "glimpse_geoip_reloads_total{result=\"ok\"}";
    const FAILED: &str = "glimpse_geoip_reloads_total{result=\"failed\"}";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("GeoIP.mmdb");
    replace_file(&db, &geo_test_dbs::bytes(Kind::MaxMindCity));
    let server = Server::start(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.geoip_db = Some(db.clone());
        c.collector.geoip_check_secs = 1;
    })
    .await;
    assert_eq!(next_place(&server).await, ("GB".into(), "London".into()));

    // A country-only database replaces the city one: the next beacon has no city.
    let ok = metric(&server, OK).await;
    replace_file(&db, &geo_test_dbs::bytes(Kind::MaxMindCountry));
    wait_for_metric_above(&server, OK, ok).await;
    assert_eq!(next_place(&server).await, ("GB".into(), String::new()));

    // A damaged file is refused: the country database keeps answering.
    let (ok, failed) = (metric(&server, OK).await, metric(&server, FAILED).await);
    replace_file(&db, &geo_test_dbs::bytes(Kind::Corrupt));
    wait_for_metric_above(&server, FAILED, failed).await;
    assert_eq!(next_place(&server).await, ("GB".into(), String::new()));
    assert_eq!(metric(&server, OK).await, ok, "the damaged file was loaded");
    // Tried once per change, not at every check.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(metric(&server, FAILED).await, failed + 1.0);

    // Mended: the city database is back.
    replace_file(&db, &geo_test_dbs::bytes(Kind::MaxMindCity));
    wait_for_metric_above(&server, OK, ok).await;
    assert_eq!(next_place(&server).await, ("GB".into(), "London".into()));
    server.stop().await;
}
