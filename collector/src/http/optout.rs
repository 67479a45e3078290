//! The visitor opt-out page: `GET /opt-out` explains what Glimpse records and offers, without
//! JavaScript, a button to opt out (`POST /opt-out`) and one to opt back in (`POST /opt-in`).
//! Opting out sets a cookie that the collector honours on every beacon it sees it on.
//! Posts from other websites are refused (another site must not opt a visitor in or out), and
//! the page may be framed only by the configured sites (see `cross_site`).

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::cross_site::FirstParty;
use super::ingest_error::IngestError;
use super::response::{self, Body};
use crate::ingest::optout::{PrivacySignals, OPT_OUT_COOKIE};

/// Five years: long enough that a visitor need not do it again.
const COOKIE_MAX_AGE_SECS: u64 = 5 * 365 * 24 * 60 * 60;

pub fn handle<B>(first_party: &FirstParty, request: &Request<B>) -> Response<Body> {
    answer(first_party, request).unwrap_or_else(IngestError::into_response)
}

fn answer<B>(
    first_party: &FirstParty,
    request: &Request<B>,
) -> Result<Response<Body>, IngestError> {
    let path = request.uri().path();
    if request.method() == Method::POST {
        first_party
            .check(request.headers())
            .map_err(IngestError::CrossSite)?;
    }
    Ok(match (request.method(), path) {
        (&Method::GET | &Method::HEAD, "/opt-out") => {
            let opted_out = PrivacySignals::from_headers(request.headers()).opt_out_cookie;
            let mut r = page(opted_out);
            first_party.frame_only_first_party(r.headers_mut());
            r
        }
        (&Method::POST, "/opt-out") => redirect_with_cookie(&format!(
            "{OPT_OUT_COOKIE}=1; Max-Age={COOKIE_MAX_AGE_SECS}; Path=/; HttpOnly; Secure; SameSite=None"
        )),
        (&Method::POST, "/opt-in") => redirect_with_cookie(&format!(
            "{OPT_OUT_COOKIE}=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=None"
        )),
        (_, "/opt-out") => return Err(IngestError::PageMethodNotAllowed { allow: "GET, POST" }),
        _ => return Err(IngestError::PageMethodNotAllowed { allow: "POST" }),
    })
}

/// After a form post, back to the page (Post/Redirect/Get), which shows the new state.
fn redirect_with_cookie(cookie: &str) -> Response<Body> {
    let mut r = response::text(StatusCode::SEE_OTHER, "text/plain", "see /opt-out");
    let headers = r.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/opt-out"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(cookie) {
        headers.insert(header::SET_COOKIE, value);
    }
    r
}

/// Progressive enhancement for a page served on the site's own origin (first-party proxying):
/// the choice is mirrored in `localStorage.glimpse_ignore`, which the tracker on that origin
/// reads, so it sends nothing at all. A switch set there without the cookie shows as opted out.
/// The forms work the same without it.
const SYNC_LOCAL_STORAGE: &str = r#"<script>
(function () {
  try {
    var s = localStorage, f = document.forms[0], out = f.getAttribute("action") == "/opt-in";
    if (out) s.glimpse_ignore = "true";
    else if (s.glimpse_ignore == "true") {
      out = true;
      f.setAttribute("action", "/opt-in");
      f.querySelector("button").textContent = "Opt back in";
      document.getElementById("status").textContent =
        "You have opted out on this site: this browser's visits are not recorded.";
    }
    f.addEventListener("submit", function () {
      if (out) s.removeItem("glimpse_ignore");
      else s.glimpse_ignore = "true";
    });
  } catch (e) {}
})();
</script>"#;

fn page(opted_out: bool) -> Response<Body> {
    let (status, button) = if opted_out {
        (
            "You have opted out: this browser's visits are not recorded.",
            r#"<form method="post" action="/opt-in"><button type="submit">Opt back in</button></form>"#,
        )
    } else {
        (
            "Your visits are counted, anonymously, as described above.",
            r#"<form method="post" action="/opt-out"><button type="submit">Opt out</button></form>"#,
        )
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Opt out of analytics</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
button{{font-size:1rem;padding:.5rem 1rem}}</style></head>
<body>
<h1>Privacy-friendly analytics</h1>
<p>This site counts visits with Glimpse. It records the page you view, the site that sent you,
your browser, operating system and device type, and your country and city derived from your
IP address. It sets no cookies to track you and does not store your IP address or your browser's
user-agent string. Visits on one day are grouped by a pseudonymous code computed from your IP
address and browser with a secret that changes every day and is then destroyed, so your visits
on different days cannot be linked to each other or to you.</p>
<p>Browsers that send <em>Do Not Track</em> or <em>Global Privacy Control</em> are not counted.</p>
<p><strong id="status">{status}</strong></p>
{button}
<p><small>Opting out sets one cookie, <code>{OPT_OUT_COOKIE}</code>, on this analytics server,
whose only meaning is "do not count me". Clearing your cookies undoes it.</small></p>
{SYNC_LOCAL_STORAGE}
</body></html>
"#
    );
    let mut r = response::text(StatusCode::OK, "text/html; charset=utf-8", html);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
