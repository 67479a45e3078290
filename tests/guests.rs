//! Guests, invitations and site keys end to end against a real ClickHouse: who may manage a
//! site's guests and keys (a table of cases), an invitation mailed through a real SMTP server,
//! accepted with a password, the invitee reading only that site until removed, tokens that are
//! unknown, replaced, expired or used, keys created, used and revoked over HTTP, the audit
//! log, and no invitation token or key in clear in ClickHouse, on disk or in the logs.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::secrets::captured_logs;
use common::TestClickHouse;
use glimpse_core::site::{Site, SiteConfig};
use glimpse_core::Config;
use glimpse_query::accounts::store::NewRole;
use glimpse_query::accounts::{KeyScope, Role};
use glimpse_query::auth;
use reqwest::Method;
use serde_json::{json, Value};

const A: &str = "a.example";
const B: &str = "b.example";
const SHARE_A: &str = "share-a-0123456789";
const PASSWORD: &str = "correct horse battery";

fn config(ch: &TestClickHouse) -> Config {
    let mut a = SiteConfig::new(A);
    a.share_token = Some(SHARE_A.into());
    Config {
        // Configured sites: guests are accounts, not configuration, so they are allowed.
        sites: vec![Site::parse(a).unwrap(), Site::new(B)],
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
    Share,
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start(ch: &TestClickHouse, config: Config) -> Self {
        glimpse_core::schema::migrate(&ch.client, "glimpse")
            .await
            .unwrap();
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
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    /// A request with `cred` (a cookie-bearing change says it comes from this service).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        cred: &Cred,
    ) -> (u16, Value) {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).unwrap();
        if let Cred::Share = cred {
            url.query_pairs_mut().append_pair("auth", SHARE_A);
        }
        let mut request = self.http.request(method, url);
        match cred {
            Cred::Nobody | Cred::Share => {}
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

    async fn sign_in(&self, email: &str) -> Cred {
        let response = self
            .http
            .post(format!("{}/api/auth/login", self.base))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{email}");
        Cred::Cookie(session_of(&response))
    }

    /// `POST /api/auth/accept-invitation` from this service's own page.
    async fn accept(&self, token: &str, password: &str, origin: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/auth/accept-invitation", self.base))
            .header("origin", origin)
            .json(&json!({ "token": token, "password": password }))
            .send()
            .await
            .unwrap()
    }

    async fn invitation(&self, token: &str) -> (u16, Value) {
        let path = format!("/api/auth/invitation?token={token}");
        self.call(Method::GET, &path, None, &Cred::Nobody).await
    }
}

fn session_of(response: &reqwest::Response) -> String {
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    cookie
        .strip_prefix("glimpse_session=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string()
}

async fn add(ch: &TestClickHouse, email: &str, role: NewRole, sites: &[&str]) {
    common::accounts::add_user(&ch.client, &config(ch), email, PASSWORD, role, sites).await;
}

async fn key(ch: &TestClickHouse, site: &str, scope: KeyScope) -> (String, String) {
    auth::create_scoped_key(&ch.client, "glimpse", &config(ch), site, "test", scope)
        .await
        .unwrap()
}

fn token_of(invitation_url: &Value) -> String {
    invitation_url
        .as_str()
        .and_then(|u| u.split("?invitation=").nth(1))
        .unwrap_or_else(|| panic!("no token in {invitation_url}"))
        .to_string()
}

/// Who, method, path, body, the status expected.
type Case<'a> = (&'a str, &'a Cred, Method, String, Option<Value>, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_manage_guests_and_keys_and_keys_end_at_once() {
    let logs = captured_logs();
    let ch = TestClickHouse::start().await;
    let api = Api::start(&ch, config(&ch)).await;
    add(&ch, "owner@example.com", NewRole::Owner, &[]).await;
    add(&ch, "admin@example.com", NewRole::Site(Role::Admin), &[A]).await;
    add(&ch, "viewer@example.com", NewRole::Site(Role::Viewer), &[A]).await;
    let owner = api.sign_in("owner@example.com").await;
    let admin = api.sign_in("admin@example.com").await;
    let viewer = api.sign_in("viewer@example.com").await;
    let stats_key = Cred::Key(key(&ch, A, KeyScope::Stats).await.0);
    let sites_key = Cred::Key(key(&ch, A, KeyScope::Sites).await.0);
    let (share, nobody) = (Cred::Share, Cred::Nobody);
    // Keys for the revocation cases, one per principal that may revoke.
    let mut doomed = Vec::new();
    for _ in 0..3 {
        doomed.push(key(&ch, A, KeyScope::Stats).await.1);
    }
    let key_of_b = key(&ch, B, KeyScope::Stats).await.1;

    let guests = format!("/api/v1/sites/guests?site_id={A}");
    let keys = format!("/api/v1/sites/keys?site_id={A}");
    let invite =
        |email: &str, role: &str| Some(json!({"site_id": A, "email": email, "role": role}));
    let new_key = |scope: &str| Some(json!({"site_id": A, "name": "dash", "scope": scope}));
    let remove = |email: &str| format!("/api/v1/sites/guests/{email}?site_id={A}");
    let revoke = |id: &str| format!("/api/v1/sites/keys/{id}?site_id={A}");
    let put = Method::PUT;
    let cases: Vec<Case> = vec![
        // Listing guests.
        ("owner", &owner, Method::GET, guests.clone(), None, 200),
        ("admin A", &admin, Method::GET, guests.clone(), None, 200),
        ("viewer A", &viewer, Method::GET, guests.clone(), None, 403),
        (
            "stats key A",
            &stats_key,
            Method::GET,
            guests.clone(),
            None,
            403,
        ),
        (
            "sites key A",
            &sites_key,
            Method::GET,
            guests.clone(),
            None,
            200,
        ),
        ("share A", &share, Method::GET, guests.clone(), None, 403),
        ("nobody", &nobody, Method::GET, guests.clone(), None, 401),
        (
            "admin A on B",
            &admin,
            Method::GET,
            format!("/api/v1/sites/guests?site_id={B}"),
            None,
            404,
        ),
        // Inviting.
        (
            "owner",
            &owner,
            put.clone(),
            guests.clone(),
            invite("g1@example.com", "viewer"),
            200,
        ),
        (
            "admin A",
            &admin,
            put.clone(),
            guests.clone(),
            invite("g2@example.com", "editor"),
            200,
        ),
        (
            "viewer A",
            &viewer,
            put.clone(),
            guests.clone(),
            invite("g4@example.com", "viewer"),
            403,
        ),
        (
            "stats key A",
            &stats_key,
            put.clone(),
            guests.clone(),
            invite("g4@example.com", "viewer"),
            403,
        ),
        (
            "sites key A",
            &sites_key,
            put.clone(),
            guests.clone(),
            invite("g3@example.com", "admin"),
            200,
        ),
        (
            "share A",
            &share,
            put.clone(),
            guests.clone(),
            invite("g4@example.com", "viewer"),
            403,
        ),
        (
            "nobody",
            &nobody,
            put.clone(),
            guests.clone(),
            invite("g4@example.com", "viewer"),
            401,
        ),
        (
            "the owner's e-mail: invited like anyone's (no tell who the owner is)",
            &owner,
            put.clone(),
            guests.clone(),
            invite("owner@example.com", "viewer"),
            200,
        ),
        (
            "a role that is none",
            &owner,
            put.clone(),
            guests.clone(),
            invite("g4@example.com", "owner"),
            400,
        ),
        (
            "no e-mail",
            &owner,
            put.clone(),
            guests.clone(),
            invite("g4", "viewer"),
            400,
        ),
        // Removing guests.
        (
            "viewer A",
            &viewer,
            Method::DELETE,
            remove("g1@example.com"),
            None,
            403,
        ),
        (
            "stats key A",
            &stats_key,
            Method::DELETE,
            remove("g1@example.com"),
            None,
            403,
        ),
        (
            "share A",
            &share,
            Method::DELETE,
            remove("g1@example.com"),
            None,
            403,
        ),
        (
            "nobody",
            &nobody,
            Method::DELETE,
            remove("g1@example.com"),
            None,
            401,
        ),
        (
            "owner",
            &owner,
            Method::DELETE,
            remove("g1@example.com"),
            None,
            200,
        ),
        (
            "admin A",
            &admin,
            Method::DELETE,
            remove("g2@example.com"),
            None,
            200,
        ),
        (
            "sites key A",
            &sites_key,
            Method::DELETE,
            remove("g3@example.com"),
            None,
            200,
        ),
        (
            "no such guest",
            &owner,
            Method::DELETE,
            remove("g1@example.com"),
            None,
            404,
        ),
        // Listing keys.
        ("owner", &owner, Method::GET, keys.clone(), None, 200),
        ("admin A", &admin, Method::GET, keys.clone(), None, 200),
        ("viewer A", &viewer, Method::GET, keys.clone(), None, 403),
        (
            "stats key A",
            &stats_key,
            Method::GET,
            keys.clone(),
            None,
            403,
        ),
        (
            "sites key A",
            &sites_key,
            Method::GET,
            keys.clone(),
            None,
            200,
        ),
        ("share A", &share, Method::GET, keys.clone(), None, 403),
        ("nobody", &nobody, Method::GET, keys.clone(), None, 401),
        // Creating keys: no key mints a sites key.
        (
            "owner",
            &owner,
            put.clone(),
            keys.clone(),
            new_key("sites"),
            200,
        ),
        (
            "admin A",
            &admin,
            put.clone(),
            keys.clone(),
            new_key("sites"),
            200,
        ),
        (
            "admin A, stats",
            &admin,
            put.clone(),
            keys.clone(),
            new_key("stats"),
            200,
        ),
        (
            "viewer A",
            &viewer,
            put.clone(),
            keys.clone(),
            new_key("stats"),
            403,
        ),
        (
            "stats key A",
            &stats_key,
            put.clone(),
            keys.clone(),
            new_key("stats"),
            403,
        ),
        (
            "sites key A, stats",
            &sites_key,
            put.clone(),
            keys.clone(),
            new_key("stats"),
            200,
        ),
        (
            "sites key A, sites",
            &sites_key,
            put.clone(),
            keys.clone(),
            new_key("sites"),
            403,
        ),
        (
            "share A",
            &share,
            put.clone(),
            keys.clone(),
            new_key("stats"),
            403,
        ),
        (
            "nobody",
            &nobody,
            put.clone(),
            keys.clone(),
            new_key("stats"),
            401,
        ),
        (
            "a scope that is none",
            &owner,
            put.clone(),
            keys.clone(),
            new_key("all"),
            400,
        ),
        // Revoking keys.
        (
            "viewer A",
            &viewer,
            Method::DELETE,
            revoke(&doomed[0]),
            None,
            403,
        ),
        (
            "stats key A",
            &stats_key,
            Method::DELETE,
            revoke(&doomed[0]),
            None,
            403,
        ),
        (
            "share A",
            &share,
            Method::DELETE,
            revoke(&doomed[0]),
            None,
            403,
        ),
        (
            "nobody",
            &nobody,
            Method::DELETE,
            revoke(&doomed[0]),
            None,
            401,
        ),
        (
            "owner",
            &owner,
            Method::DELETE,
            revoke(&doomed[0]),
            None,
            200,
        ),
        (
            "admin A",
            &admin,
            Method::DELETE,
            revoke(&doomed[1]),
            None,
            200,
        ),
        (
            "sites key A",
            &sites_key,
            Method::DELETE,
            revoke(&doomed[2]),
            None,
            200,
        ),
        (
            "revoked already",
            &owner,
            Method::DELETE,
            revoke(&doomed[0]),
            None,
            404,
        ),
        (
            "a key of B",
            &owner,
            Method::DELETE,
            revoke(&key_of_b),
            None,
            404,
        ),
    ];
    for (who, cred, method, path, body, want) in &cases {
        let (status, answer) = api.call(method.clone(), path, body.clone(), cred).await;
        assert_eq!(status, *want, "{who}: {method} {path} {body:?}: {answer}");
    }
    println!("{} permission cases", cases.len());

    // Without smtp_url an invitation is not mailed; its answer has the link.
    let (status, invited) = api
        .call(
            put.clone(),
            &guests,
            invite("Late@Example.com", "editor"),
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{invited}");
    assert_eq!(invited["email"], "late@example.com");
    assert_eq!(
        (invited["role"].clone(), invited["accepted"].clone()),
        (json!("editor"), json!(false))
    );
    assert_eq!(invited["mail"], "off");
    assert!(
        invited["invitation_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/?invitation=", api.base)),
        "{invited}"
    );
    // A mail server that does not answer: the invitation stands, the answer says so.
    let mut dead_mail = config(&ch);
    dead_mail.query.smtp_url = Some(format!("smtp://{}", common::free_addr()).into());
    let other = Api::start(&ch, dead_mail).await;
    let (status, unmailed) = other
        .call(
            put.clone(),
            &guests,
            invite("late@example.com", "editor"),
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{unmailed}");
    assert_eq!(unmailed["mail"], "failed", "{unmailed}");
    let stale = token_of(&invited["invitation_url"]);
    let fresh = token_of(&unmailed["invitation_url"]);
    assert_eq!(other.invitation(&stale).await.0, 404, "replaced");
    assert_eq!(other.invitation(&fresh).await.0, 200);
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logged.contains("invitation mail not sent"), "logged");
    let (_, listed) = api.call(Method::GET, &guests, None, &owner).await;
    assert_eq!(
        listed["guests"],
        json!([
            {"email": "admin@example.com", "role": "editor", "accepted": true},
            {"email": "late@example.com", "role": "editor", "accepted": false},
            {"email": "owner@example.com", "role": "viewer", "accepted": false},
            {"email": "viewer@example.com", "role": "viewer", "accepted": true},
        ]),
        "{listed}"
    );
    let (_, first) = api
        .call(Method::GET, &format!("{guests}&limit=2"), None, &owner)
        .await;
    assert_eq!(first["meta"]["after"], "late@example.com", "{first}");

    // A key's life over HTTP: shown once, used, listed without its secret, revoked at once.
    let (status, created) = api.call(put.clone(), &keys, new_key("stats"), &admin).await;
    assert_eq!(status, 200, "{created}");
    let secret = created["key"].as_str().unwrap().to_string();
    let key_id = created["key_id"].as_str().unwrap().to_string();
    assert_eq!(
        (created["name"].clone(), created["scope"].clone()),
        (json!("dash"), json!("stats"))
    );
    let stats = format!("/api/v1/stats/aggregate?site_id={A}&period=day&metrics=visitors");
    let new = Cred::Key(secret.clone());
    assert_eq!(api.call(Method::GET, &stats, None, &new).await.0, 200);
    let (_, listed) = api.call(Method::GET, &keys, None, &admin).await;
    let text = listed.to_string();
    assert!(!text.contains(&secret), "{text}");
    assert!(!text.contains("\"key\""), "{text}");
    let entry = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id.as_str())
        .unwrap_or_else(|| panic!("{key_id} not in {listed}"))
        .clone();
    assert_eq!(entry["revoked"], false);
    assert!(
        entry["created_at"].as_str().unwrap().ends_with('Z'),
        "{entry}"
    );
    let revoked_at = Instant::now();
    let (status, _) = api
        .call(Method::DELETE, &revoke(&key_id), None, &admin)
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.call(Method::GET, &stats, None, &new).await.0, 401);
    println!(
        "revoked key refused {:?} after the revocation",
        revoked_at.elapsed()
    );
    let (_, listed) = api.call(Method::GET, &keys, None, &admin).await;
    assert!(listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["key_id"] == key_id.as_str() && k["revoked"] == true));
    // Another site's keys are not listed.
    assert!(!listed.to_string().contains(&key_of_b), "{listed}");

    // The audit log has each change, named without secrets.
    let (_, audit) = api
        .call(
            Method::GET,
            &format!("/api/v1/sites/audit?site_id={A}&limit=1000"),
            None,
            &owner,
        )
        .await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["guest.invite", "guest.remove", "key.create", "key.revoke"] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }
    assert!(!audit.to_string().contains(&secret));
    for token in [&stale, &fresh] {
        assert!(!audit.to_string().contains(token.as_str()));
    }
    assert_no_secret_in_clear(&ch, logs, &[secret, stale, fresh]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitee_accepts_by_mail_reads_only_their_site_until_removed() {
    let logs = captured_logs();
    let ch = TestClickHouse::start().await;
    let sink = SmtpSink::start();
    let mut config = config(&ch);
    config.query.smtp_url = Some(format!("smtp://127.0.0.1:{}", sink.port).into());
    let api = Api::start(&ch, config).await;
    add(&ch, "owner@example.com", NewRole::Owner, &[]).await;
    add(&ch, "member@example.com", NewRole::Site(Role::Viewer), &[B]).await;
    let owner = api.sign_in("owner@example.com").await;
    let guests = format!("/api/v1/sites/guests?site_id={A}");
    let invite =
        |email: &str, role: &str| Some(json!({"site_id": A, "email": email, "role": role}));
    let mut secrets = Vec::new();

    // Invited and mailed; a second invitation replaces the first.
    let (status, first) = api
        .call(
            Method::PUT,
            &guests,
            invite("guest@example.com", "viewer"),
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["mail"], "sent", "{first}");
    let old = token_of(&first["invitation_url"]);
    let mailed = sink.wait_for(&old, Duration::from_secs(10));
    assert!(mailed.contains("To: guest@example.com"), "{mailed}");
    assert!(mailed.contains("owner@example.com invites you"), "{mailed}");
    let (status, second) = api
        .call(
            Method::PUT,
            &guests,
            invite("guest@example.com", "viewer"),
            &owner,
        )
        .await;
    assert_eq!(status, 200, "{second}");
    let token = token_of(&second["invitation_url"]);
    assert_ne!(token, old);
    secrets.extend([old.clone(), token.clone()]);
    assert_eq!(api.invitation(&old).await.0, 404, "the replaced token");
    let (status, shown) = api.invitation(&token).await;
    assert_eq!(status, 200);
    assert_eq!(
        shown,
        json!({"email": "guest@example.com", "site": A, "role": "viewer"})
    );
    let unknown = "0".repeat(64);
    let (status, refused) = api.invitation(&unknown).await;
    assert_eq!(status, 404);
    assert_eq!(
        api.invitation("junk").await,
        (404, refused.clone()),
        "the same answer"
    );

    // Accepting: not from another website, not with a password too short, then signed in.
    let evil = api.accept(&token, PASSWORD, "https://evil.example").await;
    assert_eq!(evil.status(), 403);
    assert_eq!(api.accept(&token, "short", &api.base).await.status(), 400);
    assert_eq!(
        api.accept(&unknown, PASSWORD, &api.base).await.status(),
        404
    );
    // Twice at once (a double click): one acceptance, the other finds the invitation used.
    let (first, twin) = tokio::join!(
        api.accept(&token, PASSWORD, &api.base),
        api.accept(&token, PASSWORD, &api.base)
    );
    let mut statuses = [first.status().as_u16(), twin.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 404], "one acceptance of two at once");
    let accepted = if first.status() == 200 { first } else { twin };
    let guest = Cred::Cookie(session_of(&accepted));
    let who: Value = accepted.json().await.unwrap();
    assert_eq!(
        who,
        json!({"email": "guest@example.com", "owner": false, "sites": [{"domain": A, "role": "viewer"}]})
    );
    assert_eq!(api.invitation(&token).await.0, 404, "used");
    assert_eq!(
        api.accept(&token, PASSWORD, &api.base).await.status(),
        404,
        "used"
    );

    // The invitee signs in with their password and reads A, only A.
    let signed_in = api.sign_in("guest@example.com").await;
    let stats =
        |site: &str| format!("/api/v1/stats/aggregate?site_id={site}&period=day&metrics=visitors");
    for cred in [&guest, &signed_in] {
        let (_, sites) = api.call(Method::GET, "/api/v1/sites", None, cred).await;
        let domains: Vec<&str> = sites["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["domain"].as_str().unwrap())
            .collect();
        assert_eq!(domains, [A], "{sites}");
        assert_eq!(api.call(Method::GET, &stats(A), None, cred).await.0, 200);
        assert_eq!(api.call(Method::GET, &stats(B), None, cred).await.0, 403);
        assert_eq!(
            api.call(Method::GET, &guests, None, cred).await.0,
            403,
            "a viewer"
        );
    }
    let (_, listed) = api.call(Method::GET, &guests, None, &owner).await;
    assert_eq!(
        listed["guests"],
        json!([{"email": "guest@example.com", "role": "viewer", "accepted": true}])
    );

    // A user with an account (on another site) is invited like anyone: the answer does not
    // tell the admin which e-mails have accounts here. They accept with their own password,
    // never by choosing one; then a role change for a member applies at once.
    let (status, member) = api
        .call(
            Method::PUT,
            &guests,
            invite("member@example.com", "editor"),
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    let (_, stranger) = api
        .call(
            Method::PUT,
            &guests,
            invite("nobody-yet@example.com", "editor"),
            &owner,
        )
        .await;
    let shape = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        (keys, v["accepted"].clone(), v["mail"].clone())
    };
    assert_eq!(shape(&member), shape(&stranger), "{member} vs {stranger}");
    assert_eq!(member["accepted"], false);
    let member_token = token_of(&member["invitation_url"]);
    secrets.push(member_token.clone());
    assert_eq!(
        api.accept(&member_token, "a new password to take it over", &api.base)
            .await
            .status(),
        401,
        "an invitation is no way into an existing account"
    );
    let accepted = api.accept(&member_token, PASSWORD, &api.base).await;
    assert_eq!(accepted.status(), 200);
    let member_cred = api.sign_in("member@example.com").await;
    assert_eq!(
        api.call(Method::GET, &guests, None, &member_cred).await.0,
        200
    );
    let (status, changed) = api
        .call(
            Method::PUT,
            &guests,
            invite("member@example.com", "viewer"),
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        changed,
        json!({"email": "member@example.com", "role": "viewer", "accepted": true})
    );
    assert_eq!(
        api.call(Method::GET, &guests, None, &member_cred).await.0,
        403,
        "a viewer now"
    );

    // Removed: the invitee's access ends with their next request.
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/sites/guests/guest@example.com?site_id={A}"),
            None,
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.call(Method::GET, &stats(A), None, &signed_in).await.0,
        403
    );
    let (_, sites) = api
        .call(Method::GET, "/api/v1/sites", None, &signed_in)
        .await;
    assert_eq!(sites["sites"], json!([]), "{sites}");

    // Expired and withdrawn invitations are refused like unknown ones.
    let (_, late) = api
        .call(
            Method::PUT,
            &guests,
            invite("late@example.com", "viewer"),
            &owner,
        )
        .await;
    let late = token_of(&late["invitation_url"]);
    assert_eq!(api.invitation(&late).await.0, 200);
    ch.client
        .query(
            "INSERT INTO glimpse.invitations SELECT token_hash, site, email, role, \
             toDateTime(now() - 60), accepted, deleted, version + 1, now() \
             FROM glimpse.invitations WHERE email = 'late@example.com'",
        )
        .execute()
        .await
        .unwrap();
    assert_eq!(api.invitation(&late).await.0, 404, "expired");
    assert_eq!(
        api.accept(&late, PASSWORD, &api.base).await.status(),
        404,
        "expired"
    );
    let (_, gone) = api
        .call(
            Method::PUT,
            &guests,
            invite("gone@example.com", "viewer"),
            &owner,
        )
        .await;
    let gone = token_of(&gone["invitation_url"]);
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/sites/guests/gone@example.com?site_id={A}"),
            None,
            &owner,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.invitation(&gone).await.0, 404, "withdrawn");
    secrets.extend([late, gone]);

    let (_, audit) = api
        .call(
            Method::GET,
            &format!("/api/v1/sites/audit?site_id={A}"),
            None,
            &owner,
        )
        .await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    for entry in [
        ("guest.invite", "owner@example.com"),
        ("invitation.accept", "guest@example.com"),
        ("guest.update", "owner@example.com"),
        ("guest.remove", "owner@example.com"),
    ] {
        assert!(actions.contains(&entry), "{entry:?} not in {actions:?}");
    }
    assert_no_secret_in_clear(&ch, logs, &secrets).await;

    // Guessing tokens spends the address's sign-in budget (20 a minute).
    let mut tries = 0;
    while api.invitation(&unknown).await.0 == 404 {
        tries += 1;
        assert!(tries <= 20, "never limited");
    }
    assert_eq!(api.invitation(&unknown).await.0, 429);
    let login = api
        .http
        .post(format!("{}/api/auth/login", api.base))
        .json(&json!({"email": "owner@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 429, "the same budget as sign-in");
    println!("token guesses limited after {tries} more tries");
}

/// No secret in clear: every table of the database as text, the system logs ClickHouse keeps,
/// the data directories and this process's log lines.
async fn assert_no_secret_in_clear(
    ch: &TestClickHouse,
    logs: &Arc<Mutex<Vec<u8>>>,
    secrets: &[String],
) {
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("administrative change"),
        "the logs were captured"
    );
    let searched = common::secrets::assert_absent(ch, &logs, secrets).await;
    assert!(
        searched.tables.contains(&"invitations".to_string()),
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

/// A real SMTP server that prints what it receives: Python's `smtpd` DebuggingServer
/// (Python 3.11; `GLIMPSE_TEST_PYTHON` or `python3`).
struct SmtpSink {
    port: u16,
    child: Child,
    received: Arc<Mutex<String>>,
}

impl SmtpSink {
    fn start() -> Self {
        let port = common::free_addr().port();
        let mut child = Command::new(common::test_python())
            .args([
                "-u",
                "-W",
                "ignore",
                "-m",
                "smtpd",
                "-n",
                "-c",
                "DebuggingServer",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting Python's smtpd (Python 3.11, as the README's test command installs)");
        let stdout = child.stdout.take().unwrap();
        let received = Arc::new(Mutex::new(String::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Lines come as Python bytes literals: b'...'.
                let line = line
                    .strip_prefix("b'")
                    .and_then(|l| l.strip_suffix('\''))
                    .unwrap_or(&line)
                    .to_string();
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("smtpd exited ({status}): is this Python 3.11 (smtpd was removed in 3.12)?");
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "smtpd never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            child,
            received,
        }
    }

    /// The mail holding `needle` once it arrived, quoted-printable decoded.
    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            let text = self.received.lock().unwrap().clone();
            // Soft line breaks joined, `=3D` back to `=`: what a mail client shows.
            let decoded = text.replace("=\n", "").replace("=3D", "=");
            if decoded.contains(needle) {
                return decoded;
            }
            assert!(started.elapsed() < timeout, "no mail with {needle}: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
