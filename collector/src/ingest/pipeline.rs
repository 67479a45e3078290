//! The pure beacon → row transformation: no I/O, no clock, no HTTP types. Everything it needs
//! about the request arrives in [`RequestFacts`], everything configured in [`Enrichers`], and
//! the day's salts in [`DailySalts`]. Cheap checks run first (site, opt-out, site rules), then
//! bots, then the enrichment (user agent, place, visitor id).
//!
//! The raw address and user agent are used here, in memory, and never leave: the row holds
//! only derived values (browser, country, keyed hash, optional truncated prefix).

use std::net::IpAddr;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use url::Url;

use super::beacon::Beacon;
use super::bots::BotDetector;
use super::geo::GeoIp;
use super::geo_reload::LiveGeoIp;
use super::optout::{self, OptOutPolicy, PrivacySignals};
use super::pseudonym::DailySalts;
use super::referrer::{self, Campaign};
use super::useragent::{refine_device, UserAgentParser};
use glimpse_core::config::Config;
use glimpse_core::ip_prefix;
use glimpse_core::registry::LiveSites;
use glimpse_core::schema::EventRow;
use glimpse_core::site::Site;

/// What the HTTP layer knows about the request, beyond its body.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// When the request arrived, seconds since the Unix epoch (UTC).
    pub received_at: u32,
    /// The client's address (after trusted-proxy resolution). Never stored as is.
    pub client_ip: IpAddr,
    /// The raw `User-Agent`. Never stored as is.
    pub user_agent: &'a str,
    pub signals: PrivacySignals,
}

pub use super::drop_reason::DropReason;

/// A dropped event, with the site it was for when known (for per-site counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub reason: DropReason,
    pub site: Option<String>,
}

/// What the pipeline needs beyond the request, built once from the configuration.
pub struct Enrichers {
    /// The sites beacons may name: the configured ones and the registry's, kept fresh.
    pub sites: Arc<LiveSites>,
    pub opt_out: OptOutPolicy,
    pub user_agents: UserAgentParser,
    pub bots: BotDetector,
    /// The GeoIP database in use, swapped when its file changes.
    pub geo: LiveGeoIp,
    /// `Some((v4 bits, v6 bits))` when the operator stores the truncated network.
    pub ip_prefix: Option<(u8, u8)>,
}

impl Enrichers {
    /// Everything but the GeoIP database, which the caller opens (it is I/O and may fail).
    pub fn from_config(config: &Config, geo: Option<GeoIp>) -> Self {
        Self {
            sites: Arc::new(LiveSites::new(config.sites.clone())),
            opt_out: OptOutPolicy {
                honor_dnt: config.collector.honor_dnt,
                honor_gpc: config.collector.honor_gpc,
                honor_cookie: config.collector.honor_opt_out_cookie,
            },
            user_agents: UserAgentParser::new(config.collector.user_agent_cache_size),
            bots: BotDetector::with_cache(config.collector.user_agent_cache_size),
            geo: LiveGeoIp::new(geo),
            ip_prefix: config.collector.store_ip_prefix.then_some((
                config.collector.ipv4_prefix_length,
                config.collector.ipv6_prefix_length,
            )),
        }
    }
}

/// A row to store, with the id the visitor had under yesterday's salt (to continue a visit
/// across midnight; not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    pub row: EventRow,
    pub previous_visitor_id: Option<u64>,
}

/// Turns a beacon into one row per configured site it names (Plausible lets one page report to
/// several sites), or says why it must be dropped. `session_id` is left 0: visits are assigned
/// afterwards, from state (see `sessions`).
pub fn process(
    beacon: &Beacon,
    facts: &RequestFacts<'_>,
    enrichers: &Enrichers,
    salts: &DailySalts,
) -> Result<Vec<Processed>, Dropped> {
    let current = enrichers.sites.current();
    let mut sites: Vec<&Site> = Vec::with_capacity(beacon.domains.len());
    for site in beacon.domains.iter().filter_map(|d| current.get(d)) {
        // A renamed site's two names in one `d` are one site: one row, not two.
        if !sites.iter().any(|s| s.domain == site.domain) {
            sites.push(site);
        }
    }
    let Some(first_site) = sites.first() else {
        return Err(Dropped {
            reason: DropReason::UnknownSite,
            site: None,
        });
    };
    let drop = |reason| Dropped {
        reason,
        site: Some(first_site.domain.clone()),
    };
    if let Some(reason) = optout::check(&enrichers.opt_out, &facts.signals) {
        return Err(drop(reason));
    }

    let hostname = referrer::normalize_host(beacon.url.host_str().unwrap_or_default());
    let pathname = page_path(&beacon.url, beacon.hash_mode);
    // Per-site rules: a site that excludes the event is skipped; if all do, it is dropped.
    let mut excluded = None;
    let sites: Vec<_> = sites
        .into_iter()
        .filter(|site| {
            let reason = if !site.allows_hostname(&hostname) {
                Some(DropReason::HostnameNotAllowed)
            } else if site.excludes_ip(facts.client_ip) {
                Some(DropReason::ExcludedIp)
            } else if site.excludes_path(&pathname) {
                Some(DropReason::ExcludedPath)
            } else {
                None
            };
            excluded = excluded.or(reason);
            reason.is_none()
        })
        .collect();
    if sites.is_empty() {
        return Err(drop(excluded.unwrap_or(DropReason::UnknownSite)));
    }

    let agent = enrichers.user_agents.parse(facts.user_agent);
    if let Some(reason) = enrichers.bots.classify(facts.user_agent, &agent) {
        return Err(drop(DropReason::Bot(reason)));
    }
    let source = referrer::classify(beacon.referrer.as_deref(), &hostname)
        .map_err(|_| drop(DropReason::ReferrerSpam))?;
    let campaign = Campaign::from_url(&beacon.url);
    let (referrer_text, referrer_source) = match source {
        Some(r) => (r.referrer, r.source),
        None => (String::new(), String::new()),
    };
    // A campaign's own source wins over the referrer's: it is what the site owner tagged.
    let referrer_source = if campaign.source.is_empty() {
        referrer_source
    } else {
        campaign.source.clone()
    };
    let place = enrichers.geo.lookup(facts.client_ip);
    let ip_prefix = enrichers
        .ip_prefix
        .map(|(v4, v6)| ip_prefix::truncate(facts.client_ip, v4, v6).to_string())
        .unwrap_or_default();

    let is_engagement = beacon.name == "engagement";
    let (prop_keys, prop_values) = beacon.props.iter().cloned().unzip();
    let template = EventRow {
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
        visitor_id: 0,
        session_id: 0,
        browser: agent.browser.clone(),
        browser_version: agent.browser_version.clone(),
        os: agent.os.clone(),
        os_version: agent.os_version.clone(),
        device: refine_device(agent.device, beacon.screen_width)
            .as_str()
            .to_string(),
        country: place.country,
        region: place.region,
        city: place.city,
        screen_width: beacon.screen_width.unwrap_or(0),
        ip_prefix,
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
        // The visit columns (entry page, start, deltas) come from the visit state afterwards.
        ..EventRow::default()
    };
    Ok(sites
        .into_iter()
        .map(|site| Processed {
            row: EventRow {
                site: site.domain.clone(),
                visitor_id: salts.visitor_id(&site.domain, facts.client_ip, facts.user_agent),
                ..template.clone()
            },
            previous_visitor_id: salts.previous_visitor_id(
                &site.domain,
                facts.client_ip,
                facts.user_agent,
            ),
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::beacon::{parse, BeaconLimits};
    use crate::ingest::geo::test_dbs;
    use glimpse_core::site::{Site, SiteConfig};

    const FIREFOX: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";

    fn config() -> Config {
        let mut other = SiteConfig::new("other.org");
        other.exclude_paths = vec!["/private/*".into()];
        let mut strict = SiteConfig::new("strict.net");
        strict.allowed_hostnames = vec!["strict.net".into()];
        strict.exclude_ips = vec!["203.0.113.0/24".into()];
        Config {
            sites: vec![
                Site::new("example.com"),
                Site::parse(other).unwrap(),
                Site::parse(strict).unwrap(),
            ],
            ..Config::default()
        }
    }

    /// A GeoIP2-layout city database with known answers, written for the test.
    fn geo() -> GeoIp {
        let dir = tempfile::tempdir().unwrap();
        let path = test_dbs::write(dir.path(), test_dbs::Kind::MaxMindCity);
        GeoIp::open(&path).unwrap()
    }

    struct Run {
        enrichers: Enrichers,
        salts: DailySalts,
    }

    impl Run {
        fn new(config: Config, geo: Option<GeoIp>) -> Self {
            Self {
                enrichers: Enrichers::from_config(&config, geo),
                salts: DailySalts::ephemeral(19_000),
            }
        }

        fn go(&self, body: &str, facts: RequestFacts<'_>) -> Result<Vec<EventRow>, Dropped> {
            let beacon = parse(body.as_bytes(), &BeaconLimits::default()).unwrap();
            process(&beacon, &facts, &self.enrichers, &self.salts)
                .map(|v| v.into_iter().map(|p| p.row).collect())
        }

        fn one(&self, body: &str) -> EventRow {
            self.go(body, facts()).unwrap().remove(0)
        }
    }

    fn facts() -> RequestFacts<'static> {
        RequestFacts {
            received_at: 1_700_000_000,
            client_ip: "81.2.69.142".parse().unwrap(),
            user_agent: FIREFOX,
            signals: PrivacySignals::default(),
        }
    }

    fn reason(result: Result<Vec<EventRow>, Dropped>) -> DropReason {
        result.unwrap_err().reason
    }

    #[test]
    fn pageview_becomes_an_enriched_row() {
        let run = Run::new(config(), Some(geo()));
        let row = run.one(r#"{"n":"pageview","u":"https://WWW.Example.com/blog/caf%C3%A9?email=a@b.c&utm_source=news&utm_medium=email&utm_campaign=launch#top",
            "d":"example.com","r":"https://www.google.com/search?q=secret","w":1280}"#);
        assert_eq!(row.site, "example.com");
        assert_eq!(row.timestamp, 1_700_000_000);
        assert_eq!(row.name, "pageview");
        assert_eq!(row.hostname, "example.com");
        assert_eq!(row.pathname, "/blog/café");
        assert_eq!(row.referrer, "google.com/search");
        assert_eq!(row.referrer_source, "news");
        assert_eq!(
            (
                row.utm_source.as_str(),
                row.utm_medium.as_str(),
                row.utm_campaign.as_str()
            ),
            ("news", "email", "launch")
        );
        assert_eq!(row.screen_width, 1280);
        assert_eq!(row.browser, "Firefox");
        assert_eq!(row.browser_version, "128");
        assert_eq!(row.os, "Windows");
        assert_eq!(row.device, "desktop");
        assert_eq!((row.country.as_str(), row.city.as_str()), ("GB", "London"));
        assert_ne!(row.visitor_id, 0);
        assert_eq!(
            row.ip_prefix, "",
            "no prefix unless the operator turns it on"
        );
        let text = format!("{row:?}");
        for secret in ["a@b.c", "secret", "81.2.69.142", "Gecko/20100101"] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
    }

    #[test]
    fn referrer_names_the_source_without_a_campaign() {
        let run = Run::new(config(), None);
        let row = run.one(r#"{"n":"pageview","u":"https://example.com/","d":"example.com","r":"https://news.ycombinator.com/item?id=1"}"#);
        assert_eq!(row.referrer, "news.ycombinator.com/item");
        assert_eq!(row.referrer_source, "Hacker News");
        let row = run.one(r#"{"n":"pageview","u":"https://example.com/b","d":"example.com","r":"https://www.example.com/a"}"#);
        assert_eq!(
            (row.referrer.as_str(), row.referrer_source.as_str()),
            ("", "")
        );
    }

    #[test]
    fn ip_prefix_only_when_enabled() {
        let mut c = config();
        c.collector.store_ip_prefix = true;
        c.collector.ipv4_prefix_length = 16;
        let row = Run::new(c, None)
            .one(r#"{"n":"pageview","u":"https://example.com/","d":"example.com"}"#);
        assert_eq!(row.ip_prefix, "81.2.0.0/16");
    }

    #[test]
    fn screen_width_refines_the_device() {
        let run = Run::new(config(), None);
        let mut f = facts();
        f.user_agent = IPHONE;
        let rows = run
            .go(
                r#"{"n":"pageview","u":"https://example.com/","d":"example.com","w":390}"#,
                f,
            )
            .unwrap();
        assert_eq!(rows[0].device, "mobile");
        assert_eq!(rows[0].os, "iOS");
    }

    #[test]
    fn hash_mode_keeps_the_fragment() {
        let run = Run::new(config(), None);
        let body = |h: bool| {
            format!(
                r#"{{"n":"pageview","u":"https://example.com/app#/settings","d":"example.com","h":{h}}}"#
            )
        };
        assert_eq!(run.one(&body(true)).pathname, "/app#/settings");
        assert_eq!(run.one(&body(false)).pathname, "/app");
    }

    #[test]
    fn props_and_engagement() {
        let run = Run::new(config(), None);
        let row = run.one(r#"{"n":"Signup","u":"https://example.com/","d":"example.com","p":{"plan":"pro","seats":2},"sd":50}"#);
        assert_eq!(row.prop_keys, ["plan", "seats"]);
        assert_eq!(row.prop_values, ["pro", "2"]);
        assert_eq!(
            row.scroll_depth, 0,
            "scroll depth only on engagement events"
        );
        let row = run.one(
            r#"{"n":"engagement","u":"https://example.com/","d":"example.com","sd":80,"e":5000}"#,
        );
        assert_eq!((row.scroll_depth, row.engagement_ms), (80, 5000));
    }

    #[test]
    fn one_row_per_known_site_each_with_its_own_visitor_id() {
        let run = Run::new(config(), None);
        let rows = run
            .go(r#"{"n":"pageview","u":"https://example.com/","d":"example.com,unknown.net,other.org"}"#, facts())
            .unwrap();
        let sites: Vec<_> = rows.iter().map(|r| r.site.as_str()).collect();
        assert_eq!(sites, ["example.com", "other.org"]);
        assert_ne!(rows[0].visitor_id, rows[1].visitor_id);
    }

    #[test]
    fn visitor_id_is_stable_for_one_visitor_and_differs_between_visitors() {
        let run = Run::new(config(), None);
        let body = r#"{"n":"pageview","u":"https://example.com/","d":"example.com"}"#;
        let a = run.go(body, facts()).unwrap()[0].visitor_id;
        assert_eq!(a, run.go(body, facts()).unwrap()[0].visitor_id);
        let mut other = facts();
        other.client_ip = "81.2.69.143".parse().unwrap();
        assert_ne!(a, run.go(body, other).unwrap()[0].visitor_id);
    }

    #[test]
    fn drops_with_reasons() {
        let run = Run::new(config(), None);
        let page = r#"{"n":"pageview","u":"https://example.com/","d":"example.com"}"#;
        assert_eq!(
            reason(run.go(
                r#"{"n":"pageview","u":"https://x.test/","d":"x.test"}"#,
                facts()
            )),
            DropReason::UnknownSite
        );
        for (signals, expected) in [
            (
                PrivacySignals {
                    do_not_track: true,
                    ..Default::default()
                },
                DropReason::DoNotTrack,
            ),
            (
                PrivacySignals {
                    global_privacy_control: true,
                    ..Default::default()
                },
                DropReason::GlobalPrivacyControl,
            ),
            (
                PrivacySignals {
                    opt_out_cookie: true,
                    ..Default::default()
                },
                DropReason::OptOutCookie,
            ),
        ] {
            let mut f = facts();
            f.signals = signals;
            let dropped = run.go(page, f).unwrap_err();
            assert_eq!(dropped.reason, expected);
            assert_eq!(dropped.site.as_deref(), Some("example.com"));
        }
        let mut bot = facts();
        bot.user_agent = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert!(matches!(reason(run.go(page, bot)), DropReason::Bot(_)));
        let mut empty = facts();
        empty.user_agent = "";
        assert!(matches!(reason(run.go(page, empty)), DropReason::Bot(_)));
        assert_eq!(
            reason(run.go(r#"{"n":"pageview","u":"https://example.com/","d":"example.com","r":"https://semalt.com/"}"#, facts())),
            DropReason::ReferrerSpam
        );
        assert_eq!(
            reason(run.go(
                r#"{"n":"pageview","u":"https://other.org/private/x","d":"other.org"}"#,
                facts()
            )),
            DropReason::ExcludedPath
        );
        assert_eq!(
            reason(run.go(
                r#"{"n":"pageview","u":"https://evil.test/","d":"strict.net"}"#,
                facts()
            )),
            DropReason::HostnameNotAllowed
        );
        let mut office = facts();
        office.client_ip = "203.0.113.9".parse().unwrap();
        assert_eq!(
            reason(run.go(
                r#"{"n":"pageview","u":"https://strict.net/","d":"strict.net"}"#,
                office
            )),
            DropReason::ExcludedIp
        );
    }

    #[test]
    fn honouring_can_be_switched_off() {
        let mut c = config();
        c.collector.honor_dnt = false;
        let run = Run::new(c, None);
        let mut f = facts();
        f.signals.do_not_track = true;
        assert!(run
            .go(
                r#"{"n":"pageview","u":"https://example.com/","d":"example.com"}"#,
                f
            )
            .is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Whatever the request looks like, the pipeline answers with rows or a reason, and
            /// a stored row never holds the client's address or user agent.
            #[test]
            fn never_panics_and_never_leaks(
                ip in any::<[u8; 16]>(),
                v4 in any::<bool>(),
                user_agent in "[ -~]{0,200}",
                path in "/[ -~]{0,60}",
                referrer in prop::option::of("[ -~]{0,80}"),
                width in prop::option::of(any::<u16>()),
                dnt in any::<bool>(),
            ) {
                static RUN: std::sync::OnceLock<Run> = std::sync::OnceLock::new();
                let run = RUN.get_or_init(|| Run::new(config(), Some(geo())));
                let client_ip: IpAddr = if v4 {
                    std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).into()
                } else {
                    std::net::Ipv6Addr::from(ip).into()
                };
                let mut body = serde_json::json!({
                    "n": "pageview", "u": format!("https://example.com{path}"), "d": "example.com",
                });
                if let Some(r) = &referrer { body["r"] = r.clone().into(); }
                if let Some(w) = width { body["w"] = w.into(); }
                let Ok(beacon) = parse(body.to_string().as_bytes(), &BeaconLimits::default()) else {
                    return Ok(());
                };
                let facts = RequestFacts {
                    received_at: 1_700_000_000,
                    client_ip,
                    user_agent: &user_agent,
                    signals: PrivacySignals { do_not_track: dnt, ..Default::default() },
                };
                match process(&beacon, &facts, &run.enrichers, &run.salts) {
                    Ok(rows) => {
                        prop_assert!(!dnt, "DNT is honoured");
                        for p in rows {
                            let text = format!("{:?}", p.row);
                            prop_assert!(!text.contains(&client_ip.to_string()));
                            if user_agent.len() > 12 {
                                prop_assert!(!text.contains(&user_agent));
                            }
                            prop_assert_eq!(p.row.ip_prefix.as_str(), "");
                        }
                    }
                    Err(dropped) => prop_assert!(dropped.site.is_some()),
                }
            }
        }
    }
}
