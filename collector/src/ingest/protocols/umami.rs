//! Umami's protocol: `POST /api/send` with `{"type": "event", "payload": {...}}`, as Umami's
//! tracker (v2 and v3) sends it.
//!
//! | Umami | Glimpse |
//! | --- | --- |
//! | `payload.website` (UUID) | the site, through `umami_websites` |
//! | `payload.url` | page URL: v3 sends the full `href`; a path (v2, API clients) is joined to `payload.hostname` |
//! | `payload.referrer` | referrer (`""`: none) |
//! | `payload.screen` `"WxH"` | screen width `W` |
//! | `payload.name` | a custom event of that name; absent or empty: a `pageview` |
//! | `payload.data` | custom properties; nested objects become `a.b` keys, arrays JSON text |
//!
//! Not used: `title` (Glimpse stores no page titles), `language`, `tag`. Never believed:
//! `ip` and `userAgent` (Umami lets server-side senders set them; here the connection decides).
//! `type: "identify"` and the `id` it sets on later events are a distinct id that would link a
//! visitor's events across visits and days, which is exactly what Glimpse does not do: they are
//! answered and dropped, never stored. `type: "performance"` (web vitals) is not stored either.

use serde_json::{Map, Value};

use super::{Draft, MapError, Mapped, SiteIds};
use crate::ingest::beacon::BeaconLimits;

/// Maps one `/api/send` body.
pub fn map(body: &[u8], websites: &SiteIds, limits: &BeaconLimits) -> Result<Mapped, MapError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| MapError::invalid("body", format!("body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(MapError::invalid("body", "body must be a JSON object"));
    };
    match obj.get("type").and_then(Value::as_str).unwrap_or("event") {
        "event" => {}
        "identify" => return Ok(Mapped::Ignored("identify")),
        "performance" => return Ok(Mapped::Ignored("performance")),
        _ => return Err(MapError::invalid("type", "type must be event or identify")),
    }
    let Some(Value::Object(payload)) = obj.get("payload") else {
        return Err(MapError::invalid(
            "payload",
            "payload must be a JSON object",
        ));
    };
    let website = string(payload, "website")
        .ok_or_else(|| MapError::invalid("payload.website", "field is required"))?;
    let domain = websites
        .get(&website.trim().to_ascii_lowercase())
        .ok_or_else(|| MapError::UnknownSite(website.to_string()))?;

    let url = string(payload, "url")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| MapError::invalid("payload.url", "field is required"))?;
    let url = if super::page_url(url).is_some() {
        url.to_string()
    } else {
        let hostname = string(payload, "hostname")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                MapError::invalid("payload.hostname", "required when payload.url is a path")
            })?;
        let path = if url.starts_with('/') { "" } else { "/" };
        format!("https://{hostname}{path}{url}")
    };
    let name = string(payload, "name").unwrap_or_default();
    let mut props = Vec::new();
    match payload.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(data)) => flatten("", data, &mut props),
        Some(_) => {
            return Err(MapError::invalid(
                "payload.data",
                "data must be a JSON object",
            ))
        }
    }
    let draft = Draft {
        name: if name.is_empty() { "pageview" } else { name }.to_string(),
        url,
        domain: domain.clone(),
        referrer: string(payload, "referrer").map(str::to_string),
        screen_width: string(payload, "screen").and_then(super::screen_width),
        props,
    };
    let beacon = draft.finish(
        limits,
        [
            "payload.name",
            "payload.url",
            "payload.referrer",
            "payload.data",
        ],
    )?;
    Ok(Mapped::Event(beacon))
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// Umami's event data may nest; Glimpse's properties are flat strings.
fn flatten(prefix: &str, data: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (key, value) in data {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Null => {}
            Value::String(s) => out.push((key, s.clone())),
            Value::Bool(b) => out.push((key, b.to_string())),
            Value::Number(n) => out.push((key, n.to_string())),
            Value::Array(_) => out.push((key, value.to_string())),
            Value::Object(inner) => flatten(&key, inner, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Beacon;

    const WEBSITE: &str = "3f1c1a4e-7d2b-4c55-9a0e-2b7f5c8d9e01";

    fn websites() -> SiteIds {
        [(WEBSITE.to_string(), "example.com".to_string())].into()
    }

    fn event(body: &str) -> Beacon {
        match map(body.as_bytes(), &websites(), &BeaconLimits::default()).unwrap() {
            Mapped::Event(b) => b,
            other => panic!("{other:?}"),
        }
    }

    fn error(body: &str) -> MapError {
        map(body.as_bytes(), &websites(), &BeaconLimits::default()).unwrap_err()
    }

    /// What Umami 3.1's tracker sends for a page load, from Chromium.
    #[test]
    fn v3_pageview() {
        let b = event(
            r#"{"type":"event","payload":{"website":"3f1c1a4e-7d2b-4c55-9a0e-2b7f5c8d9e01",
            "screen":"1366x900","language":"en-US","title":"Pricing – Example",
            "hostname":"www.example.com","url":"https://www.example.com/pricing?utm_source=news",
            "referrer":"https://duckduckgo.com/","ip":"203.0.113.9","userAgent":"curl/8"}}"#,
        );
        assert_eq!(b.name, "pageview");
        assert_eq!(
            b.url.as_str(),
            "https://www.example.com/pricing?utm_source=news"
        );
        assert_eq!(b.domains, ["example.com"]);
        assert_eq!(b.referrer.as_deref(), Some("https://duckduckgo.com/"));
        assert_eq!(b.screen_width, Some(1366));
        assert!(b.props.is_empty());
    }

    /// `umami.track('Signup', {plan: 'pro', seats: 3, meta: {source: 'hero'}})`, SPA referrer.
    #[test]
    fn custom_event_with_data() {
        let b = event(
            r#"{"type":"event","payload":{"website":"3F1C1A4E-7D2B-4C55-9A0E-2B7F5C8D9E01",
            "screen":"390x844","language":"de","title":"x","hostname":"example.com",
            "url":"https://example.com/app/b","referrer":"https://example.com/app/a",
            "name":"Signup","data":{"plan":"pro","seats":3,"trial":true,"gone":null,
            "meta":{"source":"hero"},"tags":["a","b"]},"id":"user-42"}}"#,
        );
        assert_eq!(b.name, "Signup");
        let mut props = b.props.clone();
        props.sort();
        let expected: Vec<(String, String)> = [
            ("meta.source", "hero"),
            ("plan", "pro"),
            ("seats", "3"),
            ("tags", r#"["a","b"]"#),
            ("trial", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(props, expected);
    }

    /// Umami 2's tracker sent the path in `url` and the host in `hostname`.
    #[test]
    fn v2_path_and_hostname() {
        let b = event(
            r#"{"type":"event","payload":{"website":"3f1c1a4e-7d2b-4c55-9a0e-2b7f5c8d9e01",
            "hostname":"blog.example.com","url":"/posts/1?ref=hn","referrer":"","screen":"1920x1080"}}"#,
        );
        assert_eq!(b.url.as_str(), "https://blog.example.com/posts/1?ref=hn");
        assert_eq!(b.referrer, None);
    }

    #[test]
    fn identify_and_performance_are_not_stored() {
        for body in [
            r#"{"type":"identify","payload":{"website":"3f1c1a4e-7d2b-4c55-9a0e-2b7f5c8d9e01","id":"user-42","data":{"email":"a@b.c"}}}"#,
            r#"{"type":"performance","payload":{"website":"3f1c1a4e-7d2b-4c55-9a0e-2b7f5c8d9e01","lcp":1200}}"#,
        ] {
            assert!(matches!(
                map(body.as_bytes(), &websites(), &BeaconLimits::default()),
                Ok(Mapped::Ignored(_))
            ));
        }
    }

    #[test]
    fn errors_name_the_field() {
        let unknown = r#"{"type":"event","payload":{"website":"00000000-0000-0000-0000-000000000000","url":"https://e.com/"}}"#;
        assert!(matches!(error(unknown), MapError::UnknownSite(_)));
        let field = |body: &str| match error(body) {
            MapError::Invalid(e) => e.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("nope"), "body");
        assert_eq!(field(r#"{"type":"event"}"#), "payload");
        assert_eq!(field(r#"{"type":"event","payload":{}}"#), "payload.website");
        let w = WEBSITE;
        assert_eq!(
            field(&format!(r#"{{"payload":{{"website":"{w}"}}}}"#)),
            "payload.url"
        );
        assert_eq!(
            field(&format!(r#"{{"payload":{{"website":"{w}","url":"/a"}}}}"#)),
            "payload.hostname"
        );
        assert_eq!(
            field(&format!(
                r#"{{"payload":{{"website":"{w}","url":"https://e.com/","data":[1]}}}}"#
            )),
            "payload.data"
        );
        let long = "x".repeat(121);
        assert_eq!(
            field(&format!(
                r#"{{"payload":{{"website":"{w}","url":"https://e.com/","name":"{long}"}}}}"#
            )),
            "payload.name"
        );
        assert_eq!(field(r#"{"type":"weird","payload":{}}"#), "type");
    }
}
