//! `/privacy`: the site's privacy statement, generated from the live configuration
//! (`?site=example.com`; without it, the only site, or a list of sites).

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::response::{self, Body};
use super::State;
use crate::admin::visitor_data::{self, VisitorEvent};
use crate::ingest::client_ip::client_ip;
use crate::privacy_statement;

pub fn statement<B>(state: &State, request: &Request<B>) -> Response<Body> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return response::method_not_allowed("GET");
    }
    let wanted = query_param(request, "site");
    let sites = &state.config.sites;
    let site = match (&wanted, sites.as_slice()) {
        (Some(domain), _) => sites.iter().find(|s| &s.domain == domain),
        (None, [only]) => Some(only),
        (None, _) => None,
    };
    match site {
        Some(site) => response::text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            privacy_statement::html(&state.config, site),
        ),
        None if wanted.is_some() => {
            response::error(StatusCode::NOT_FOUND, "no such site", Some("site"))
        }
        None => {
            let links: String = sites
                .iter()
                .map(|s| {
                    let d = html_escape::encode_text(&s.domain);
                    format!("<li><a href=\"?site={d}\">{d}</a></li>")
                })
                .collect();
            response::text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                format!(
                    "<!doctype html><meta charset=\"utf-8\"><title>Privacy</title>\
                     <h1>Privacy statements</h1><ul>{links}</ul>"
                ),
            )
        }
    }
}

/// The first value of query parameter `name`.
pub fn query_param<B>(request: &Request<B>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /privacy/my-data` (page, or JSON with `?format=json`) and `POST /privacy/erase`.
pub async fn my_data<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body> {
    let erase = request.uri().path() == "/privacy/erase";
    match (request.method(), erase) {
        (&Method::GET, false) | (&Method::POST, true) => {}
        (_, false) => return response::method_not_allowed("GET"),
        (_, true) => return response::method_not_allowed("POST"),
    }
    let ip = client_ip(peer.ip(), request.headers(), &state.trusted_proxies);
    if let Err(wait) = state.privacy_limiter.check(ip) {
        let mut r = response::error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests; try again in a minute",
            None,
        );
        let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let Some(client) = state.readiness.clickhouse.as_ref() else {
        return response::unavailable("visitor data is not available here", 60);
    };
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let salts = match state.salts.salts_at(u64::from(super::unix_now())) {
        Ok(salts) => salts,
        Err(_) => return response::unavailable("visitor ids cannot be computed now", 60),
    };
    let sites: Vec<String> = state
        .config
        .sites
        .iter()
        .map(|s| s.domain.clone())
        .collect();
    let keys = visitor_data::keys(&sites, &salts, ip, &user_agent);
    let db = &state.config.clickhouse_database;
    if erase {
        return match visitor_data::erase(client, db, &keys).await {
            Ok(n) => page(
                "Your data is being erased",
                &format!(
                    "{n} recorded events of this browser from today and yesterday are being \
                     deleted; they disappear within moments. Nothing older can be linked to you."
                ),
                &[],
                &keys,
                false,
            ),
            Err(error) => {
                tracing::warn!(%error, "visitor erase failed");
                response::unavailable("erasing failed; please try again later", 60)
            }
        };
    }
    let events = match visitor_data::fetch(client, db, &keys).await {
        Ok(events) => events,
        Err(error) => {
            tracing::warn!(%error, "visitor data lookup failed");
            return response::unavailable("looking up your data failed; try again later", 60);
        }
    };
    if query_param(&request, "format").as_deref() == Some("json") {
        let ids: Vec<serde_json::Value> = keys
            .by_site
            .iter()
            .map(|(site, ids)| serde_json::json!({"site": site, "visitor_ids": ids}))
            .collect();
        let mut r = response::json(
            StatusCode::OK,
            &serde_json::json!({"pseudonyms": ids, "events": events}),
        );
        r.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"my-analytics-data.json\""),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    page(
        "What this site recorded about you",
        "These are the events recorded today and yesterday under the pseudonymous codes of \
         this browser (computed from its IP address and user agent with a daily secret). Older \
         records cannot be linked to you or to anyone, by design.",
        &events,
        &keys,
        true,
    )
}

fn page(
    title: &str,
    intro: &str,
    events: &[VisitorEvent],
    keys: &visitor_data::VisitorKeys,
    actions: bool,
) -> Response<Body> {
    let esc = |s: &str| html_escape::encode_text(s).into_owned();
    let rows: String = events
        .iter()
        .map(|e| {
            let when = jiff::Timestamp::from_second(i64::from(e.timestamp))
                .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default();
            let place = [&e.city, &e.region, &e.country]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{} / {} / {}</td><td>{}</td></tr>",
                esc(&when),
                esc(&e.name),
                esc(&e.hostname),
                esc(&e.pathname),
                esc(&e.referrer_source),
                esc(&e.browser),
                esc(&e.os),
                esc(&e.device),
                esc(&place)
            )
        })
        .collect();
    let ids: String = keys
        .by_site
        .iter()
        .map(|(site, ids)| {
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            format!("<li>{}: <code>{}</code></li>", esc(site), ids.join(", "))
        })
        .collect();
    let table = if events.is_empty() {
        "<p><strong>Nothing is recorded for this browser today or yesterday.</strong></p>"
            .to_string()
    } else {
        format!(
            "<table><thead><tr><th>When</th><th>Event</th><th>Page</th><th>From</th>\
             <th>Browser / OS / device</th><th>Place</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    let actions = if actions {
        "<p><a href=\"/privacy/my-data?format=json\">Download as JSON</a></p>\
         <form method=\"post\" action=\"/privacy/erase\"><button type=\"submit\">Erase my data</button></form>\
         <p><a href=\"/opt-out\">Opt out of being counted</a></p>"
    } else {
        "<p><a href=\"/privacy/my-data\">Back</a></p>"
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:60rem;\
         margin:2rem auto;padding:0 1rem;line-height:1.5}}table{{border-collapse:collapse;\
         width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.3rem;text-align:left;\
         font-size:.9rem}}</style></head><body><h1>{t}</h1><p>{intro}</p>{table}\
         <p>Your pseudonymous codes (quote them if you write to the operator):</p><ul>{ids}</ul>\
         {actions}</body></html>\n",
        t = esc(title),
        intro = esc(intro),
    );
    let mut r = response::text(StatusCode::OK, "text/html; charset=utf-8", html);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
