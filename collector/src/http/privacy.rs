//! `/privacy`: the site's privacy statement, generated from the live configuration
//! (`?site=example.com`; without it, the only site, or a list of sites); `/privacy/my-data`
//! and `/privacy/erase`: a visitor's access to and erasure of their own data (a summary by
//! default, see `admin::visitor_data`). Every page may be framed only by the configured sites;
//! erasure is refused to other websites and rate-limited per client network.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::ingest_error::IngestError;
use super::response::{self, Body};
use super::State;
use crate::admin::visitor_data::{self, EraseError, SiteSummary, VisitorData, VisitorEvent};
use crate::privacy_statement;
use glimpse_core::config::{Config, VisitorDataDetail};
use glimpse_core::net::client_ip::client_ip;

pub fn statement<B>(state: &State, request: &Request<B>) -> Response<Body> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return IngestError::PageMethodNotAllowed { allow: "GET" }.into_response();
    }
    let wanted = query_param(request, "site");
    let current = state.enrichers.sites.current();
    let sites: Vec<_> = current.iter().collect();
    let site = match (&wanted, sites.as_slice()) {
        (Some(domain), _) => current.get(domain),
        (None, [only]) => Some(*only),
        (None, _) => None,
    };
    let mut r = match site {
        Some(site) => response::text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            privacy_statement::html(&state.config, site),
        ),
        None if wanted.is_some() => IngestError::NoSuchSite.into_response(),
        None => {
            let links: String = sites
                .iter()
                .map(|s| {
                    let d = html_escape::encode_text(s.current_domain());
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
    };
    state.first_party().frame_only_first_party(r.headers_mut());
    r
}

/// The first value of query parameter `name`.
pub fn query_param<B>(request: &Request<B>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /privacy/my-data` (page, or JSON with `?format=json`) and `POST /privacy/erase`.
pub async fn my_data<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Response<Body> {
    let mut r = my_data_response(state, peer, request)
        .await
        .unwrap_or_else(IngestError::into_response);
    state.first_party().frame_only_first_party(r.headers_mut());
    r
}

async fn my_data_response<B>(
    state: &State,
    peer: SocketAddr,
    request: Request<B>,
) -> Result<Response<Body>, IngestError> {
    let erase = request.uri().path() == "/privacy/erase";
    match (request.method(), erase) {
        (&Method::GET, false) | (&Method::POST, true) => {}
        (_, false) => return Err(IngestError::PageMethodNotAllowed { allow: "GET" }),
        (_, true) => return Err(IngestError::PageMethodNotAllowed { allow: "POST" }),
    }
    if erase {
        state
            .first_party()
            .check(request.headers())
            .map_err(IngestError::CrossSite)?;
    }
    let ip = client_ip(peer.ip(), request.headers(), &state.trusted_proxies);
    // Erasure first: its hourly limit is the one a client meets, and a refused erase does not
    // use up the page limit. Keyed like visitor ids, on the IPv6 /64.
    if erase {
        state
            .erase_limiter
            .check(ip)
            .map_err(|wait| IngestError::PageRateLimited {
                reason: "too many erase requests from this network; try again later",
                wait,
            })?;
    }
    state
        .privacy_limiter
        .check(ip)
        .map_err(|wait| IngestError::PageRateLimited {
            reason: "too many requests; try again in a minute",
            wait,
        })?;
    let data = state
        .visitor_data
        .as_ref()
        .ok_or_else(|| unavailable("visitor data is not available here", 60))?;
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let salts = state
        .salts
        .salts_at(u64::from(glimpse_core::clock::unix_now()))
        .map_err(|_| unavailable("visitor ids cannot be computed now", 60))?;
    // Every site this collector records, including those added at run time.
    let sites: Vec<String> = state
        .enrichers
        .sites
        .current()
        .iter()
        .map(|s| s.domain.clone())
        .collect();
    let keys = visitor_data::keys(&sites, &salts, ip, &user_agent);
    if erase {
        return erase_page(data, keys).await;
    }
    let lookup_failed = |error: clickhouse::error::Error| {
        tracing::warn!(%error, "visitor data lookup failed");
        unavailable("looking up your data failed; try again later", 60)
    };
    let summary = data.summary(&keys).await.map_err(lookup_failed)?;
    let full = state.config.collector.visitor_data_detail == VisitorDataDetail::Full;
    let events = if full {
        data.fetch(&keys).await.map_err(lookup_failed)?
    } else {
        Vec::new()
    };
    let stored = stored_fields(&state.config);
    if query_param(&request, "format").as_deref() == Some("json") {
        let ids: Vec<serde_json::Value> = keys
            .by_site
            .iter()
            .map(|(site, ids)| serde_json::json!({"site": site, "visitor_ids": ids}))
            .collect();
        let mut body = serde_json::json!({
            "detail": if full { "full" } else { "summary" },
            "pseudonyms": ids,
            "sites": summary,
            "stored_with_each_event": stored,
        });
        if full {
            body["events"] = serde_json::json!(events);
        }
        let mut r = response::json(StatusCode::OK, &body);
        r.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"my-analytics-data.json\""),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(r);
    }
    let intro = if full {
        "These are the events recorded today and yesterday under the pseudonymous codes of \
         this browser (computed from its IP address and user agent with a daily secret). Older \
         records cannot be linked to you or to anyone, by design. Everyone who uses the same \
         internet connection with the same browser version gets the same codes and sees this \
         page too."
    } else {
        "This is what was recorded today and yesterday under the pseudonymous codes of this \
         browser (computed from its IP address and user agent with a daily secret); older \
         records cannot be linked to you or to anyone, by design. The pages you viewed, the \
         sites that sent you and the times are not shown here: everyone who uses the same \
         internet connection with the same browser version (your household, your office, your \
         mobile network) gets the same codes and would see this page too."
    };
    let mut body = summary_html(&summary);
    body.push_str("<p>Stored with each event:</p><ul>");
    for field in &stored {
        body.push_str(&format!("<li>{}</li>", esc(field)));
    }
    body.push_str("</ul>");
    if full {
        body.push_str(&events_html(&events));
    }
    Ok(page(
        "What this site recorded about you",
        intro,
        &body,
        &keys,
        true,
    ))
}

fn unavailable(reason: &'static str, retry_after_secs: u32) -> IngestError {
    IngestError::PageUnavailable {
        reason,
        retry_after_secs,
    }
}

/// Queues the erasure (one mutation for all requests of a short interval) and answers once
/// ClickHouse has accepted it.
async fn erase_page(
    data: &VisitorData,
    keys: visitor_data::VisitorKeys,
) -> Result<Response<Body>, IngestError> {
    let failed = |error: &dyn std::fmt::Display| {
        tracing::warn!(%error, "visitor erase failed");
        unavailable("erasing failed; please try again later", 60)
    };
    let n = data.count(&keys).await.map_err(|e| failed(&e))?;
    if n > 0 {
        data.erase(keys.clone()).await.map_err(|e| match e {
            EraseError::Busy => unavailable("too many erase requests; try again shortly", 30),
            other => failed(&other),
        })?;
    }
    Ok(page(
        "Your data is being erased",
        &format!(
            "{n} recorded events of this browser from today and yesterday are being \
             deleted; they disappear within moments. Nothing older can be linked to you."
        ),
        "",
        &keys,
        false,
    ))
}

/// The kinds of data stored with each event under this configuration.
fn stored_fields(config: &Config) -> Vec<String> {
    let mut fields = vec![
        "the page (host name and path) and the event's name and properties".to_string(),
        "the referring site and campaign tags (utm_…)".to_string(),
        "browser and version, operating system and version, device type, screen width".to_string(),
        "time spent and scroll depth on the page, and the visit it belongs to".to_string(),
        "a pseudonymous code for the day (not your IP address or user agent)".to_string(),
        "the time, to the second".to_string(),
    ];
    if config.geoip_db.is_some() {
        fields.push("country, region and city, derived from your IP address".into());
    }
    if config.collector.store_ip_prefix {
        fields.push(format!(
            "the network part of your IP address (the first {} bits of IPv4, {} of IPv6)",
            config.collector.ipv4_prefix_length, config.collector.ipv6_prefix_length
        ));
    }
    fields
}

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

fn summary_html(summary: &[SiteSummary]) -> String {
    if summary.is_empty() {
        return "<p><strong>Nothing is recorded for this browser today or yesterday.</strong></p>"
            .to_string();
    }
    let rows: String = summary
        .iter()
        .map(|s| {
            let days = if s.first_day == s.last_day {
                s.first_day.clone()
            } else {
                format!("{} to {}", s.first_day, s.last_day)
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.site),
                s.pageviews,
                s.other_events,
                s.engagement_reports,
                esc(&days)
            )
        })
        .collect();
    format!(
        "<table><thead><tr><th>Site</th><th>Page views</th><th>Other events</th>\
         <th>Time-on-page reports</th><th>Days (UTC)</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

fn events_html(events: &[VisitorEvent]) -> String {
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
    if events.is_empty() {
        return String::new();
    }
    format!(
        "<table><thead><tr><th>When</th><th>Event</th><th>Page</th><th>From</th>\
         <th>Browser / OS / device</th><th>Place</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

/// A page: `body` is HTML built from escaped values.
fn page(
    title: &str,
    intro: &str,
    body: &str,
    keys: &visitor_data::VisitorKeys,
    actions: bool,
) -> Response<Body> {
    let ids: String = keys
        .by_site
        .iter()
        .map(|(site, ids)| {
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            format!("<li>{}: <code>{}</code></li>", esc(site), ids.join(", "))
        })
        .collect();
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
         font-size:.9rem}}</style></head><body><h1>{t}</h1><p>{intro}</p>{body}\
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
