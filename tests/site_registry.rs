//! The live site registry end to end, against a real ClickHouse: a site added at run time is
//! accepted by every collector within 10 s without a restart, its goals and shared links work
//! in the stats API, and a removed site is refused everywhere within 10 s with its data gone.
//! A collector restarted while ClickHouse is down still accepts the sites it last saw.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{browser_client, free_addr, wait_for_200, TestClickHouse};
use glimpse_core::goals::Goal;
use glimpse_core::registry::Registry;
use glimpse_core::site::SharedLink;
use glimpse_core::Config;
use glimpse_query::auth;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SITE: &str = "shop.example";
/// The promise: a change made anywhere is seen everywhere within this.
const PROPAGATION: Duration = Duration::from_secs(10);

async fn send(addr: SocketAddr, site: &str, path: &str) -> u16 {
    browser_client()
        .post(format!("http://{addr}/api/event"))
        .body(format!(
            r#"{{"n":"pageview","u":"https://{site}{path}","d":"{site}"}}"#
        ))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends until the collector answers `want` (every other answer must be `other`); returns
/// how long that took.
async fn send_until(addr: SocketAddr, path: &str, want: u16, other: u16) -> Duration {
    let started = Instant::now();
    loop {
        let status = send(addr, SITE, path).await;
        if status == want {
            return started.elapsed();
        }
        assert_eq!(status, other, "{addr}: unexpected answer");
        assert!(
            started.elapsed() < PROPAGATION + Duration::from_secs(5),
            "{addr} still answers {status} after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn start_collector(config: Config, stop: &CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(glimpse_collector::serve(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));
    wait_for_200(
        &browser_client(),
        &format!("http://{addr}/ready"),
        Duration::from_secs(30),
    )
    .await;
    addr
}

async fn get(url: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn count(ch: &TestClickHouse, table: &str) -> u64 {
    ch.count(&format!(
        "SELECT count() FROM glimpse.{table} WHERE site = '{SITE}'"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_added_at_run_time_works_everywhere_and_a_removed_one_is_refused_and_erased() {
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    // Two collectors with data directories of their own, and a query service.
    let mut first = ch.config();
    first.data_dir = ch.data_dir().join("collector-1");
    let mut second = ch.config();
    second.data_dir = ch.data_dir().join("collector-2");
    let collectors = [
        start_collector(first.clone(), &stop).await,
        start_collector(second, &stop).await,
    ];
    let query_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let query = format!("http://{}", query_listener.local_addr().unwrap());
    tokio::spawn(glimpse_query::serve(
        ch.config(),
        query_listener,
        stop.clone().cancelled_owned(),
    ));
    wait_for_200(&browser_client(), &format!("{query}/health"), PROPAGATION).await;

    for addr in collectors {
        assert_eq!(send(addr, SITE, "/").await, 403, "not a site yet");
    }
    let client = ch.client.clone();
    auth::add_site(&client, "glimpse", &first, SITE, "Europe/Berlin")
        .await
        .unwrap();
    for addr in collectors {
        let took = send_until(addr, "/", 202, 403).await;
        println!("{addr} accepted the new site after {took:?}");
        assert!(took <= PROPAGATION, "{addr} took {took:?}");
    }
    // A configured site cannot be taken over or removed at run time.
    let err = auth::add_site(&client, "glimpse", &first, "example.com", "UTC")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("configuration"), "{err}");
    let err = auth::remove_site(&client, "glimpse", &first, "example.com")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("configuration"), "{err}");

    // Goals and a shared link, added at run time, work in the stats API.
    let registry = Registry::new(client.clone(), "glimpse");
    registry
        .put_goal(SITE, &Goal::parse("Visit /checkout").unwrap())
        .await
        .unwrap();
    let token = "press-link-0123456789abcdef";
    registry
        .put_link(
            SITE,
            &SharedLink {
                name: "press".into(),
                token: token.into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(send(collectors[0], SITE, "/checkout").await, 202);
    assert_eq!(send(collectors[1], SITE, "/pricing").await, 202);
    common::wait_for_event_rows(&ch.client, 4, Duration::from_secs(15)).await;
    let (key, _) = auth::create_key(&client, "glimpse", &first, SITE, "test")
        .await
        .unwrap();
    let aggregate =
        format!("{query}/api/v1/stats/aggregate?site_id={SITE}&period=day&metrics=pageviews");
    let (status, body) = get(&aggregate, Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"]["pageviews"]["value"], 4, "{body}");
    let goals = format!(
        "{query}/api/v1/stats/breakdown?site_id={SITE}&period=day&property=event:goal&metrics=visitors"
    );
    let started = Instant::now();
    loop {
        let (status, body) = get(&goals, Some(&key)).await;
        assert_eq!(status, 200, "{body}");
        let found = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["goal"] == "Visit /checkout" && r["visitors"] == 1);
        if found {
            break;
        }
        assert!(started.elapsed() < PROPAGATION, "no goal in {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, body) = get(&format!("{aggregate}&auth={token}"), None).await;
    assert_eq!(status, 200, "the shared link reads its site: {body}");
    let (status, _) = get(
        &format!(
            "{query}/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=pageviews&auth={token}"
        ),
        None,
    )
    .await;
    assert_eq!(status, 401, "the shared link reads only its site");
    let snapshot = first.data_dir.join("sites.json");
    assert!(std::fs::read_to_string(&snapshot).unwrap().contains(SITE));

    // Removed: refused everywhere within 10 s, its key revoked, its rows erased.
    let erased = auth::remove_site(&client, "glimpse", &first, SITE)
        .await
        .unwrap();
    assert_eq!(erased, 4);
    for addr in collectors {
        let took = send_until(addr, "/", 403, 202).await;
        println!("{addr} refused the removed site after {took:?}");
        assert!(took <= PROPAGATION, "{addr} took {took:?}");
    }
    let (status, _) = get(&aggregate, Some(&key)).await;
    assert_eq!(status, 401, "its keys are revoked");
    // Beacons accepted in the moments before a collector saw the removal arrive after the
    // erasure began: the collectors erase them too, `LATE_ROWS_GRACE` after.
    let deadline = Instant::now() + glimpse_core::registry::live::LATE_ROWS_GRACE * 3;
    while count(&ch, "events").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the site's events are not erased"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!std::fs::read_to_string(&snapshot).unwrap().contains(SITE));
    // Added again later, it starts without the old goals and links.
    auth::add_site(&client, "glimpse", &first, SITE, "UTC")
        .await
        .unwrap();
    let sites = auth::sites(&client, "glimpse", &first).await.unwrap();
    let again = sites.get(SITE).unwrap();
    assert!(again.goals.is_empty(), "{again:?}");
    assert!(!again.accepts_share_token(token));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_started_while_clickhouse_is_down_accepts_the_sites_it_last_saw() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sites.json"),
        format!(r#"[{{"domain": "{SITE}", "timezone": "UTC"}}]"#),
    )
    .unwrap();
    let config = Config {
        // Nothing listens there: ClickHouse is down.
        clickhouse_url: Some(format!("http://{}", free_addr())),
        data_dir: dir.path().to_path_buf(),
        sites: vec![glimpse_core::site::Site::new("example.com")],
        ..Config::default()
    };
    let stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(glimpse_collector::serve(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match browser_client()
            .post(format!("http://{addr}/api/event"))
            .body(format!(
                r#"{{"n":"pageview","u":"https://{SITE}/","d":"{SITE}"}}"#
            ))
            .send()
            .await
        {
            Ok(response) => break response.status().as_u16(),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("collector not answering: {e}"),
        }
    };
    assert_eq!(status, 202, "the remembered site is accepted (and spooled)");
    assert_eq!(send(addr, "unknown.example", "/").await, 403);
    stop.cancel();
}
