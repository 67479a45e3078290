//! The pure beacon → row transformation: no I/O, no clock, no HTTP types. Everything it needs
//! about the request arrives in [`RequestFacts`].

use percent_encoding::percent_decode_str;
use url::Url;

use super::beacon::Beacon;
use super::sites::Sites;
use crate::schema::EventRow;

/// What the HTTP layer knows about the request, beyond its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    /// When the request arrived, seconds since the Unix epoch (UTC).
    pub received_at: u32,
}

/// Why a valid beacon produced no row. Each reason is counted, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("no configured site matches the beacon's domain")]
    UnknownSite,
}

impl DropReason {
    /// A stable, low-cardinality label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::UnknownSite => "unknown_site",
        }
    }
}

/// Turns a beacon into one row per configured site it names (Plausible lets one page report to
/// several sites), or says why it must be dropped.
pub fn process(
    beacon: &Beacon,
    facts: &RequestFacts,
    sites: &Sites,
) -> Result<Vec<EventRow>, DropReason> {
    let known: Vec<&str> = beacon
        .domains
        .iter()
        .filter_map(|d| sites.get(d))
        .map(|s| s.domain.as_str())
        .collect();
    if known.is_empty() {
        return Err(DropReason::UnknownSite);
    }

    let hostname = normalize_host(beacon.url.host_str().unwrap_or_default());
    let pathname = page_path(&beacon.url, beacon.hash_mode);
    let campaign = Campaign::from_url(&beacon.url);
    let referrer = beacon
        .referrer
        .as_deref()
        .and_then(|r| Url::parse(r).ok())
        .filter(|r| matches!(r.scheme(), "http" | "https"))
        .filter(|r| normalize_host(r.host_str().unwrap_or_default()) != hostname);
    let referrer_text = referrer
        .as_ref()
        .map(referrer_without_query)
        .unwrap_or_default();
    let referrer_host = referrer
        .as_ref()
        .map(|r| normalize_host(r.host_str().unwrap_or_default()))
        .unwrap_or_default();
    let referrer_source = if campaign.source.is_empty() {
        referrer_host
    } else {
        campaign.source.clone()
    };

    let is_engagement = beacon.name == "engagement";
    let (prop_keys, prop_values) = beacon.props.iter().cloned().unzip();
    let row = EventRow {
        site: String::new(),
        timestamp: facts.received_at,
        name: beacon.name.clone(),
        hostname,
        pathname,
        referrer: referrer_text,
        referrer_source,
        utm_source: campaign.source,
        utm_medium: campaign.medium,
        utm_campaign: campaign.campaign,
        utm_term: campaign.term,
        utm_content: campaign.content,
        screen_width: beacon.screen_width.unwrap_or(0),
        interactive: u8::from(beacon.interactive),
        scroll_depth: if is_engagement {
            beacon.scroll_depth.unwrap_or(0)
        } else {
            0
        },
        engagement_ms: if is_engagement {
            beacon.engagement_ms.unwrap_or(0)
        } else {
            0
        },
        prop_keys,
        prop_values,
        ..EventRow::default()
    };
    Ok(known
        .into_iter()
        .map(|site| EventRow {
            site: site.to_string(),
            ..row.clone()
        })
        .collect())
}

/// Lower-case host without a leading `www.`, so `www.example.com` and `example.com` count as one.
fn normalize_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.strip_prefix("www.") {
        Some(rest) => rest.to_string(),
        None => host,
    }
}

/// The path to store: percent-decoded for people to read; with the fragment in hash mode.
/// Query strings are never stored: they often carry e-mail addresses and tokens.
fn page_path(url: &Url, hash_mode: bool) -> String {
    let mut path = decode(url.path());
    if hash_mode {
        if let Some(fragment) = url.fragment().filter(|f| !f.is_empty()) {
            path.push('#');
            path.push_str(&decode(fragment));
        }
    }
    path
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// `host/path` of a referrer, without query or fragment.
fn referrer_without_query(url: &Url) -> String {
    let host = normalize_host(url.host_str().unwrap_or_default());
    let path = decode(url.path());
    if path == "/" {
        host
    } else {
        format!("{host}{path}")
    }
}

/// Campaign parameters from the page URL. `ref` and `source` stand in for `utm_source`.
#[derive(Debug, Default)]
struct Campaign {
    source: String,
    medium: String,
    campaign: String,
    term: String,
    content: String,
}

impl Campaign {
    fn from_url(url: &Url) -> Self {
        let mut c = Campaign::default();
        let mut fallback_source = String::new();
        for (key, value) in url.query_pairs() {
            let value = value.trim().chars().take(256).collect::<String>();
            match key.as_ref() {
                "utm_source" => c.source = value,
                "utm_medium" => c.medium = value,
                "utm_campaign" => c.campaign = value,
                "utm_term" => c.term = value,
                "utm_content" => c.content = value,
                "ref" | "source" if fallback_source.is_empty() => fallback_source = value,
                _ => {}
            }
        }
        if c.source.is_empty() {
            c.source = fallback_source;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SiteConfig;
    use crate::ingest::beacon::{parse, BeaconLimits};

    fn sites() -> Sites {
        Sites::new(&[
            SiteConfig {
                domain: "example.com".into(),
            },
            SiteConfig {
                domain: "other.org".into(),
            },
        ])
    }

    fn run(body: &str) -> Result<Vec<EventRow>, DropReason> {
        let beacon = parse(body.as_bytes(), &BeaconLimits::default()).unwrap();
        process(
            &beacon,
            &RequestFacts {
                received_at: 1_700_000_000,
            },
            &sites(),
        )
    }

    #[test]
    fn pageview_becomes_a_row() {
        let rows = run(r#"{"n":"pageview","u":"https://WWW.Example.com/blog/caf%C3%A9?email=a@b.c&utm_source=news&utm_medium=email&utm_campaign=launch#top",
            "d":"example.com","r":"https://www.google.com/search?q=secret","w":1280}"#)
        .unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.site, "example.com");
        assert_eq!(row.timestamp, 1_700_000_000);
        assert_eq!(row.name, "pageview");
        assert_eq!(row.hostname, "example.com");
        assert_eq!(row.pathname, "/blog/café");
        assert_eq!(row.referrer, "google.com/search");
        assert_eq!(row.referrer_source, "news");
        assert_eq!(row.utm_source, "news");
        assert_eq!(row.utm_medium, "email");
        assert_eq!(row.utm_campaign, "launch");
        assert_eq!(row.screen_width, 1280);
        assert_eq!(row.interactive, 1);
        assert_eq!(row.ip_prefix, "");
        // The query string is nowhere in the row.
        assert!(!format!("{row:?}").contains("a@b.c"));
        assert!(!format!("{row:?}").contains("secret"));
    }

    #[test]
    fn referrer_host_is_the_source_without_campaign() {
        let row = &run(
            r#"{"n":"pageview","u":"https://example.com/","d":"example.com","r":"https://news.ycombinator.com/"}"#,
        )
        .unwrap()[0];
        assert_eq!(row.referrer, "news.ycombinator.com");
        assert_eq!(row.referrer_source, "news.ycombinator.com");
        let row = &run(
            r#"{"n":"pageview","u":"https://example.com/?ref=producthunt","d":"example.com"}"#,
        )
        .unwrap()[0];
        assert_eq!(row.referrer_source, "producthunt");
    }

    #[test]
    fn self_referrals_and_odd_referrers_are_dropped() {
        let row = &run(
            r#"{"n":"pageview","u":"https://example.com/b","d":"example.com","r":"https://www.example.com/a"}"#,
        )
        .unwrap()[0];
        assert_eq!(row.referrer, "");
        assert_eq!(row.referrer_source, "");
        let row = &run(
            r#"{"n":"pageview","u":"https://example.com/b","d":"example.com","r":"android-app://com.x"}"#,
        )
        .unwrap()[0];
        assert_eq!(row.referrer, "");
    }

    #[test]
    fn hash_mode_keeps_the_fragment() {
        let body = |h: bool| {
            format!(
                r#"{{"n":"pageview","u":"https://example.com/app#/settings","d":"example.com","h":{h}}}"#
            )
        };
        assert_eq!(run(&body(true)).unwrap()[0].pathname, "/app#/settings");
        assert_eq!(run(&body(false)).unwrap()[0].pathname, "/app");
    }

    #[test]
    fn custom_event_props_are_parallel_arrays() {
        let row = &run(
            r#"{"n":"Signup","u":"https://example.com/","d":"example.com","p":{"plan":"pro","seats":2}}"#,
        )
        .unwrap()[0];
        assert_eq!(row.name, "Signup");
        assert_eq!(row.prop_keys, ["plan", "seats"]);
        assert_eq!(row.prop_values, ["pro", "2"]);
    }

    #[test]
    fn engagement_fields_only_on_engagement_events() {
        let row = &run(
            r#"{"n":"engagement","u":"https://example.com/","d":"example.com","sd":80,"e":5000}"#,
        )
        .unwrap()[0];
        assert_eq!((row.scroll_depth, row.engagement_ms), (80, 5000));
        let row = &run(
            r#"{"n":"pageview","u":"https://example.com/","d":"example.com","sd":80,"e":5000}"#,
        )
        .unwrap()[0];
        assert_eq!((row.scroll_depth, row.engagement_ms), (0, 0));
    }

    #[test]
    fn one_row_per_known_site() {
        let rows =
            run(r#"{"n":"pageview","u":"https://example.com/","d":"example.com,unknown.net,other.org"}"#)
                .unwrap();
        let sites: Vec<_> = rows.iter().map(|r| r.site.as_str()).collect();
        assert_eq!(sites, ["example.com", "other.org"]);
    }

    #[test]
    fn unknown_site_is_dropped() {
        assert_eq!(
            run(r#"{"n":"pageview","u":"https://example.com/","d":"unknown.net"}"#),
            Err(DropReason::UnknownSite)
        );
    }
}
