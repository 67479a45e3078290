//! Accounts end to end against a real ClickHouse: who may read which site (owner, admin,
//! viewer, keys, share links, nobody), sign-in and its limits, sessions that end at once on
//! every query service process, cross-site refusals, the `Secure` cookie over HTTPS, the
//! `glimpse user` and `glimpse key --scope` commands, and no password or session token in clear
//! in ClickHouse, on disk or in the logs.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::secrets::{captured_logs, clickhouse_text};
use common::TestClickHouse;
use glimpse_core::site::{Site, SiteConfig};
use glimpse_core::Config;
use glimpse_query::accounts::store::{self, NewRole};
use glimpse_query::accounts::{KeyScope, Role};
use serde_json::{json, Value};

const A: &str = "a.example";
const B: &str = "b.example";
const SHARE_A: &str = "share-a-0123456789";

fn config(ch: &TestClickHouse) -> Config {
    let mut a = SiteConfig::new(A);
    a.share_token = Some(SHARE_A.into());
    Config {
        sites: vec![Site::parse(a).unwrap(), Site::new(B)],
        query: glimpse_core::config::QueryConfig {
            // The tests make many requests from one address on purpose.
            query_rate_limit_per_ip: 0,
            ..ch.config().query
        },
        ..ch.config()
    }
}

/// A query service on `config`, in this test's runtime; its base URL.
async fn serve(config: Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(glimpse_query::serve(
        config,
        listener,
        std::future::pending(),
    ));
    common::wait_for_200(
        &reqwest::Client::new(),
        &format!("{base}/ready"),
        Duration::from_secs(30),
    )
    .await;
    base
}

/// How a request identifies itself.
#[derive(Debug, Clone, Copy)]
enum Cred<'a> {
    Nobody,
    Cookie(&'a str),
    Key(&'a str),
    Share(&'a str),
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(base: &str, path: &str, site: Option<&str>, cred: Cred<'_>) -> (u16, Value) {
    let mut query: Vec<(&str, &str)> = site.map(|s| ("site_id", s)).into_iter().collect();
    if let Cred::Share(token) = cred {
        query.push(("auth", token));
    }
    let url = reqwest::Url::parse_with_params(&format!("{base}{path}"), &query).unwrap();
    let mut request = http().get(url);
    match cred {
        Cred::Nobody | Cred::Share(_) => {}
        Cred::Cookie(token) => {
            request = request.header("cookie", format!("glimpse_session={token}"));
        }
        Cred::Key(key) => request = request.bearer_auth(key),
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A Stats API v2 query of `site`'s visitors, sent from `origin` (the `Origin` header).
async fn query_v2(base: &str, site: &str, cred: Cred<'_>, origin: Option<&str>) -> (u16, Value) {
    let mut url = format!("{base}/api/v2/query");
    if let Cred::Share(token) = cred {
        url.push_str(&format!("?auth={token}"));
    }
    let mut request = http()
        .post(url)
        .json(&json!({"site_id": site, "metrics": ["visitors"], "date_range": "7d"}));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    match cred {
        Cred::Nobody | Cred::Share(_) => {}
        Cred::Cookie(token) => {
            request = request.header("cookie", format!("glimpse_session={token}"));
        }
        Cred::Key(key) => request = request.bearer_auth(key),
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A sign-in: status, body, `Set-Cookie`.
async fn login_with(
    base: &str,
    email: &str,
    password: &str,
    extra: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let mut request = http()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": password }));
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    (status, response.json().await.unwrap_or(Value::Null), cookie)
}

async fn login(base: &str, email: &str, password: &str) -> (u16, Value, Option<String>) {
    login_with(base, email, password, &[]).await
}

/// The session token a successful sign-in set.
async fn sign_in(base: &str, email: &str, password: &str) -> String {
    let (status, body, cookie) = login(base, email, password).await;
    assert_eq!(status, 200, "{email}: {body}");
    let cookie = cookie.expect("Set-Cookie");
    let token = cookie
        .strip_prefix("glimpse_session=")
        .and_then(|c| c.split(';').next())
        .expect("the session cookie")
        .to_string();
    assert_eq!(token.len(), 64, "{cookie}");
    token
}

/// A POST with the session cookie, from `origin` (`None`: no Origin header).
async fn post_with_cookie(
    base: &str,
    path: &str,
    token: &str,
    origin: Option<&str>,
    body: Value,
) -> (u16, Value, Option<String>) {
    let mut request = http()
        .post(format!("{base}{path}"))
        .header("cookie", format!("glimpse_session={token}"))
        .json(&body);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    (status, response.json().await.unwrap_or(Value::Null), cookie)
}

async fn me(base: &str, token: &str) -> u16 {
    get(base, "/api/auth/me", None, Cred::Cookie(token)).await.0
}

async fn add(ch: &TestClickHouse, email: &str, password: &str, role: NewRole, sites: &[&str]) {
    let sites: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
    store::add_user(
        &ch.client,
        "glimpse",
        &config(ch),
        email,
        password,
        role,
        &sites,
    )
    .await
    .unwrap_or_else(|e| panic!("adding {email}: {e}"));
}

/// Runs the `glimpse` binary with `stdin` as its standard input.
async fn glimpse(ch: &TestClickHouse, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(args)
        .env("GLIMPSE_CLICKHOUSE_URL", ch.url())
        .env("GLIMPSE_DATA_DIR", ch.data_dir())
        .env("GLIMPSE_SITES", format!("{A},{B}"))
        .env("GLIMPSE_LOG", "debug")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn domains(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .map(|sites| {
            sites
                .iter()
                .map(|s| s["domain"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_principal_reads_what_its_role_allows() {
    let ch = TestClickHouse::start().await;
    glimpse_core::schema::migrate(&ch.client, "glimpse")
        .await
        .unwrap();
    let base = serve(config(&ch)).await;
    add(
        &ch,
        "owner@example.com",
        "owner-password",
        NewRole::Owner,
        &[],
    )
    .await;
    add(
        &ch,
        "admin@example.com",
        "admin-password",
        NewRole::Site(Role::Admin),
        &[A],
    )
    .await;
    add(
        &ch,
        "viewer@example.com",
        "viewer-password",
        NewRole::Site(Role::Viewer),
        &[A],
    )
    .await;
    let (owner, admin, viewer) = (
        sign_in(&base, "owner@example.com", "owner-password").await,
        sign_in(&base, "Admin@Example.com ", "admin-password").await,
        sign_in(&base, "viewer@example.com", "viewer-password").await,
    );
    let cfg = config(&ch);
    let (stats_key, _) = glimpse_query::auth::create_scoped_key(
        &ch.client,
        "glimpse",
        &cfg,
        A,
        "t",
        KeyScope::Stats,
    )
    .await
    .unwrap();
    let (sites_key, _) = glimpse_query::auth::create_scoped_key(
        &ch.client,
        "glimpse",
        &cfg,
        "*",
        "t",
        KeyScope::Sites,
    )
    .await
    .unwrap();
    let ended = "ab".repeat(32);

    let aggregate = "/api/v1/stats/aggregate";
    let cases: &[(&str, Cred, &str, u16)] = &[
        ("owner on A", Cred::Cookie(&owner), A, 200),
        ("owner on B", Cred::Cookie(&owner), B, 200),
        (
            "owner on an unknown site",
            Cred::Cookie(&owner),
            "nope.example",
            404,
        ),
        ("admin of A on A", Cred::Cookie(&admin), A, 200),
        ("admin of A on B", Cred::Cookie(&admin), B, 403),
        ("viewer of A on A", Cred::Cookie(&viewer), A, 200),
        ("viewer of A on B", Cred::Cookie(&viewer), B, 403),
        (
            "viewer of A on an unknown site",
            Cred::Cookie(&viewer),
            "nope.example",
            403,
        ),
        ("stats key of A on A", Cred::Key(&stats_key), A, 200),
        ("stats key of A on B", Cred::Key(&stats_key), B, 403),
        (
            "stats key of A on an unknown site",
            Cred::Key(&stats_key),
            "nope.example",
            404,
        ),
        (
            "sites key of every site on B",
            Cred::Key(&sites_key),
            B,
            200,
        ),
        ("share link of A on A", Cred::Share(SHARE_A), A, 200),
        ("share link of A on B", Cred::Share(SHARE_A), B, 401),
        ("nobody on A", Cred::Nobody, A, 401),
        ("an ended session on A", Cred::Cookie(&ended), A, 401),
    ];
    for (name, cred, site, expected) in cases {
        let (status, body) = get(&base, aggregate, Some(site), *cred).await;
        assert_eq!(status, *expected, "{name}: {body}");
        if status == 200 {
            assert!(body["results"]["visitors"].is_object(), "{name}: {body}");
        }
        // Stats API v2 decides exactly as v1.
        let (status, body) = query_v2(&base, site, *cred, Some(&base)).await;
        assert_eq!(status, *expected, "v2, {name}: {body}");
        if status == 200 {
            assert_eq!(
                body["results"][0]["metrics"],
                json!([0]),
                "v2, {name}: {body}"
            );
        }
    }
    // A v2 query is a POST: with the session cookie, only from the service's own pages.
    let (status, body) = query_v2(
        &base,
        A,
        Cred::Cookie(&viewer),
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(status, 403, "cross-site v2 query: {body}");
    // A cookie that is no session is refused, not tried as a share link (cookie-bearing
    // requests skip the per-client limit that keeps share tokens from being guessed).
    let url = reqwest::Url::parse_with_params(
        &format!("{base}{aggregate}"),
        &[("site_id", A), ("auth", SHARE_A)],
    )
    .unwrap();
    let response = http()
        .get(url)
        .header("cookie", format!("glimpse_session={ended}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "an ended session with a share link");
    // The site picker lists what each may read.
    // (who, credentials, the share link's site_id, status, the sites listed)
    type SitesCase<'a> = (&'a str, Cred<'a>, Option<&'a str>, u16, &'a [&'a str]);
    let sites: &[SitesCase] = &[
        ("owner", Cred::Cookie(&owner), None, 200, &[A, B]),
        ("admin of A", Cred::Cookie(&admin), None, 200, &[A]),
        ("viewer of A", Cred::Cookie(&viewer), None, 200, &[A]),
        ("stats key of A", Cred::Key(&stats_key), None, 200, &[A]),
        (
            "sites key of every site",
            Cred::Key(&sites_key),
            None,
            200,
            &[A, B],
        ),
        ("share link of A", Cred::Share(SHARE_A), Some(A), 200, &[A]),
        ("nobody", Cred::Nobody, None, 401, &[]),
    ];
    for (name, cred, site, expected, listed) in sites {
        let (status, body) = get(&base, "/api/v1/sites", *site, *cred).await;
        assert_eq!(status, *expected, "{name}: {body}");
        let mut got = domains(&body);
        got.sort();
        assert_eq!(got, *listed, "{name}: {body}");
    }
    // `me` answers as the sign-in did.
    let (status, body) = get(&base, "/api/auth/me", None, Cred::Cookie(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"email": "admin@example.com", "owner": false, "sites": [{"domain": A, "role": "admin"}]})
    );
    let (status, body) = get(&base, "/api/auth/me", None, Cred::Nobody).await;
    assert_eq!(
        (status, &body["users_exist"]),
        (401, &json!(true)),
        "{body}"
    );

    // The commands, through the binary: the password from standard input only.
    let (ok, out, err) = glimpse(
        &ch,
        &[
            "user",
            "add",
            "Cli@Example.com",
            "--role",
            "viewer",
            "--site",
            B,
            "--password-stdin",
        ],
        "cli-password-1\n",
    )
    .await;
    assert!(ok, "{out}{err}");
    assert_eq!(
        sign_in(&base, "cli@example.com", "cli-password-1")
            .await
            .len(),
        64
    );
    let (ok, out, err) = glimpse(
        &ch,
        &[
            "user",
            "add",
            "x@example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "cli-password-2\n",
    )
    .await;
    assert!(!ok && err.contains("at least one --site"), "{out}{err}");
    let (ok, _, err) = glimpse(
        &ch,
        &[
            "user",
            "add",
            "x@example.com",
            "--role",
            "admin",
            "--site",
            "nope.example",
            "--password-stdin",
        ],
        "cli-password-2\n",
    )
    .await;
    assert!(!ok && err.contains("nope.example"), "{err}");
    let (ok, _, err) = glimpse(
        &ch,
        &[
            "user",
            "add",
            "x@example.com",
            "--role",
            "owner",
            "--password-stdin",
        ],
        "short\n",
    )
    .await;
    assert!(!ok && err.contains("8 to 256"), "{err}");
    let (ok, out, err) = glimpse(&ch, &["user", "list"], "").await;
    assert!(ok, "{err}");
    for line in [
        "owner@example.com",
        "admin of a.example",
        "viewer of a.example",
        "cli@example.com",
        "viewer of b.example",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(
        !out.contains("argon2") && !out.contains("password"),
        "{out}"
    );
    let (ok, out, err) =
        glimpse(&ch, &["key", "create", "--site", A, "--scope", "sites"], "").await;
    assert!(ok, "{err}");
    let created = out.trim().to_string();
    assert!(err.contains("sites key"), "{err}");
    let (ok, out, _) = glimpse(&ch, &["key", "list"], "").await;
    assert!(ok);
    let mut scopes: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default())
        .collect();
    scopes.sort();
    assert_eq!(scopes, ["sites", "sites", "stats"], "{out}");
    assert_eq!(
        get(&base, aggregate, Some(A), Cred::Key(&created)).await.0,
        200
    );
    let (ok, _, err) = glimpse(&ch, &["user", "remove", "cli@example.com"], "").await;
    assert!(ok, "{err}");
    assert_eq!(
        login(&base, "cli@example.com", "cli-password-1").await.0,
        401
    );
    println!(
        "{} stats cases and {} site lists as the roles allow",
        cases.len(),
        sites.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_everywhere_at_once_and_no_secret_is_kept_in_clear() {
    let logs = captured_logs();
    let ch = TestClickHouse::start().await;
    glimpse_core::schema::migrate(&ch.client, "glimpse")
        .await
        .unwrap();
    // Two query service processes' worth of services on one ClickHouse.
    let (one, two) = (serve(config(&ch)).await, serve(config(&ch)).await);
    let mut secrets: Vec<String> = Vec::new();
    let mut remember = |s: &str| secrets.push(s.to_string());

    // Nobody yet: the dashboard says how to create the first user.
    let (status, body) = get(&one, "/api/auth/me", None, Cred::Nobody).await;
    assert_eq!(
        (status, &body["users_exist"]),
        (401, &json!(false)),
        "{body}"
    );

    let ann_password = "ann-first-password";
    add(
        &ch,
        "ann@example.com",
        ann_password,
        NewRole::Site(Role::Viewer),
        &[A],
    )
    .await;
    remember(ann_password);

    // A wrong password and an unknown e-mail get the same answer.
    let wrong = login(&one, "ann@example.com", "not-her-password").await;
    let unknown = login(&one, "nobody@example.com", ann_password).await;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.1, json!({"error": "invalid email or password"}));
    assert_eq!(
        (wrong.0, &wrong.1, &wrong.2),
        (unknown.0, &unknown.1, &unknown.2)
    );
    remember("not-her-password");

    // Signed in on one process, known on the other; signing out ends it on both.
    let c1 = sign_in(&one, "ann@example.com", ann_password).await;
    let c2 = sign_in(&two, "ann@example.com", ann_password).await;
    remember(&c1);
    remember(&c2);
    assert_eq!(me(&two, &c1).await, 200);
    let (status, _, cleared) =
        post_with_cookie(&one, "/api/auth/logout", &c1, Some(&one), json!({})).await;
    assert_eq!(status, 200);
    assert!(
        cleared.unwrap().starts_with("glimpse_session=;"),
        "the cookie is cleared"
    );
    assert_eq!(me(&two, &c1).await, 401, "signed out everywhere at once");
    assert_eq!(
        get(&two, "/api/v1/stats/aggregate", Some(A), Cred::Cookie(&c1))
            .await
            .0,
        401
    );
    assert_eq!(me(&two, &c2).await, 200, "her other session goes on");

    // Cross-site: a cookie-bearing POST from another origin, or from nowhere, is refused.
    for origin in [Some("https://evil.example"), Some("null"), None] {
        let (status, body, _) =
            post_with_cookie(&two, "/api/auth/logout", &c2, origin, json!({})).await;
        assert_eq!(
            (status, body),
            (403, json!({"error": "cross-site request refused"})),
            "{origin:?}"
        );
    }
    assert_eq!(
        me(&two, &c2).await,
        200,
        "the refused sign-outs did nothing"
    );
    let (status, body, _) = post_with_cookie(
        &two,
        "/api/auth/password",
        &c2,
        Some(&two),
        json!({"current_password": "not-her-password-2", "new_password": "whatever-9"}),
    )
    .await;
    assert_eq!(
        (status, body),
        (403, json!({"error": "the current password is wrong"})),
        "the right origin passes on to the endpoint"
    );
    remember("not-her-password-2");
    remember("whatever-9");
    // A `Referer` of our own origin stands in for a missing `Origin`.
    let response = http()
        .post(format!("{two}/api/auth/logout"))
        .header("cookie", format!("glimpse_session={c2}"))
        .header("referer", format!("{two}/?site=a.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(me(&one, &c2).await, 401);
    // A key holder without the cookie is not asked for an origin.
    let (key, _) = glimpse_query::auth::create_scoped_key(
        &ch.client,
        "glimpse",
        &config(&ch),
        A,
        "t",
        KeyScope::Stats,
    )
    .await
    .unwrap();
    remember(&key);
    let response = http()
        .post(format!("{one}/api/auth/logout"))
        .bearer_auth(&key)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A sign-in posted from another website's page is refused (login CSRF).
    let (status, body, cookie) = login_with(
        &one,
        "ann@example.com",
        ann_password,
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!((status, cookie), (403, None), "{body}");

    // A password change ends her other sessions, not the one she changed it in.
    let (c3, c4) = (
        sign_in(&one, "ann@example.com", ann_password).await,
        sign_in(&two, "ann@example.com", ann_password).await,
    );
    remember(&c3);
    remember(&c4);
    let ann_second = "ann-second-password";
    remember(ann_second);
    let (status, body, _) = post_with_cookie(
        &one,
        "/api/auth/password",
        &c3,
        Some(&one),
        json!({"current_password": ann_password, "new_password": ann_second}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(me(&two, &c4).await, 401);
    assert_eq!(me(&two, &c3).await, 200);
    assert_eq!(login(&two, "ann@example.com", ann_password).await.0, 401);
    let c5 = sign_in(&two, "ann@example.com", ann_second).await;
    remember(&c5);

    // The operator resets her password (the CLI's function): every session ends, on the
    // other process too.
    let ann_third = "ann-third-password";
    remember(ann_third);
    store::reset_password(&ch.client, "glimpse", "ann@example.com", ann_third)
        .await
        .unwrap();
    assert_eq!(me(&two, &c3).await, 401);
    assert_eq!(me(&one, &c5).await, 401);
    let c6 = sign_in(&two, "ann@example.com", ann_third).await;
    remember(&c6);

    // Signing out everywhere ends them all.
    let c7 = sign_in(&one, "ann@example.com", ann_third).await;
    remember(&c7);
    let (status, _, _) = post_with_cookie(
        &two,
        "/api/auth/logout-everywhere",
        &c6,
        Some(&two),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!((me(&one, &c6).await, me(&one, &c7).await), (401, 401));

    // A removed user's sessions end at once, everywhere, and they cannot sign in again.
    let bob_password = "bob-password-1";
    remember(bob_password);
    add(
        &ch,
        "bob@example.com",
        bob_password,
        NewRole::Site(Role::Admin),
        &[A],
    )
    .await;
    let cb = sign_in(&one, "bob@example.com", bob_password).await;
    remember(&cb);
    assert_eq!(
        get(&two, "/api/v1/stats/aggregate", Some(A), Cred::Cookie(&cb))
            .await
            .0,
        200
    );
    store::remove_user(&ch.client, "glimpse", "bob@example.com")
        .await
        .unwrap();
    assert_eq!(
        get(&two, "/api/v1/stats/aggregate", Some(A), Cred::Cookie(&cb))
            .await
            .0,
        401
    );
    assert_eq!(me(&one, &cb).await, 401);
    assert_eq!(login(&two, "bob@example.com", bob_password).await.0, 401);

    // Guessing: five failures lock the account for a while, even for the right password, and
    // an unknown e-mail the same way.
    let three = serve(config(&ch)).await;
    let carol_password = "carol-password-1";
    remember(carol_password);
    add(
        &ch,
        "carol@example.com",
        carol_password,
        NewRole::Site(Role::Viewer),
        &[B],
    )
    .await;
    for email in ["carol@example.com", "nobody@example.com"] {
        for n in 0..5 {
            let guess = format!("guess-number-{n}");
            assert_eq!(login(&three, email, &guess).await.0, 401, "{email} {n}");
        }
        let response = http()
            .post(format!("{three}/api/auth/login"))
            .json(&json!({"email": email, "password": carol_password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "{email}");
        let wait: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((800..=900).contains(&wait), "{wait}");
    }
    // Another process (or account) is not locked by them.
    let c8 = sign_in(&one, "carol@example.com", carol_password).await;
    remember(&c8);

    // Secure cookies over HTTPS: `dashboard_url` says so, or a trusted proxy does.
    let https = serve(Config {
        query: glimpse_core::config::QueryConfig {
            dashboard_url: Some("https://stats.example.test".into()),
            ..config(&ch).query
        },
        ..config(&ch)
    })
    .await;
    // The collector's `public_url` is another origin: it says nothing about the dashboard's.
    let collector_public = serve(Config {
        public_url: Some("https://collector.example.test".into()),
        ..config(&ch)
    })
    .await;
    let proxied = serve(Config {
        trusted_proxies: glimpse_core::proxies::ProxyNets::parse(&["127.0.0.1".into()]).unwrap(),
        ..config(&ch)
    })
    .await;
    let forwarded = [("x-forwarded-proto", "https")];
    for (base, extra, secure) in [
        (&https, &[][..], true),
        (&collector_public, &[][..], false),
        (&proxied, &forwarded[..], true),
        (&proxied, &[][..], false),
        (&one, &forwarded[..], false), // not from a trusted proxy
    ] {
        let (status, _, cookie) =
            login_with(base, "carol@example.com", carol_password, extra).await;
        assert_eq!(status, 200);
        let cookie = cookie.unwrap();
        assert!(
            cookie.contains("; HttpOnly; SameSite=Lax; Path=/; Max-Age=1209600"),
            "{cookie}"
        );
        assert_eq!(
            cookie.ends_with("; Secure"),
            secure,
            "{base} {extra:?}: {cookie}"
        );
        remember(
            cookie
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches("glimpse_session="),
        );
    }
    let cc = sign_in(&collector_public, "carol@example.com", carol_password).await;
    remember(&cc);
    let (status, _, _) = post_with_cookie(
        &collector_public,
        "/api/auth/logout",
        &cc,
        Some(&collector_public),
        json!({}),
    )
    .await;
    assert_eq!(
        status, 200,
        "the dashboard's own origin, whatever `public_url` says"
    );
    // With `dashboard_url`, its origin is the only own one: not the Host the request named.
    let cs = sign_in(&https, "carol@example.com", carol_password).await;
    remember(&cs);
    let (status, _, _) =
        post_with_cookie(&https, "/api/auth/logout", &cs, Some(&https), json!({})).await;
    assert_eq!(status, 403);
    let (status, _, _) = post_with_cookie(
        &https,
        "/api/auth/logout",
        &cs,
        Some("https://stats.example.test"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);

    // No secret in clear: every table of the database as text, the system logs ClickHouse
    // keeps, the data directories and this process's log lines.
    let stored_sessions = clickhouse_text(&ch, "SELECT * FROM glimpse.sessions").await;
    assert!(stored_sessions.lines().count() > 10, "{stored_sessions}");
    let users = clickhouse_text(&ch, "SELECT password_hash FROM glimpse.users").await;
    assert!(users.contains("$argon2id$v=19$m=19456,t=2,p=1$"), "{users}");
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("sign-in refused"), "the logs were captured");
    let searched = common::secrets::assert_absent(&ch, &logs, &secrets).await;
    assert!(
        searched.tables.contains(&"sessions".to_string()),
        "{searched:?}"
    );
    println!(
        "{} secrets absent from {} tables ({} bytes), {} files, {} bytes of logs",
        secrets.len(),
        searched.tables.len(),
        searched.table_bytes,
        searched.files,
        searched.log_bytes
    );
}
