//! Plausible's Sites API end to end against a real ClickHouse: who may do what (owner, site
//! admin, viewer, stats and sites keys, share links, nobody: a table of cases), the three body
//! forms, and the whole life of a site created over HTTP — its beacons accepted by a running
//! collector within 10 s, its goal in `event:goal`, its shared link reading only it, and once
//! deleted its beacons refused within 10 s and its rows gone; and a renamed site, which keeps
//! its stats, members, keys and links and accepts both of its domains.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{browser_client, wait_for_200, TestClickHouse};
use glimpse_core::site::Site;
use glimpse_core::Config;
use glimpse_query::accounts::store::NewRole;
use glimpse_query::accounts::{KeyScope, Role};
use glimpse_query::auth;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const A: &str = "a.example";
const B: &str = "b.example";
const CONFIGURED: &str = "conf.example";
const PASSWORD: &str = "correct horse battery";

fn config(ch: &TestClickHouse) -> Config {
    Config {
        sites: vec![Site::new(CONFIGURED)],
        query: glimpse_core::config::QueryConfig {
            // Many requests from one address on purpose.
            query_rate_limit_per_ip: 0,
            ..ch.config().query
        },
        ..ch.config()
    }
}

/// How a request identifies itself.
#[derive(Debug, Clone)]
enum Cred {
    Nobody,
    Cookie(String),
    Key(String),
    Share(String),
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A request with `cred` (a cookie-bearing change says it comes from this service).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        cred: &Cred,
    ) -> (u16, Value) {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).unwrap();
        if let Cred::Share(token) = cred {
            url.query_pairs_mut().append_pair("auth", token);
        }
        let mut request = self.http.request(method, url);
        match cred {
            Cred::Nobody | Cred::Share(_) => {}
            Cred::Cookie(token) => {
                request = request
                    .header("cookie", format!("glimpse_session={token}"))
                    .header("origin", &self.base);
            }
            Cred::Key(key) => request = request.bearer_auth(key),
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A new user, signed in.
    async fn new_user(
        &self,
        ch: &TestClickHouse,
        config: &Config,
        email: &str,
        role: NewRole,
        sites: &[&str],
    ) -> Cred {
        common::accounts::add_user(&ch.client, config, email, PASSWORD, role, sites).await;
        self.sign_in(email).await
    }

    async fn sign_in(&self, email: &str) -> Cred {
        let response = self
            .http
            .post(format!("{}/api/auth/login", self.base))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{email}");
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_string();
        let token = cookie
            .strip_prefix("glimpse_session=")
            .and_then(|c| c.split(';').next())
            .unwrap();
        Cred::Cookie(token.to_string())
    }
}

async fn start_query(config: Config, stop: &CancellationToken) -> Api {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(glimpse_query::serve(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));
    wait_for_200(
        &reqwest::Client::new(),
        &format!("{base}/ready"),
        Duration::from_secs(30),
    )
    .await;
    Api {
        base,
        http: reqwest::Client::new(),
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

async fn beacon(collector: SocketAddr, site: &str, path: &str) -> u16 {
    browser_client()
        .post(format!("http://{collector}/api/event"))
        .body(format!(
            r#"{{"n":"pageview","u":"https://{site}{path}","d":"{site}"}}"#
        ))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends beacons until the collector answers `want`; how long that took (at most 15 s).
async fn beacon_until(collector: SocketAddr, site: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        if beacon(collector, site, "/").await == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never {want}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The services of one test and the owner's signed-in session.
struct Started {
    config: Config,
    collector: SocketAddr,
    api: Api,
    owner: Cred,
}

async fn start_with_owner(ch: &TestClickHouse, stop: &CancellationToken) -> Started {
    let config = config(ch);
    // The collector applies the migrations the query service waits for.
    let collector = start_collector(config.clone(), stop).await;
    let api = start_query(config.clone(), stop).await;
    let owner = api
        .new_user(ch, &config, "owner@example.com", NewRole::Owner, &[])
        .await;
    Started {
        config,
        collector,
        api,
        owner,
    }
}

/// Waits until a deleted site has no event rows left (erased at once, late rows some seconds
/// later).
async fn wait_until_erased(ch: &TestClickHouse, site: &str) {
    let deadline = Instant::now() + glimpse_core::registry::live::LATE_ROWS_GRACE * 3;
    loop {
        let left = ch
            .count(&format!(
                "SELECT count() FROM glimpse.events WHERE site = '{site}'"
            ))
            .await;
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} rows of {site} left");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

use reqwest::Method;

/// Who, method, path, body, the status expected.
type Case<'a> = (&'a str, &'a Cred, Method, String, Option<Value>, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_do_what_and_the_life_of_a_site_created_over_http() {
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    let Started {
        config,
        collector,
        api,
        owner,
    } = start_with_owner(&ch, &stop).await;
    let client = ch.client.clone();
    let nobody = Cred::Nobody;

    // Created by the owner, in each body form a client may send.
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(json!({"domain": A, "timezone": "Europe/Berlin"})),
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"domain": A, "timezone": "Europe/Berlin"}));
    let Cred::Cookie(owner_token) = &owner else {
        unreachable!()
    };
    let form = api
        .http
        .post(format!("{}/api/v1/sites", api.base))
        .header("cookie", format!("glimpse_session={owner_token}"))
        .header("origin", &api.base)
        .form(&[("domain", B)])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let multipart = api
        .http
        .post(format!("{}/api/v1/sites", api.base))
        .header("cookie", format!("glimpse_session={owner_token}"))
        .header("origin", &api.base)
        .multipart(reqwest::multipart::Form::new().text("domain", "c.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(multipart.status(), 200);
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(json!({"domain": A})),
            &owner,
        )
        .await;
    assert_eq!(status, 400, "taken: {body}");
    assert_eq!(
        body["error"],
        "invalid parameter `domain`: domain has already been taken"
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(json!({"timezone": "UTC"})),
            &owner,
        )
        .await;
    assert_eq!((status, body["parameter"].clone()), (400, json!("domain")));
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(json!({"domain": "Bad Domain!"})),
            &owner,
        )
        .await;
    assert_eq!(status, 400);

    // The new site's beacons are accepted by the running collector within 10 s.
    let took = beacon_until(collector, A, 202).await;
    println!("collector accepted {A} after {took:?}");
    assert!(took <= Duration::from_secs(10), "{took:?}");

    // Everyone else.
    let admin = api
        .new_user(
            &ch,
            &config,
            "admin@example.com",
            NewRole::Site(Role::Admin),
            &[A],
        )
        .await;
    let viewer = api
        .new_user(
            &ch,
            &config,
            "viewer@example.com",
            NewRole::Site(Role::Viewer),
            &[A],
        )
        .await;
    let key = |site: &'static str, scope| {
        let client = client.clone();
        let config = config.clone();
        async move {
            let (key, _) = auth::create_scoped_key(&client, "glimpse", &config, site, "t", scope)
                .await
                .unwrap();
            Cred::Key(key)
        }
    };
    let stats_key_a = key(A, KeyScope::Stats).await;
    let sites_key_a = key(A, KeyScope::Sites).await;
    let sites_key_all = key(auth::ALL_SITES, KeyScope::Sites).await;
    let (status, link) = api
        .call(
            Method::PUT,
            "/api/v1/sites/shared-links",
            Some(json!({"site_id": A, "name": "press"})),
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{link}");
    assert_eq!(link["name"], "press");
    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/?site={A}&auth=", api.base)),
        "{url}"
    );
    let share_a = Cred::Share(url.rsplit("auth=").next().unwrap().to_string());
    let (status, again) = api
        .call(
            Method::PUT,
            "/api/v1/sites/shared-links",
            Some(json!({"site_id": A, "name": "press"})),
            &owner,
        )
        .await;
    assert_eq!((status, &again), (200, &link), "found, not created again");

    let goal = |site: &str, event: &str| {
        Some(json!({"site_id": site, "goal_type": "event", "event_name": event}))
    };
    let link_body = |site: &str, name: &str| Some(json!({"site_id": site, "name": name}));
    let cases: Vec<Case> = vec![
        // Reading a site.
        (
            "owner",
            &owner,
            Method::GET,
            format!("/api/v1/sites/{A}"),
            None,
            200,
        ),
        (
            "admin A",
            &admin,
            Method::GET,
            format!("/api/v1/sites/{A}"),
            None,
            200,
        ),
        (
            "viewer A",
            &viewer,
            Method::GET,
            format!("/api/v1/sites/{A}"),
            None,
            200,
        ),
        (
            "viewer A on B",
            &viewer,
            Method::GET,
            format!("/api/v1/sites/{B}"),
            None,
            404,
        ),
        (
            "stats key A",
            &stats_key_a,
            Method::GET,
            format!("/api/v1/sites/{A}"),
            None,
            200,
        ),
        (
            "stats key A on B",
            &stats_key_a,
            Method::GET,
            format!("/api/v1/sites/{B}"),
            None,
            404,
        ),
        (
            "share A",
            &share_a,
            Method::GET,
            format!("/api/v1/sites/{A}?site_id={A}"),
            None,
            200,
        ),
        (
            "share A on B",
            &share_a,
            Method::GET,
            format!("/api/v1/sites/{B}?site_id={B}"),
            None,
            401,
        ),
        (
            "nobody",
            &nobody,
            Method::GET,
            format!("/api/v1/sites/{A}"),
            None,
            401,
        ),
        (
            "unknown site",
            &owner,
            Method::GET,
            "/api/v1/sites/none.example".into(),
            None,
            404,
        ),
        // Creating sites.
        (
            "admin A",
            &admin,
            Method::POST,
            "/api/v1/sites".into(),
            Some(json!({"domain": "x1.example"})),
            403,
        ),
        (
            "viewer A",
            &viewer,
            Method::POST,
            "/api/v1/sites".into(),
            Some(json!({"domain": "x2.example"})),
            403,
        ),
        (
            "stats key A",
            &stats_key_a,
            Method::POST,
            "/api/v1/sites".into(),
            Some(json!({"domain": "x3.example"})),
            403,
        ),
        (
            "sites key A",
            &sites_key_a,
            Method::POST,
            "/api/v1/sites".into(),
            Some(json!({"domain": "x4.example"})),
            403,
        ),
        (
            "sites key *",
            &sites_key_all,
            Method::POST,
            "/api/v1/sites".into(),
            Some(json!({"domain": "x5.example"})),
            200,
        ),
        (
            "nobody",
            &nobody,
            Method::POST,
            "/api/v1/sites".into(),
            Some(json!({"domain": "x6.example"})),
            401,
        ),
        // Goals.
        (
            "owner",
            &owner,
            Method::PUT,
            "/api/v1/sites/goals".into(),
            goal(A, "Signup"),
            200,
        ),
        (
            "admin A",
            &admin,
            Method::PUT,
            "/api/v1/sites/goals".into(),
            goal(A, "Trial"),
            200,
        ),
        (
            "sites key A",
            &sites_key_a,
            Method::PUT,
            "/api/v1/sites/goals".into(),
            goal(A, "Demo"),
            200,
        ),
        (
            "viewer A",
            &viewer,
            Method::PUT,
            "/api/v1/sites/goals".into(),
            goal(A, "No1"),
            403,
        ),
        (
            "stats key A",
            &stats_key_a,
            Method::PUT,
            "/api/v1/sites/goals".into(),
            goal(A, "No2"),
            403,
        ),
        (
            "admin A on B",
            &admin,
            Method::PUT,
            "/api/v1/sites/goals".into(),
            goal(B, "No3"),
            404,
        ),
        (
            "sites key A on B",
            &sites_key_a,
            Method::PUT,
            "/api/v1/sites/goals".into(),
            goal(B, "No4"),
            404,
        ),
        (
            "nobody",
            &nobody,
            Method::PUT,
            "/api/v1/sites/goals".into(),
            goal(A, "No5"),
            401,
        ),
        (
            "owner, configured site",
            &owner,
            Method::PUT,
            "/api/v1/sites/goals".into(),
            goal(CONFIGURED, "No6"),
            400,
        ),
        (
            "viewer A",
            &viewer,
            Method::GET,
            format!("/api/v1/sites/goals?site_id={A}"),
            None,
            200,
        ),
        (
            "stats key A",
            &stats_key_a,
            Method::GET,
            format!("/api/v1/sites/goals?site_id={A}"),
            None,
            200,
        ),
        (
            "stats key A on B",
            &stats_key_a,
            Method::GET,
            format!("/api/v1/sites/goals?site_id={B}"),
            None,
            404,
        ),
        // Shared links (a link is a key: admins only, even to list).
        (
            "viewer A",
            &viewer,
            Method::PUT,
            "/api/v1/sites/shared-links".into(),
            link_body(A, "v"),
            403,
        ),
        (
            "stats key A",
            &stats_key_a,
            Method::PUT,
            "/api/v1/sites/shared-links".into(),
            link_body(A, "k"),
            403,
        ),
        (
            "share A",
            &share_a,
            Method::PUT,
            format!("/api/v1/sites/shared-links?site_id={A}"),
            link_body(A, "s"),
            403,
        ),
        (
            "sites key A",
            &sites_key_a,
            Method::PUT,
            "/api/v1/sites/shared-links".into(),
            link_body(A, "key"),
            200,
        ),
        (
            "viewer A",
            &viewer,
            Method::GET,
            format!("/api/v1/sites/shared-links?site_id={A}"),
            None,
            403,
        ),
        (
            "admin A",
            &admin,
            Method::GET,
            format!("/api/v1/sites/shared-links?site_id={A}"),
            None,
            200,
        ),
        // Settings and deletion.
        (
            "viewer A",
            &viewer,
            Method::PUT,
            format!("/api/v1/sites/{A}"),
            Some(json!({"timezone": "UTC"})),
            403,
        ),
        (
            "viewer A renaming",
            &viewer,
            Method::PUT,
            format!("/api/v1/sites/{A}"),
            Some(json!({"domain": "moved.example"})),
            403,
        ),
        (
            "admin A renaming to a taken domain",
            &admin,
            Method::PUT,
            format!("/api/v1/sites/{A}"),
            Some(json!({"domain": B})),
            400,
        ),
        (
            "admin A renaming to a bad domain",
            &admin,
            Method::PUT,
            format!("/api/v1/sites/{A}"),
            Some(json!({"domain": "not a domain"})),
            400,
        ),
        (
            "admin A",
            &admin,
            Method::DELETE,
            format!("/api/v1/sites/{A}"),
            None,
            403,
        ),
        (
            "viewer A",
            &viewer,
            Method::DELETE,
            format!("/api/v1/sites/{A}"),
            None,
            403,
        ),
        (
            "stats key A",
            &stats_key_a,
            Method::DELETE,
            format!("/api/v1/sites/{A}"),
            None,
            403,
        ),
        (
            "sites key A on B",
            &sites_key_a,
            Method::DELETE,
            format!("/api/v1/sites/{B}"),
            None,
            404,
        ),
        (
            "owner, configured site",
            &owner,
            Method::DELETE,
            format!("/api/v1/sites/{CONFIGURED}"),
            None,
            400,
        ),
        (
            "sites key *",
            &sites_key_all,
            Method::DELETE,
            "/api/v1/sites/x5.example".into(),
            None,
            200,
        ),
    ];
    let mut failures = Vec::new();
    for (who, cred, method, path, body, want) in &cases {
        let (status, answer) = api.call(method.clone(), path, body.clone(), cred).await;
        if status != *want {
            failures.push(format!(
                "{who}: {method} {path} → {status} (want {want}) {answer}"
            ));
        }
        if status >= 400 {
            assert!(
                answer["error"].is_string(),
                "{who} {method} {path}: {answer}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} permission cases as expected", cases.len());

    // A signed-in change from another website is refused before anything happens.
    let Cred::Cookie(admin_token) = &admin else {
        unreachable!()
    };
    let forged = api
        .http
        .put(format!("{}/api/v1/sites/goals", api.base))
        .header("cookie", format!("glimpse_session={admin_token}"))
        .header("origin", "https://evil.example")
        .json(&json!({"site_id": A, "goal_type": "event", "event_name": "Forged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // The audit log: each change, by whom, readable by the site's admins and the owner.
    let (status, log) = api
        .call(
            Method::GET,
            &format!("/api/v1/sites/audit?site_id={A}"),
            None,
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    let has = |actor: &str, action: &str, detail: &str| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["action"] == action && e["detail"] == detail)
    };
    assert!(has("owner@example.com", "goal.create", "Signup"), "{log}");
    assert!(has("admin@example.com", "goal.create", "Trial"), "{log}");
    assert!(has("key:a.example:sites", "goal.create", "Demo"), "{log}");
    assert!(has("admin@example.com", "link.create", "press"), "{log}");
    assert!(entries.iter().all(|e| e["site"] == A), "{log}");
    let Cred::Share(share_token) = &share_a else {
        unreachable!()
    };
    assert!(
        !log.to_string().contains(share_token.as_str()),
        "no secret in the log"
    );
    for (who, cred, path, want) in [
        (
            "viewer A",
            &viewer,
            format!("/api/v1/sites/audit?site_id={A}"),
            403,
        ),
        (
            "stats key A",
            &stats_key_a,
            format!("/api/v1/sites/audit?site_id={A}"),
            403,
        ),
        (
            "admin A on B",
            &admin,
            format!("/api/v1/sites/audit?site_id={B}"),
            404,
        ),
        (
            "admin A, every site",
            &admin,
            "/api/v1/sites/audit".to_string(),
            400,
        ),
        (
            "nobody",
            &nobody,
            format!("/api/v1/sites/audit?site_id={A}"),
            401,
        ),
    ] {
        let (status, body) = api.call(Method::GET, &path, None, cred).await;
        assert_eq!(status, want, "{who}: {body}");
    }
    let (status, all) = api
        .call(Method::GET, "/api/v1/sites/audit", None, &owner)
        .await;
    assert_eq!(status, 200);
    assert!(
        all["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "key:*:sites"
                && e["action"] == "site.delete"
                && e["site"] == "x5.example"),
        "{all}"
    );

    // The goals as Plausible lists them; one deleted by id.
    let (status, goals) = api
        .call(
            Method::GET,
            &format!("/api/v1/sites/goals?site_id={A}"),
            None,
            &admin,
        )
        .await;
    assert_eq!(status, 200);
    let mut names: Vec<&str> = goals["goals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["display_name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Demo", "Signup", "Trial"], "{goals}");
    assert!(!goals.to_string().contains("Forged"));
    let demo = goals["goals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["display_name"] == "Demo")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/sites/goals/{demo}"),
            Some(json!({"site_id": A})),
            &admin,
        )
        .await;
    assert_eq!((status, body), (200, json!({"deleted": "true"})));
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/sites/goals/{demo}"),
            Some(json!({"site_id": A})),
            &admin,
        )
        .await;
    assert_eq!(status, 404, "gone");
    let (status, page_goal) = api
        .call(
            Method::PUT,
            "/api/v1/sites/goals",
            Some(json!({"site_id": A, "goal_type": "page", "page_path": "/pricing"})),
            &admin,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page_goal["display_name"], "Visit /pricing");
    assert_eq!(page_goal["goal_type"], "page");

    // The site's visits, its goal in event:goal, its shared link reading only it.
    for path in ["/pricing", "/", "/about"] {
        assert_eq!(beacon(collector, A, path).await, 202);
    }
    common::wait_for_event_rows(&ch.client, 4, Duration::from_secs(15)).await;
    let breakdown = format!(
        "/api/v1/stats/breakdown?site_id={A}&period=day&property=event:goal&metrics=visitors"
    );
    let (status, body) = api.call(Method::GET, &breakdown, None, &viewer).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["goal"] == "Visit /pricing" && r["visitors"] == 1),
        "{body}"
    );
    let aggregate =
        |site: &str| format!("/api/v1/stats/aggregate?site_id={site}&period=day&metrics=pageviews");
    let (status, body) = api.call(Method::GET, &aggregate(A), None, &share_a).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["results"]["pageviews"]["value"].as_u64().unwrap() >= 4);
    let (status, _) = api.call(Method::GET, &aggregate(B), None, &share_a).await;
    assert_eq!(status, 401, "the link reads only its site");
    // Revoked: it stops working at once on this service.
    let (status, _) = api
        .call(
            Method::DELETE,
            "/api/v1/sites/shared-links/press",
            Some(json!({"site_id": A})),
            &admin,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api.call(Method::GET, &aggregate(A), None, &share_a).await;
    assert_eq!(status, 401, "a revoked link");

    // Listing: Plausible's shape, paginated, only what the caller may read.
    let (status, list) = api
        .call(Method::GET, "/api/v1/sites?limit=2", None, &owner)
        .await;
    assert_eq!(status, 200);
    let domains: Vec<&str> = list["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["domain"].as_str().unwrap())
        .collect();
    assert_eq!(domains, [A, B], "{list}");
    assert_eq!(list["meta"]["after"], B);
    assert_eq!(list["results"], list["sites"], "Glimpse's earlier readers");
    let (_, rest) = api
        .call(
            Method::GET,
            &format!("/api/v1/sites?limit=2&after={B}"),
            None,
            &owner,
        )
        .await;
    let rest: Vec<&str> = rest["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["domain"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["c.example", CONFIGURED]);
    let (_, mine) = api.call(Method::GET, "/api/v1/sites", None, &viewer).await;
    assert_eq!(mine["sites"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["sites"][0]["domain"], A);

    // Deleted by the owner: refused by the collector within 10 s, its rows erased.
    let (status, body) = api
        .call(Method::DELETE, &format!("/api/v1/sites/{A}"), None, &owner)
        .await;
    assert_eq!((status, body), (200, json!({"deleted": "true"})));
    let took = beacon_until(collector, A, 403).await;
    println!("collector refused {A} after {took:?}");
    assert!(took <= Duration::from_secs(10), "{took:?}");
    wait_until_erased(&ch, A).await;
    let (status, _) = api
        .call(Method::GET, &aggregate(A), None, &stats_key_a)
        .await;
    assert_eq!(status, 401, "its keys are revoked");
    stop.cancel();
}

/// Renaming a site (Plausible's `PUT /api/v1/sites/:site_id {domain}`): instant, nothing
/// copied or lost. Its rows stay under its first domain (its id), both domains are accepted by
/// the collector and as `site_id`, its members, keys, goals and links keep working, the new
/// domain is what it is shown and snipped as, and deleting it by the new name erases it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_site_keeps_everything_and_accepts_both_domains() {
    const OLD: &str = "old.example";
    const NEW: &str = "new.example";
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    let Started {
        config,
        collector,
        api,
        owner,
    } = start_with_owner(&ch, &stop).await;
    let client = ch.client.clone();
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(json!({"domain": OLD})),
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    let viewer = api
        .new_user(
            &ch,
            &config,
            "viewer@example.com",
            NewRole::Site(Role::Viewer),
            &[OLD],
        )
        .await;
    let (key, _) = auth::create_scoped_key(&client, "glimpse", &config, OLD, "t", KeyScope::Stats)
        .await
        .unwrap();
    let stats_key = Cred::Key(key);
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/v1/sites/goals",
            Some(json!({"site_id": OLD, "goal_type": "page", "page_path": "/pricing"})),
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    let (status, link) = api
        .call(
            Method::PUT,
            "/api/v1/sites/shared-links",
            Some(json!({"site_id": OLD, "name": "press"})),
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    let share = Cred::Share(
        link["url"]
            .as_str()
            .unwrap()
            .rsplit("auth=")
            .next()
            .unwrap()
            .to_string(),
    );
    beacon_until(collector, OLD, 202).await;
    assert_eq!(beacon(collector, OLD, "/pricing").await, 202);

    // Renamed by the owner; taken names refused, for the rename and for new sites.
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/api/v1/sites/{OLD}"),
            Some(json!({"domain": NEW})),
            &owner,
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"domain": NEW, "timezone": "UTC"}))
    );
    for domain in [OLD, NEW] {
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/sites",
                Some(json!({"domain": domain})),
                &owner,
            )
            .await;
        assert_eq!(status, 400, "{domain} is taken: {body}");
    }
    let (status, _) = api
        .call(
            Method::PUT,
            &format!("/api/v1/sites/{NEW}"),
            Some(json!({"domain": CONFIGURED})),
            &owner,
        )
        .await;
    assert_eq!(status, 400, "a configured site's domain is taken");

    // The collector takes the new domain within 10 s, and still the old one.
    let took = beacon_until(collector, NEW, 202).await;
    println!("collector accepted {NEW} after {took:?}");
    assert!(took <= Duration::from_secs(10), "{took:?}");
    assert_eq!(beacon(collector, OLD, "/").await, 202);
    // Both names in one beacon are one site: one row.
    let both = browser_client()
        .post(format!("http://{collector}/api/event"))
        .body(format!(
            r#"{{"n":"pageview","u":"https://{NEW}/both","d":"{OLD},{NEW}"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 202);
    let rows_of = |site: &str, path: &str| {
        format!("SELECT count() FROM glimpse.events WHERE site = '{site}' AND pathname = '{path}'")
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while ch.count(&rows_of(OLD, "/both")).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the two-name beacon never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = ch
        .count(&format!(
            "SELECT count() FROM glimpse.events WHERE site = '{OLD}' AND name = 'pageview'"
        ))
        .await;
    assert_eq!(
        ch.count(&rows_of(OLD, "/both")).await,
        1,
        "one row, not two"
    );
    assert_eq!(
        ch.count(&format!(
            "SELECT count() FROM glimpse.events WHERE site = '{NEW}'"
        ))
        .await,
        0,
        "rows stay under the site's id"
    );

    // Every earlier reader reads it by either name: the viewer, the stats key, the link.
    for site_id in [NEW, OLD] {
        for (who, cred) in [
            ("viewer", &viewer),
            ("stats key", &stats_key),
            ("share link", &share),
        ] {
            let (status, body) = api
                .call(
                    Method::GET,
                    &format!(
                        "/api/v1/stats/aggregate?site_id={site_id}&period=day&metrics=pageviews"
                    ),
                    None,
                    cred,
                )
                .await;
            assert_eq!(status, 200, "{who} on {site_id}: {body}");
            assert_eq!(
                body["results"]["pageviews"]["value"].as_u64(),
                Some(total),
                "{who} on {site_id}: {body}"
            );
        }
    }
    let (status, body) = api
        .call(
            Method::GET,
            &format!("/api/v1/stats/breakdown?site_id={NEW}&period=day&property=event:goal"),
            None,
            &viewer,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["goal"], "Visit /pricing", "{body}");

    // Shown by its new name, with its snippet; listed by it for its viewer.
    let (status, site) = api
        .call(Method::GET, &format!("/api/v1/sites/{NEW}"), None, &owner)
        .await;
    assert_eq!(status, 200);
    assert_eq!(site["domain"], NEW);
    assert_eq!(site["first_domain"], OLD);
    let snippet = site["tracker"]["snippet"].as_str().unwrap();
    assert!(
        snippet.contains(&format!("data-domain=\"{NEW}\"")),
        "{snippet}"
    );
    let (_, mine) = api.call(Method::GET, "/api/v1/sites", None, &viewer).await;
    assert_eq!(mine["sites"][0]["domain"], NEW, "{mine}");
    let (_, log) = api
        .call(
            Method::GET,
            &format!("/api/v1/sites/audit?site_id={NEW}"),
            None,
            &owner,
        )
        .await;
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "site.rename" && e["detail"] == format!("{OLD} → {NEW}")),
        "{log}"
    );

    // Deleted by its new name: both names refused, every row gone; its first domain is then
    // free for a new site, which starts unrenamed.
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/sites/{NEW}"),
            None,
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    beacon_until(collector, NEW, 403).await;
    assert_eq!(beacon(collector, OLD, "/").await, 403);
    wait_until_erased(&ch, OLD).await;
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(json!({"domain": OLD})),
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    let (_, again) = api
        .call(Method::GET, &format!("/api/v1/sites/{OLD}"), None, &owner)
        .await;
    assert_eq!(again["domain"], OLD);
    assert!(again.get("first_domain").is_none(), "{again}");
    stop.cancel();
}

/// Saved funnels are managed like goals: admins save and delete them, readers list them and
/// ask for their figures by name, a configured site's are read-only, every change is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_funnels_are_managed_with_the_sites_goals() {
    let ch = TestClickHouse::start().await;
    let stop = CancellationToken::new();
    let Started {
        config,
        collector,
        api,
        owner,
    } = start_with_owner(&ch, &stop).await;
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(json!({"domain": A})),
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let admin = api
        .new_user(
            &ch,
            &config,
            "admin@example.com",
            NewRole::Site(Role::Admin),
            &[A],
        )
        .await;
    let viewer = api
        .new_user(
            &ch,
            &config,
            "viewer@example.com",
            NewRole::Site(Role::Viewer),
            &[A],
        )
        .await;
    let stats_key_a = {
        let (key, _) =
            auth::create_scoped_key(&ch.client, "glimpse", &config, A, "t", KeyScope::Stats)
                .await
                .unwrap();
        Cred::Key(key)
    };
    let checkout = |steps: Value| Some(json!({"site_id": A, "name": "Checkout", "steps": steps}));
    let with_goal = json!([{"page": "/pricing"}, {"goal": "Signup"}]);
    // A goal step names one of the site's goals.
    let (status, body) = api
        .call(
            Method::PUT,
            "/api/v1/sites/funnels",
            checkout(with_goal.clone()),
            &owner,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("#/steps/1/goal"), "{body}");
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/v1/sites/goals",
            Some(json!({"site_id": A, "goal_type": "event", "event_name": "Signup"})),
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = api
        .call(
            Method::PUT,
            "/api/v1/sites/funnels",
            checkout(with_goal.clone()),
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["labels"], json!(["Visit /pricing", "Signup"]));

    // Who may change and read them.
    let replaced = json!([{"page": "/"}, {"page": "/pricing*"}, {"goal": "Signup"}]);
    for (who, cred, method, path, body, want) in [
        (
            "nobody",
            &Cred::Nobody,
            Method::PUT,
            "/api/v1/sites/funnels".to_string(),
            checkout(replaced.clone()),
            401,
        ),
        (
            "viewer",
            &viewer,
            Method::PUT,
            "/api/v1/sites/funnels".to_string(),
            checkout(replaced.clone()),
            403,
        ),
        (
            "stats key",
            &stats_key_a,
            Method::PUT,
            "/api/v1/sites/funnels".to_string(),
            checkout(replaced.clone()),
            403,
        ),
        (
            "viewer",
            &viewer,
            Method::DELETE,
            format!("/api/v1/sites/funnels/Checkout?site_id={A}"),
            None,
            403,
        ),
        (
            "viewer on B",
            &viewer,
            Method::GET,
            format!("/api/v1/sites/funnels?site_id={B}"),
            None,
            404,
        ),
        (
            "nobody",
            &Cred::Nobody,
            Method::GET,
            format!("/api/v1/sites/funnels?site_id={A}"),
            None,
            401,
        ),
        (
            "admin",
            &admin,
            Method::PUT,
            "/api/v1/sites/funnels".to_string(),
            checkout(replaced.clone()),
            200,
        ),
        (
            "admin, bad steps",
            &admin,
            Method::PUT,
            "/api/v1/sites/funnels".to_string(),
            checkout(json!([{"page": "/"}])),
            400,
        ),
        (
            "owner, configured site",
            &owner,
            Method::PUT,
            "/api/v1/sites/funnels".to_string(),
            Some(
                json!({"site_id": CONFIGURED, "name": "X", "steps": [{"page": "/"}, {"page": "/a"}]}),
            ),
            400,
        ),
        (
            "admin, unknown funnel",
            &admin,
            Method::DELETE,
            format!("/api/v1/sites/funnels/Nope?site_id={A}"),
            None,
            404,
        ),
    ] {
        let (status, got) = api.call(method.clone(), &path, body, cred).await;
        assert_eq!(status, want, "{who} {method} {path}: {got}");
    }
    // Readers list it, replaced by the admin's steps; and ask for its figures by name.
    for reader in [&viewer, &stats_key_a] {
        let (status, list) = api
            .call(
                Method::GET,
                &format!("/api/v1/sites/funnels?site_id={A}"),
                None,
                reader,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["funnels"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["funnels"][0]["name"], "Checkout");
        assert_eq!(list["funnels"][0]["steps"], replaced);
    }
    // Page views of the new site through the collector (once it knows the site): / then
    // /pricing/pro a second later.
    beacon_until(collector, A, 202).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(beacon(collector, A, "/pricing/pro").await, 202);
    let started = Instant::now();
    loop {
        let (status, got) = api
            .call(
                Method::POST,
                "/api/v2/funnel",
                Some(json!({"site_id": A, "date_range": "day", "funnel": "Checkout"})),
                &viewer,
            )
            .await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["meta"]["funnel"], "Checkout");
        let visitors: Vec<u64> = got["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["visitors"].as_u64().unwrap())
            .collect();
        if visitors == [1, 1, 0] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{got}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/sites/funnels/Checkout?site_id={A}"),
            None,
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = api
        .call(
            Method::GET,
            &format!("/api/v1/sites/funnels?site_id={A}"),
            None,
            &owner,
        )
        .await;
    assert_eq!(list["funnels"], json!([]), "{list}");
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v2/funnel",
            Some(json!({"site_id": A, "date_range": "day", "funnel": "Checkout"})),
            &viewer,
        )
        .await;
    assert_eq!(status, 404, "a deleted funnel");

    let (status, log) = api
        .call(
            Method::GET,
            &format!("/api/v1/sites/audit?site_id={A}"),
            None,
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    let has = |actor: &str, action: &str| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["action"] == action && e["detail"] == "Checkout")
    };
    assert!(has("owner@example.com", "funnel.save"), "{log}");
    assert!(has("admin@example.com", "funnel.save"), "{log}");
    assert!(has("admin@example.com", "funnel.delete"), "{log}");
    stop.cancel();
}
