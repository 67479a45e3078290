//! Realtime and filtered traffic, who may read what, and injection attempts.

use glimpse_core::schema::EventRow;
use serde_json::{json, Value};

use crate::service::{config, Service};
use crate::{BERLIN, OTHER, SHARE_TOKEN, SITE, WEEK};

pub async fn realtime_and_filtered_traffic(s: &Service) {
    let now = jiff::Timestamp::now().as_second() as u32;
    let client = s.ch.client.clone().with_database("glimpse");
    let mut insert = client.insert::<EventRow>("events").await.unwrap();
    for (v, ago) in [(1u64, 30u32), (2, 90), (2, 100), (3, 200), (4, 900)] {
        insert
            .write(&EventRow {
                site: OTHER.into(),
                timestamp: now - ago,
                name: "pageview".into(),
                pathname: "/".into(),
                visitor_id: 9_000 + v,
                session_id: 9_000 + v,
                ..EventRow::default()
            })
            .await
            .unwrap();
    }
    insert.end().await.unwrap();
    let got = s
        .json_at(
            &s.base,
            &s.operator_key,
            "/api/v1/stats/realtime/visitors",
            &[("site_id", OTHER)],
        )
        .await;
    assert_eq!(got, json!(3), "visitors of the last 5 minutes");

    s.ch.client
        .query(
            "INSERT INTO glimpse.dropped_events (site, date, reason, count) VALUES \
             ('example.com', '2026-03-25', 'bot', 5), ('example.com', '2026-03-25', 'bot', 2), \
             ('example.com', '2026-03-26', 'opt_out', 4), ('example.com', '2026-04-02', 'bot', 100), \
             ('other.org', '2026-03-25', 'spam', 9)",
        )
        .execute()
        .await
        .unwrap();
    let mut q = vec![("site_id", SITE)];
    q.extend_from_slice(&WEEK);
    let got = s.json("/api/v1/stats/filtered", &q).await;
    assert_eq!(
        got,
        json!({"results": [{"reason": "bot", "count": 7}, {"reason": "opt_out", "count": 4}], "total": 11})
    );
    println!("realtime visitors 3; filtered traffic {got}");
}

pub async fn auth_errors(s: &Service) {
    let path = "/api/v1/stats/aggregate";
    let site = [("site_id", SITE)];
    let status = |r: (u16, String)| r.0;
    assert_eq!(
        status(s.get_with(&s.base, None, path, &site).await),
        401,
        "no key"
    );
    assert_eq!(
        status(s.get_with(&s.base, Some("glimpse_00"), path, &site).await),
        401,
        "wrong key"
    );
    assert_eq!(
        status(s.get_with(&s.base, Some("' OR 1=1 --"), path, &site).await),
        401,
        "junk key"
    );
    assert_eq!(
        status(s.get_with(&s.base, Some(&s.berlin_key), path, &site).await),
        403,
        "other site's key"
    );
    assert_eq!(
        status(
            s.get_with(&s.base, Some(&s.key), path, &[("site_id", "nope.example")])
                .await
        ),
        404,
        "unknown site"
    );
    assert_eq!(
        status(s.get_with(&s.base, Some(&s.key), path, &[]).await),
        400,
        "no site_id"
    );
    assert_eq!(
        status(
            s.get_with(&s.base, Some(&s.operator_key), path, &[("site_id", BERLIN)])
                .await
        ),
        200,
        "operator key"
    );
    // Share link: read-only access to its own site only.
    assert_eq!(
        status(
            s.get_with(
                &s.base,
                None,
                path,
                &[("site_id", SITE), ("auth", SHARE_TOKEN)]
            )
            .await
        ),
        200
    );
    assert_eq!(
        status(
            s.get_with(
                &s.base,
                None,
                path,
                &[("site_id", BERLIN), ("auth", SHARE_TOKEN)]
            )
            .await
        ),
        401
    );
    assert_eq!(
        status(
            s.get_with(
                &s.base,
                None,
                path,
                &[("site_id", SITE), ("auth", "share-me-0123456780")]
            )
            .await
        ),
        401
    );
    // A revoked key stops working at once.
    let cfg = config(s.ch, 0);
    let (key, id) = glimpse_query::auth::create_key(&s.ch.client, "glimpse", &cfg, SITE, "tmp")
        .await
        .unwrap();
    assert_eq!(
        status(s.get_with(&s.base, Some(&key), path, &site).await),
        200
    );
    assert_eq!(
        glimpse_query::auth::revoke_key(&s.ch.client, "glimpse", &id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        status(s.get_with(&s.base, Some(&key), path, &site).await),
        401,
        "revoked"
    );
    let listed = glimpse_query::auth::list_keys(&s.ch.client, "glimpse")
        .await
        .unwrap();
    assert!(listed.iter().any(|k| k.key_id == id && k.revoked == 1));
    assert!(
        glimpse_query::auth::create_key(&s.ch.client, "glimpse", &cfg, "nope.example", "x")
            .await
            .is_err()
    );
    // Keys are stored hashed only.
    let stored: Vec<String> =
        s.ch.client
            .query("SELECT key_hash FROM glimpse.api_keys")
            .fetch_all()
            .await
            .unwrap();
    assert!(!stored
        .iter()
        .any(|h| h == &s.key || h.starts_with("glimpse_")));
    println!("auth: 401 missing/wrong/revoked, 403 other site, 404 unknown site, share link ok");
}

pub async fn injection_attempts(s: &Service) {
    let tables = "SELECT toUInt64(count()) FROM system.tables WHERE database = 'glimpse'";
    let before = (
        s.ch.count("SELECT count() FROM glimpse.events").await,
        s.ch.count(tables).await,
    );
    let attacks = [
        "' OR '1'='1",
        "x'); DROP TABLE glimpse.events; --",
        "1; DROP TABLE glimpse.events",
        "\\' UNION SELECT * FROM system.tables --",
        "`events`",
        "') OR 1=1 OR ('",
        "?",
        "%27%20OR%201%3D1",
        "\0",
        "event:page==x') OR 1=1 --",
        "visit:source~'; DROP DATABASE glimpse; --",
    ];
    let endpoints = [
        "/api/v1/stats/aggregate",
        "/api/v1/stats/timeseries",
        "/api/v1/stats/breakdown",
    ];
    let params = [
        "site_id",
        "period",
        "date",
        "interval",
        "metrics",
        "property",
        "filters",
        "compare",
        "comparison",
        "compare_from",
        "compare_to",
        "limit",
        "page",
        "sort",
        "format",
    ];
    let mut tried = 0;
    for endpoint in endpoints {
        for param in params {
            for attack in attacks {
                let mut q: Vec<(&str, String)> = vec![
                    ("site_id", SITE.into()),
                    ("period", "custom".into()),
                    ("date", "2026-03-24,2026-03-31".into()),
                ];
                if endpoint.ends_with("breakdown") {
                    q.push(("property", "event:page".into()));
                }
                // The custom comparison's dates are read only with comparison=custom.
                if param.starts_with("compare_") {
                    q.push(("comparison", "custom".into()));
                    q.push(("compare_from", "2026-03-01".into()));
                    q.push(("compare_to", "2026-03-07".into()));
                }
                q.retain(|(k, _)| *k != param);
                q.push((param, attack.to_string()));
                // Attacks inside otherwise valid filters and property names, too.
                let variants: Vec<Vec<(&str, String)>> = if param == "filters" {
                    vec![
                        q.clone(),
                        replace(&q, "filters", format!("event:page=={attack}")),
                        replace(&q, "filters", format!("visit:source~{attack}")),
                        replace(&q, "filters", format!("event:props:{attack}!={attack}")),
                    ]
                } else if param == "property" {
                    vec![
                        q.clone(),
                        replace(&q, "property", format!("event:props:{attack}")),
                    ]
                } else {
                    vec![q]
                };
                for q in variants {
                    let pairs: Vec<(&str, &str)> =
                        q.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let (status, body) = s.get_with(&s.base, Some(&s.key), endpoint, &pairs).await;
                    tried += 1;
                    match status {
                        400 => {
                            let v: Value = serde_json::from_str(&body).unwrap();
                            assert!(v["error"].is_string(), "{body}");
                        }
                        200 => assert_no_data(endpoint, &pairs, &body),
                        404 if param == "site_id" => {}
                        other => panic!("{endpoint} {pairs:?}: status {other}: {body}"),
                    }
                }
            }
        }
    }
    let after = (
        s.ch.count("SELECT count() FROM glimpse.events").await,
        s.ch.count(tables).await,
    );
    assert_eq!(before, after, "the database changed");
    println!(
        "injection: {tried} requests, each 400 or an empty answer; database unchanged {after:?}"
    );
}

pub fn replace(
    q: &[(&'static str, String)],
    key: &'static str,
    value: String,
) -> Vec<(&'static str, String)> {
    q.iter()
        .map(|(k, v)| {
            if *k == key {
                (*k, value.clone())
            } else {
                (*k, v.clone())
            }
        })
        .collect()
}

/// A 200 to an attack must not carry data the attack selected: breakdown rows only with the
/// attack text as their value (a custom property named so), timeseries/aggregate numbers only
/// when no parameter other than a harmless one changed.
pub fn assert_no_data(endpoint: &str, pairs: &[(&str, &str)], body: &str) {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{endpoint} {pairs:?}: {body}"));
    let filters = pairs.iter().find(|(k, _)| *k == "filters").map(|(_, v)| *v);
    let property = pairs
        .iter()
        .find(|(k, _)| *k == "property")
        .map(|(_, v)| *v);
    if let Some(f) = filters.filter(|f| !f.trim().is_empty()) {
        // A filter on a value that does not exist selects nothing (a `!=` filter selects all).
        if !f.contains("!=") {
            let results = &v["results"];
            let zero = match results {
                Value::Array(rows) => rows.iter().all(|r| r["visitors"] == 0),
                Value::Object(m) => m.values().all(|m| m["value"] == 0),
                _ => false,
            };
            assert!(zero, "{endpoint} {pairs:?}: {body}");
        }
    }
    if let Some(p) = property.filter(|p| p.starts_with("event:props:")) {
        for row in v["results"].as_array().unwrap() {
            let name = &p["event:props:".len()..];
            assert_eq!(row[name], "(none)", "{pairs:?}: {body}");
        }
    }
}
