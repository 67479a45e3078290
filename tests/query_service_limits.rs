//! The query service against clients that hold on or go away, with a real ClickHouse: a
//! half-sent or idle connection is closed; past the connection cap new clients wait while the
//! collector beside it keeps answering; a ClickHouse error is logged, not answered; a query
//! whose client hung up does not keep ClickHouse busy.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::TestClickHouse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The query service (default settings) in-process on a free port.
async fn query_service(ch: &TestClickHouse, stop: &CancellationToken) -> SocketAddr {
    glimpse_core::schema::migrate(&ch.client, "glimpse")
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(glimpse_query::serve(
        ch.config(),
        listener,
        stop.clone().cancelled_owned(),
    ));
    addr
}

/// Whether the server closes `stream` within `within` (EOF or reset), reading what it sends.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_idle_connections_are_closed_within_15_seconds() {
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    let addr = query_service(&ch, &stop).await;

    let mut half_sent = TcpStream::connect(addr).await.unwrap();
    half_sent
        .write_all(b"GET /api/v1/stats/aggregate?site_id=example.com HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    // A body announced and never sent.
    let mut half_body = TcpStream::connect(addr).await.unwrap();
    half_body
        .write_all(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        .await
        .unwrap();
    let started = Instant::now();
    let (half_sent_closed, idle_closed, half_body_closed) = tokio::join!(
        closed_within(&mut half_sent, Duration::from_secs(15)),
        closed_within(&mut idle, Duration::from_secs(15)),
        closed_within(&mut half_body, Duration::from_secs(15)),
    );
    assert!(
        half_body_closed,
        "a half-sent body is still open after 15 s"
    );
    assert!(
        half_sent_closed,
        "a half-sent request is still open after 15 s"
    );
    assert!(idle_closed, "an idle connection is still open after 15 s");
    println!("closed after {:?}", started.elapsed());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_cap_new_clients_wait_and_the_collector_still_answers() {
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    let query = query_service(&ch, &stop).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(glimpse_collector::serve(
        ch.config(),
        listener,
        stop.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::new();
    common::wait_for_200(
        &http,
        &format!("http://{collector}/health"),
        Duration::from_secs(10),
    )
    .await;

    // The default cap (`query_max_connections`, 512) taken by idle connections.
    let mut idle = Vec::new();
    for _ in 0..512 {
        idle.push(TcpStream::connect(query).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // One more client: it waits, unanswered, while the collector answers at once.
    let mut waiting = TcpStream::connect(query).await.unwrap();
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_secs(1), waiting.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a client past the connection cap was answered at once: {early:?}"
    );
    let beacon_side = http
        .get(format!("http://{collector}/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("the collector answers while the query service is full");
    assert_eq!(beacon_side.status(), 200);

    // Room again: the waiting client is answered.
    drop(idle);
    let answered = tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut buf))
        .await
        .expect("the waiting client is answered once there is room")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..answered]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..answered])
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_error_is_answered_without_its_text() {
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    let addr = query_service(&ch, &stop).await;
    ch.client
        .query("DROP TABLE glimpse.site_registry")
        .execute()
        .await
        .unwrap();

    let response = reqwest::get(format!(
        "http://{addr}/api/v1/stats/aggregate?site_id=example.com&auth=some-share-token-0123"
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 503);
    let header_id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.text().await.unwrap();
    for clickhouse_text in [
        "DB::Exception",
        "Code:",
        "glimpse.site_registry",
        "doesn't exist",
        "e.what",
    ] {
        assert!(
            !body.contains(clickhouse_text),
            "the answer shows ClickHouse's error ({clickhouse_text}): {body}"
        );
    }
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let request_id = body["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the answer names its request id: {body}"));
    assert!(request_id.len() >= 8, "{body}");
    assert_eq!(header_id.as_deref(), Some(request_id), "X-Request-Id");
    stop.cancel();
}

/// The stats queries ClickHouse is running now.
async fn running(ch: &TestClickHouse) -> u64 {
    ch.count(
        "SELECT count() FROM system.processes \
         WHERE query LIKE '%FROM glimpse.site_registry%' AND query NOT LIKE '%system.processes%'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_client_hung_up_is_killed() {
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    let addr = query_service(&ch, &stop).await;
    // Every request reads the site registry first: made a view that scans 10^11 numbers (minutes).
    for sql in [
        "DROP TABLE glimpse.site_registry",
        "CREATE VIEW glimpse.site_registry AS SELECT 'slow.example' AS domain, 'UTC' AS timezone, \
         toUInt8(0) AS deleted, toUInt64(1) AS version, toDateTime(0) AS changed_at \
         FROM numbers(100000000000) WHERE number = 99999999999",
    ] {
        ch.client.query(sql).execute().await.unwrap();
    }

    let request = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/v1/stats/aggregate?site_id=example.com&auth=some-share-token-0123"
        ))
        .send();
    let watch = async {
        // The query is running while the client waits...
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(&ch).await == 0 {
            assert!(Instant::now() < deadline, "the slow query never started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // ...and the client hangs up after two seconds.
    let hung_up = tokio::time::timeout(Duration::from_secs(2), async {
        tokio::join!(request, watch).0
    })
    .await;
    assert!(hung_up.is_err(), "the slow request answered: {hung_up:?}");
    let gone_at = Instant::now();

    let mut gone = false;
    while gone_at.elapsed() < Duration::from_secs(5) {
        if running(&ch).await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still = running(&ch).await;
    // Whatever happened, do not leave ClickHouse scanning for the other tests.
    let _ = ch
        .client
        .query(
            "KILL QUERY WHERE query LIKE '%FROM glimpse.site_registry%' AND query NOT LIKE '%KILL%' SYNC",
        )
        .execute()
        .await;
    assert!(
        gone,
        "ClickHouse still runs the abandoned query 5 s after its client hung up ({still})"
    );
    println!("killed within {:?}", gone_at.elapsed());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_an_api_key_are_rate_limited_per_client() {
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    let addr = query_service(&ch, &stop).await;
    let http = reqwest::Client::new();
    let share = format!(
        "http://{addr}/api/v1/stats/aggregate?site_id=example.com&auth=wrong-share-token-0123"
    );

    // A burst of guesses at a share link: refused with 401 at first, then 429 + Retry-After
    // (default: 10 a second, bursts of 60).
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..150 {
        let response = http.get(&share).send().await.unwrap();
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        }
        statuses.push(response.status().as_u16());
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(statuses[..50].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        limited >= 30,
        "only {limited} of 150 answered 429: {statuses:?}"
    );
    assert!(
        retry_after.is_some_and(|secs| (1..=60).contains(&secs)),
        "Retry-After: {retry_after:?}"
    );

    // A request with an API key is not limited by the other requests' bucket.
    let (key, _) =
        glimpse_query::auth::create_key(&ch.client, "glimpse", &ch.config(), "example.com", "test")
            .await
            .unwrap();
    let keyed = http
        .get(format!(
            "http://{addr}/api/v1/stats/aggregate?site_id=example.com"
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 200, "{:?}", keyed.text().await);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_keys_and_cookies_are_limited_per_client_without_locking_out_good_keys() {
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    let addr = query_service(&ch, &stop).await;
    let http = reqwest::Client::new();
    let stats = format!("http://{addr}/api/v1/stats/aggregate?site_id=example.com");
    let key = |name: &'static str| {
        let config = ch.config();
        let client = ch.client.clone();
        async move {
            glimpse_query::auth::create_key(&client, "glimpse", &config, "example.com", name)
                .await
                .unwrap()
                .0
        }
    };
    let (good, fresh) = (key("good").await, key("fresh").await);
    let status = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let retry_after = response.headers().get("retry-after").cloned();
        (response.status().as_u16(), retry_after)
    };
    assert_eq!(status(http.get(&stats).bearer_auth(&good)).await.0, 200);

    // Junk keys from one address (a neighbour behind the same NAT, say): refused with 401,
    // each one looked up, until the address's 30 refusals a minute are spent; then 429 with
    // Retry-After, unread, for junk keys and junk session cookies alike.
    let mut statuses = Vec::new();
    for i in 0..40 {
        let junk = format!("junk-key-{i:04}-0123456789abcdef0123456789abcdef");
        statuses.push(status(http.get(&stats).bearer_auth(junk)).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert!(codes[..30].iter().all(|s| *s == 401), "{codes:?}");
    assert!(codes[31..].iter().all(|s| *s == 429), "{codes:?}");
    let (_, retry_after) = statuses.last().unwrap();
    let secs: u64 = retry_after
        .as_ref()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "Retry-After: {secs}");
    let cookie = http
        .get(&stats)
        .header("cookie", "glimpse_session=junk-session-token");
    assert_eq!(status(cookie).await.0, 429, "a junk session cookie");

    // A key accepted before still works from the blocked address; one never seen waits.
    assert_eq!(status(http.get(&stats).bearer_auth(&good)).await.0, 200);
    assert_eq!(status(http.get(&stats).bearer_auth(&fresh)).await.0, 429);
    // Requests without credentials have their own bucket.
    let share = format!("{stats}&auth=wrong-share-token-0123");
    assert_eq!(status(http.get(&share)).await.0, 401);
    stop.cancel();
}
