//! The dashboard's admin side end to end: a real ClickHouse, the collector and the query
//! service in-process, and real headless Chromium driven by `tracker-js/e2e/admin.mjs`. The
//! first owner signs in, adds a site, copies its tracker snippet onto a page that then sends
//! events to the collector until the settings page says they arrived, adds a goal, creates a
//! share link that opens without signing in, invites a viewer, creates a key, sees the audit
//! log, sees a configured site read-only, and changes their password. Each step is checked
//! against the service. Screenshots: `target/admin-ui-screenshots/`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::browser::{require_browser, run_driver};
use common::TestClickHouse;
use glimpse_core::Config;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const OWNER: &str = "owner@example.com";
const PASSWORD: &str = "owner-password-1";
const NEW_PASSWORD: &str = "owner-password-2";
/// The site added in the browser; the test page is served at this name (mapped to 127.0.0.1).
const NEW_SITE: &str = "shop.test";
/// `ch.config()`'s site, from the configuration: read-only in the dashboard.
const CONFIGURED_SITE: &str = "example.com";
const INVITEE: &str = "viewer@example.com";
const INVITEE_PASSWORD: &str = "viewer-password-1";

struct Service {
    _ch: TestClickHouse,
    base: String,
    http: reqwest::Client,
    key: String,
    collector: String,
    stop: CancellationToken,
}

/// ClickHouse, the collector and the query service; `configured`: whether `CONFIGURED_SITE` is
/// in the configuration (else the Glimpse starts without sites).
async fn start(configured: bool) -> Service {
    let ch = TestClickHouse::start().await;
    glimpse_core::schema::migrate(&ch.client, "glimpse")
        .await
        .expect("migrate");
    let collector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config: Config = ch.config();
    if !configured {
        config.sites.clear();
    }
    // The snippet points at the collector's port on the dashboard's host.
    config.collector.collector_addr = collector.local_addr().unwrap();
    // The browser polls and reloads from one address on purpose.
    config.query.query_rate_limit_per_ip = 0;
    let stop = CancellationToken::new();
    tokio::spawn(glimpse_collector::serve(
        config.clone(),
        collector,
        stop.clone().cancelled_owned(),
    ));
    glimpse_query::accounts::store::add_user(
        &ch.client,
        "glimpse",
        &config,
        OWNER,
        PASSWORD,
        glimpse_query::accounts::store::NewRole::Owner,
        &[],
    )
    .await
    .unwrap();
    // The test's own view of the service: a key that reads and administers every site.
    let (key, _) = glimpse_query::auth::create_scoped_key(
        &ch.client,
        "glimpse",
        &config,
        "*",
        "admin",
        glimpse_query::accounts::KeyScope::Sites,
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(glimpse_query::serve(
        config.clone(),
        listener,
        stop.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::new();
    common::wait_for_200(&http, &format!("{base}/ready"), Duration::from_secs(30)).await;
    let collector = format!("http://{}", config.collector.collector_addr);
    common::wait_for_200(
        &http,
        &format!("{collector}/ready"),
        Duration::from_secs(30),
    )
    .await;
    Service {
        _ch: ch,
        base,
        http,
        key,
        collector,
        stop,
    }
}

impl Service {
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).unwrap();
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get_anonymously(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).unwrap();
        let response = self.http.get(url).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn login(&self, email: &str, password: &str) -> u16 {
        self.http
            .post(format!("{}/api/auth/login", self.base))
            .header("Origin", &self.base)
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Console errors other than the expected ones: `/api/auth/me` answering 401 before sign-in,
/// the 400 of adding a taken domain, and (until the guests and keys endpoints exist) their
/// 404s.
fn unexpected_errors(facts: &Value, guests_exist: bool) -> Vec<String> {
    facts["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .filter(|e| !(e.contains("401") && e.ends_with("/api/auth/me")))
        .filter(|e| !(e.contains("400") && e.ends_with("/api/v1/sites")))
        .filter(|e| {
            guests_exist
                || !(e.contains("404")
                    && [
                        "/api/v1/sites/guests",
                        "/api/v1/sites/keys",
                        "/api/auth/invitation",
                    ]
                    .iter()
                    .any(|path| e.contains(path)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_runs_glimpse_from_the_dashboard_in_real_chromium() {
    require_browser(&[]);
    let s = start(true).await;
    // Whether this build has the members and keys endpoints (another branch adds them): 404
    // for an unknown route here is the `/api/v1/sites/{site_id}` route not finding a site.
    let (guests_status, _) = s
        .get("/api/v1/sites/guests", &[("site_id", CONFIGURED_SITE)])
        .await;
    let guests_exist = guests_status != 404;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/admin-ui-screenshots");
    let shots_text = shots.to_string_lossy();
    let env = [
        ("BASE", s.base.as_str()),
        ("EMAIL", OWNER),
        ("PASSWORD", PASSWORD),
        ("NEW_PASSWORD", NEW_PASSWORD),
        ("SITE", NEW_SITE),
        ("CONFIGURED_SITE", CONFIGURED_SITE),
        ("INVITEE", INVITEE),
        ("INVITEE_PASSWORD", INVITEE_PASSWORD),
        ("SHOTS", shots_text.as_ref()),
    ];
    let facts = run_driver("admin.mjs", &env, Duration::from_secs(200)).await;
    println!("admin facts: {facts}");
    assert_eq!(
        unexpected_errors(&facts, guests_exist),
        Vec::<String>::new(),
        "console or page errors"
    );

    // The owner sees Add site; the form preselects the browser's zone among all of them.
    assert!(
        facts["nav_before"]
            .as_array()
            .unwrap()
            .contains(&json!("Add site")),
        "{}",
        facts["nav_before"]
    );
    assert_eq!(facts["zone_preselected"], "Europe/Berlin");
    assert!(facts["zone_count"].as_u64().unwrap() > 300);
    // The site exists with that zone, and the page moved to its settings.
    let (status, site) = s.get(&format!("/api/v1/sites/{NEW_SITE}"), &[]).await;
    assert_eq!(status, 200, "{site}");
    // Created in the browser's zone (the audit log says), then changed to Tokyo.
    assert_eq!(site["timezone"], "Asia/Tokyo");
    assert_eq!(
        facts["timezone_saved"],
        format!("Saved: {NEW_SITE}, Asia/Tokyo")
    );
    assert_eq!(site["managed_in"], "registry");
    assert_eq!(facts["settings_title"], format!("Settings for {NEW_SITE}"));
    assert!(facts["url_after_add"]
        .as_str()
        .unwrap()
        .ends_with(&format!("?site={NEW_SITE}#settings")));
    assert_eq!(facts["site_options"], json!([CONFIGURED_SITE, NEW_SITE]));

    // The snippet: the in-process collector's script, copied to the clipboard as shown; the
    // variants are the tracker's.
    let snippet = format!(
        "<script defer data-domain=\"{NEW_SITE}\" src=\"{}/js/script.js\"></script>",
        s.collector
    );
    assert_eq!(facts["snippet_shown"], snippet);
    assert_eq!(facts["copy_ok"], "true");
    assert_eq!(facts["clipboard"], snippet);
    assert_eq!(
        facts["variants"].as_array().unwrap().len(),
        glimpse_core::tracker::VARIANT_NAMES.len()
    );
    // Waiting, then green once the page with the snippet had been visited; the stats agree.
    assert_eq!(facts["received_before"], "false");
    assert_eq!(
        facts["received_text_before"],
        "Waiting for the first event…"
    );
    assert!(
        facts["received_text"]
            .as_str()
            .unwrap()
            .starts_with("Received ✓"),
        "{}",
        facts["received_text"]
    );
    assert_eq!(facts["received_after_reload"], true);
    let (status, today) = s
        .get(
            "/api/v1/stats/aggregate",
            &[
                ("site_id", NEW_SITE),
                ("period", "day"),
                ("metrics", "visitors,pageviews"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{today}");
    assert!(
        today["results"]["pageviews"]["value"].as_u64().unwrap() >= 1,
        "{today}"
    );
    assert_eq!(
        facts["stats_visitors"],
        today["results"]["visitors"]["value"].to_string()
    );

    // The goal and the share link are the service's.
    let (_, goals) = s.get("/api/v1/sites/goals", &[("site_id", NEW_SITE)]).await;
    assert_eq!(goals["goals"].as_array().unwrap().len(), 1, "{goals}");
    assert_eq!(goals["goals"][0]["event_name"], "Signup", "{goals}");
    assert_eq!(facts["goals"].as_array().unwrap().len(), 1);
    assert_eq!(facts["goals_with_page"].as_array().unwrap().len(), 1);
    let (_, links) = s
        .get("/api/v1/sites/shared-links", &[("site_id", NEW_SITE)])
        .await;
    assert_eq!(
        links["shared_links"].as_array().unwrap().len(),
        1,
        "{links}"
    );
    assert_eq!(links["shared_links"][0]["name"], "Public");
    assert_eq!(facts["links"], json!(["Public"]));
    // The revoked link opens nothing.
    let revoked = reqwest::Url::parse(facts["revoked_url"].as_str().unwrap()).unwrap();
    let token = revoked
        .query_pairs()
        .find(|(k, _)| k == "auth")
        .unwrap()
        .1
        .to_string();
    let (status, _) = s
        .get_anonymously(
            "/api/v1/stats/aggregate",
            &[("site_id", NEW_SITE), ("auth", &token)],
        )
        .await;
    assert_eq!(status, 401, "a revoked link still reads the stats");
    let share = facts["share_url"].as_str().unwrap();
    assert!(
        share.starts_with(&format!("{}/?site={NEW_SITE}&auth=", s.base)),
        "{share}"
    );
    // Opened in a fresh context: the site's stats, that site only, no cookie, no admin links.
    assert_eq!(facts["share_visitors"], facts["stats_visitors"]);
    assert_eq!(facts["share_sites"], json!([NEW_SITE]));
    assert_eq!(facts["share_nav"], json!([]));
    assert_eq!(facts["share_cookies"], 0);

    // Every change is in the audit log, as the page shows it.
    let audit = facts["audit"].to_string();
    for action in [
        "site.createtimezone Europe/Berlin",
        "site.updatetimezone Asia/Tokyo",
        "goal.createSignup",
        "goal.deleteVisit /pricing",
        "link.createPublic",
        "link.revokeTemporary",
    ] {
        assert!(audit.contains(action), "{action} not in {audit}");
    }
    assert_eq!(
        facts["delete_section"], true,
        "the owner may delete the site"
    );

    // A configured site: read-only, said so.
    assert!(facts["configured_note"]
        .as_str()
        .unwrap()
        .starts_with("Managed in configuration"));
    assert_eq!(facts["configured_zone_disabled"], true);
    assert_eq!(facts["configured_forms"], 0);

    // A taken domain is refused in the form; a site renamed in its settings goes by its new
    // name (title, snippet) and says what it was; it is deleted only with that name typed.
    assert_eq!(
        facts["add_taken_error"],
        "invalid parameter `domain`: domain has already been taken (HTTP 400)"
    );
    assert_eq!(
        facts["renamed_title"],
        format!("Settings for renamed.{NEW_SITE}")
    );
    assert!(facts["renamed_snippet"]
        .as_str()
        .unwrap()
        .contains(&format!("data-domain=\"renamed.{NEW_SITE}\"")));
    assert_eq!(
        facts["renamed_hint"],
        json!([format!(
            "Renamed from doomed.{NEW_SITE}, which is still accepted."
        )])
    );
    assert_eq!(
        facts["delete_unconfirmed_error"],
        format!("type renamed.{NEW_SITE} to confirm")
    );
    assert_eq!(
        facts["sites_after_delete"],
        json!([CONFIGURED_SITE, NEW_SITE])
    );
    for name in ["doomed", "renamed"] {
        let (status, _) = s
            .get(&format!("/api/v1/sites/{name}.{NEW_SITE}"), &[])
            .await;
        assert_eq!(status, 404, "the deleted site is gone by both names");
    }

    // Phone width: nothing wider than the screen.
    for page in [
        "settings_phone_overflow",
        "account_phone_overflow",
        "invitation_phone_overflow",
    ] {
        assert!(
            facts[page].as_i64().unwrap() <= 0,
            "{page}: {}",
            facts[page]
        );
    }

    // The password changed: the new one signs in, the old one no longer.
    assert_eq!(facts["account_email"], OWNER);
    assert_eq!(facts["password_error"], "");
    assert!(facts["password_changed"]
        .as_str()
        .unwrap()
        .starts_with("Password changed"));
    assert_eq!(s.login(OWNER, NEW_PASSWORD).await, 200);
    assert_eq!(s.login(OWNER, PASSWORD).await, 401);
    assert_eq!(facts["signed_out_everywhere_cookies"], 0);
    assert!(!facts["signed_out_everywhere_url"]
        .as_str()
        .unwrap()
        .contains('#'));

    if guests_exist {
        // Invited as a viewer: the link was shown, the invitee set a password, is signed in,
        // sees that site only, and no settings.
        assert_eq!(facts["invite_error"], "");
        assert!(facts["invitation_url"]
            .as_str()
            .unwrap()
            .contains("?invitation="));
        assert_eq!(
            facts["invitation_title"],
            format!("You are invited to {NEW_SITE} as viewer")
        );
        assert_eq!(facts["invitee_who"], INVITEE);
        assert_eq!(facts["invitee_sites"], json!([NEW_SITE]));
        assert_eq!(facts["invitee_settings_link_hidden"], true);
        assert_eq!(
            facts["members_after_remove"],
            json!([INVITEE]),
            "the one invited by mistake was removed"
        );
        // The key was shown once, listed, and revoked: it reads nothing now.
        assert_eq!(facts["key_error"], "");
        let new_key = facts["new_key"].as_str().unwrap();
        assert!(new_key.starts_with("glimpse_"));
        assert_eq!(facts["keys_after"].as_array().unwrap().len(), 1);
        assert!(facts["keys_after"][0]
            .as_str()
            .unwrap()
            .starts_with("CI exportstats"));
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/stats/aggregate", s.base),
            &[("site_id", NEW_SITE)],
        )
        .unwrap();
        let revoked = s.http.get(url).bearer_auth(new_key).send().await.unwrap();
        assert_eq!(revoked.status(), 401, "a revoked key still reads");
        assert_eq!(s.login(INVITEE, INVITEE_PASSWORD).await, 200);
    } else {
        // Until the endpoints exist, the page says so where they are used, never silently.
        println!("NOT EXERCISED: members, invitations and keys (no /api/v1/sites/guests yet)");
        for fact in ["invite_error", "key_error"] {
            assert!(
                facts[fact].as_str().unwrap().contains("(HTTP 404)"),
                "{fact}: {}",
                facts[fact]
            );
        }
        assert!(facts["members_before"]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 404"));
        assert_eq!(facts["invitation_title"], "This invitation cannot be used");
        assert!(facts["invitation_page_error"]
            .as_str()
            .unwrap()
            .contains("HTTP 404"));
    }
    println!("screenshots: {}", shots.display());
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_glimpse_opens_add_site_for_its_owner() {
    require_browser(&[]);
    let s = start(false).await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/admin-ui-screenshots");
    let shots_text = shots.to_string_lossy();
    let env = [
        ("FIRST_RUN", "1"),
        ("BASE", s.base.as_str()),
        ("EMAIL", OWNER),
        ("PASSWORD", PASSWORD),
        ("NEW_PASSWORD", NEW_PASSWORD),
        ("SITE", NEW_SITE),
        ("CONFIGURED_SITE", CONFIGURED_SITE),
        ("INVITEE", INVITEE),
        ("INVITEE_PASSWORD", INVITEE_PASSWORD),
        ("SHOTS", shots_text.as_ref()),
    ];
    let facts = run_driver("admin.mjs", &env, Duration::from_secs(120)).await;
    println!("first-run facts: {facts}");
    assert_eq!(unexpected_errors(&facts, true), Vec::<String>::new());
    assert!(
        facts["first_run_url"]
            .as_str()
            .unwrap()
            .ends_with("/#add-site"),
        "{}",
        facts["first_run_url"]
    );
    assert_eq!(
        facts["first_run_focus"], "Add a site",
        "the heading has the focus"
    );
    assert_eq!(
        facts["first_run_nav"],
        json!(["Account"]),
        "no stats or settings yet"
    );
    s.stop.cancel();
}
