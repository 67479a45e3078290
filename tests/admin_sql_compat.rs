//! Proves that every statement the administration code sends — the site registry, accounts
//! and sessions, members and invitations, keys and their scopes, the audit log — runs on ClickHouse 18.16 and on
//! current ClickHouse (26.x, chdb): a collector and a query service run against a real 18.16
//! through a recording proxy while a site's life is driven over HTTP (sign-in, Sites API,
//! guests and an accepted invitation, keys, password change, sign-out, deletion), then exactly the statements they sent to those
//! tables are replayed, in order, on chdb by `tests/chdb/queries.py`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{browser_client, sql_recorder, wait_for_200, TestClickHouse};
use glimpse_core::schema::{migration_statements, Flavor};
use glimpse_query::accounts::store::{self, NewRole};
use glimpse_query::accounts::{KeyScope, Role};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The administration tables: statements touching any of them are replayed.
const ADMIN_TABLES: &[&str] = &[
    "site_registry",
    "site_domains",
    "site_goals",
    "shared_links",
    "users",
    "site_members",
    "sessions",
    "api_keys",
    "api_key_scopes",
    "audit_log",
    "invitations",
];

const SITE: &str = "shop.example";
const PASSWORD: &str = "correct horse battery";

/// The statement without the output format the `clickhouse` crate appends (chdb's runner
/// asks for JSON).
fn without_format(statement: &str) -> String {
    let trimmed = statement.trim_end();
    match trimmed.rfind(" FORMAT ") {
        Some(at) if !trimmed[at + 8..].contains(' ') => trimmed[..at].to_string(),
        _ => trimmed.to_string(),
    }
}

fn is_admin_statement(statement: &str) -> bool {
    let upper = statement.trim_start().to_ascii_uppercase();
    // The DDL is replayed as the schema; the inserts of events are not administration.
    !upper.starts_with("CREATE")
        && ADMIN_TABLES.iter().any(|t| {
            statement.contains(&format!("glimpse.{t} "))
                || statement.contains(&format!("glimpse.{t}\n"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_administration_statement_runs_on_18_16_and_on_current_clickhouse() {
    let ch = TestClickHouse::start().await;
    let (proxy, recorded) = sql_recorder::start(ch.server.url()).await;
    let mut config = ch.config();
    config.clickhouse_url = Some(proxy.clone());
    config.query.query_rate_limit_per_ip = 0;
    let stop = CancellationToken::new();

    let collector_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = collector_listener.local_addr().unwrap();
    tokio::spawn(glimpse_collector::serve(
        config.clone(),
        collector_listener,
        stop.clone().cancelled_owned(),
    ));
    wait_for_200(
        &browser_client(),
        &format!("http://{collector}/ready"),
        Duration::from_secs(30),
    )
    .await;
    let query_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", query_listener.local_addr().unwrap());
    tokio::spawn(glimpse_query::serve(
        config.clone(),
        query_listener,
        stop.clone().cancelled_owned(),
    ));
    wait_for_200(
        &reqwest::Client::new(),
        &format!("{base}/ready"),
        Duration::from_secs(30),
    )
    .await;

    // Through the proxy: the CLI's functions and the HTTP endpoints.
    let client = ch.client.clone().with_url(&proxy);
    common::accounts::add_user(
        &client,
        &config,
        "owner@example.com",
        PASSWORD,
        NewRole::Owner,
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    let login = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "owner@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{base}{path}"))
            .header("cookie", &cookie)
            .header("origin", &base);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let ok = |(status, body): (u16, Value)| {
        assert_eq!(status, 200, "{body}");
        body
    };
    ok(call(
        reqwest::Method::POST,
        "/api/v1/sites",
        Some(json!({"domain": SITE})),
    )
    .await);
    ok(call(
        reqwest::Method::PUT,
        &format!("/api/v1/sites/{SITE}"),
        Some(json!({"timezone": "Europe/Berlin"})),
    )
    .await);
    // Renamed (the site keeps its id, which the calls below use).
    ok(call(
        reqwest::Method::PUT,
        &format!("/api/v1/sites/{SITE}"),
        Some(json!({"domain": "renamed.example"})),
    )
    .await);
    ok(call(
        reqwest::Method::PUT,
        "/api/v1/sites/goals",
        Some(json!({"site_id": SITE, "goal_type": "page", "page_path": "/pricing"})),
    )
    .await);
    let goals = ok(call(
        reqwest::Method::GET,
        &format!("/api/v1/sites/goals?site_id={SITE}"),
        None,
    )
    .await);
    let goal_id = goals["goals"][0]["id"].as_str().unwrap().to_string();
    ok(call(
        reqwest::Method::DELETE,
        &format!("/api/v1/sites/goals/{goal_id}"),
        Some(json!({"site_id": SITE})),
    )
    .await);
    ok(call(
        reqwest::Method::PUT,
        "/api/v1/sites/shared-links",
        Some(json!({"site_id": SITE, "name": "press"})),
    )
    .await);
    ok(call(
        reqwest::Method::GET,
        &format!("/api/v1/sites/shared-links?site_id={SITE}"),
        None,
    )
    .await);
    ok(call(
        reqwest::Method::DELETE,
        "/api/v1/sites/shared-links/press",
        Some(json!({"site_id": SITE})),
    )
    .await);
    common::accounts::add_user(
        &client,
        &config,
        "viewer@example.com",
        PASSWORD,
        NewRole::Site(Role::Viewer),
        &[SITE],
    )
    .await;
    store::list_users(&client, "glimpse").await.unwrap();
    let (key, key_id) = glimpse_query::auth::create_scoped_key(
        &client,
        "glimpse",
        &config,
        SITE,
        "t",
        KeyScope::Sites,
    )
    .await
    .unwrap();
    let stats = http
        .get(format!(
            "{base}/api/v1/stats/aggregate?site_id={SITE}&period=day"
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    glimpse_query::auth::list_keys(&client, "glimpse")
        .await
        .unwrap();
    glimpse_query::auth::revoke_key(&client, "glimpse", &key_id)
        .await
        .unwrap();
    // Members, invitations and the site's keys.
    let invited = ok(call(
        reqwest::Method::PUT,
        "/api/v1/sites/guests",
        Some(json!({"site_id": SITE, "email": "new@example.com", "role": "viewer"})),
    )
    .await);
    let token = invited["invitation_url"]
        .as_str()
        .unwrap()
        .rsplit("invitation=")
        .next()
        .unwrap()
        .to_string();
    ok(call(
        reqwest::Method::GET,
        &format!("/api/auth/invitation?token={token}"),
        None,
    )
    .await);
    let accepted = http
        .post(format!("{base}/api/auth/accept-invitation"))
        .header("origin", &base)
        .json(&json!({"token": token, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    ok(call(
        reqwest::Method::GET,
        &format!("/api/v1/sites/guests?site_id={SITE}"),
        None,
    )
    .await);
    ok(call(
        reqwest::Method::DELETE,
        &format!("/api/v1/sites/guests/new@example.com?site_id={SITE}"),
        None,
    )
    .await);
    let created = ok(call(
        reqwest::Method::PUT,
        "/api/v1/sites/keys",
        Some(json!({"site_id": SITE, "name": "ci", "scope": "stats"})),
    )
    .await);
    ok(call(
        reqwest::Method::GET,
        &format!("/api/v1/sites/keys?site_id={SITE}"),
        None,
    )
    .await);
    let revoke = format!(
        "/api/v1/sites/keys/{}?site_id={SITE}",
        created["key_id"].as_str().unwrap()
    );
    ok(call(reqwest::Method::DELETE, &revoke, None).await);
    ok(call(
        reqwest::Method::GET,
        &format!("/api/v1/sites/audit?site_id={SITE}"),
        None,
    )
    .await);
    ok(call(reqwest::Method::GET, "/api/auth/me", None).await);
    ok(call(
        reqwest::Method::POST,
        "/api/auth/password",
        Some(json!({"current_password": PASSWORD, "new_password": "another good password"})),
    )
    .await);
    store::reset_password(&client, "glimpse", "viewer@example.com", "a third good one")
        .await
        .unwrap();
    store::remove_user(&client, "glimpse", "viewer@example.com")
        .await
        .unwrap();
    ok(call(
        reqwest::Method::DELETE,
        &format!("/api/v1/sites/{SITE}"),
        None,
    )
    .await);
    glimpse_core::registry::Registry::new(client.clone(), "glimpse")
        .erase_late_rows_of_deleted_sites(&glimpse_core::site::Sites::new(&config.sites))
        .await
        .unwrap();
    ok(call(reqwest::Method::POST, "/api/auth/logout-everywhere", None).await);
    // The collectors' registry refresh ran meanwhile (every 5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.cancel();

    let statements: Vec<String> = recorded
        .statements()
        .iter()
        .filter(|s| is_admin_statement(s))
        .map(|s| without_format(s))
        .collect();
    for table in ADMIN_TABLES {
        assert!(
            statements
                .iter()
                .any(|s| s.contains(&format!("glimpse.{table}"))),
            "no statement on {table} was recorded"
        );
    }
    println!(
        "{} administration statements ran on 18.16",
        statements.len()
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("schema.json"),
        serde_json::to_vec(&migration_statements(Flavor::Modern, "glimpse")).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("statements.json"),
        serde_json::to_vec(&statements).unwrap(),
    )
    .unwrap();
    let python = common::test_python();
    let output = Command::new(&python)
        .current_dir(root)
        .arg(root.join("tests/chdb/queries.py"))
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        output.status.success(),
        "chdb rejected a statement (a Python without chdb exits 3: run scripts/test.sh):\n{stderr}"
    );
}

#[test]
fn the_output_format_is_stripped_and_only_administration_is_kept() {
    assert_eq!(
        without_format("SELECT 1 FROM glimpse.users FORMAT RowBinary"),
        "SELECT 1 FROM glimpse.users"
    );
    assert_eq!(
        without_format("SELECT 'a FORMAT b c'"),
        "SELECT 'a FORMAT b c'"
    );
    assert!(is_admin_statement(
        "SELECT x FROM glimpse.users WHERE a = 1"
    ));
    assert!(!is_admin_statement(
        "CREATE TABLE IF NOT EXISTS glimpse.users (a UInt8)"
    ));
    assert!(!is_admin_statement(
        "INSERT INTO glimpse.events FORMAT RowBinary"
    ));
}
