//! Protection of the visitor's own pages against other websites: a state-changing request
//! (`POST /privacy/erase`, `/opt-out`, `/opt-in`) that a browser says comes from another site
//! is refused, and the HTML pages may be framed only by the collector itself and the
//! configured sites (`Content-Security-Policy: frame-ancestors`).
//!
//! Allowed: requests whose `Origin` is the collector's own origin (`public_url`, or without
//! it the `Host` the request was addressed to) or one of a configured site's origins
//! (`https://`/`http://` + the site's domain or one of its `allowed_hostnames`, each with and
//! without `www.`, on any port), so the opt-out page proxied onto the site's own domain or
//! embedded in its privacy policy keeps working; without `Origin`, requests whose
//! `Sec-Fetch-Site` is absent, `same-origin` or `none`. Requests with neither header come from
//! non-browser clients (curl, scripts), which no other website can make a visitor send.

use http::header::{self, HeaderMap, HeaderValue};

use glimpse_core::config::Config;
use glimpse_core::site::Site;

/// The origins allowed to post to the collector and to frame its pages.
#[derive(Debug, Clone)]
pub struct FirstParty {
    /// Host names (lower case) of the configured sites.
    site_hosts: Vec<String>,
    /// `scheme://host[:port]` of `public_url`, if set.
    public_origin: Option<String>,
    /// The `Content-Security-Policy` value for HTML pages.
    frame_ancestors: HeaderValue,
}

impl FirstParty {
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.sites.iter(), config.public_url.as_deref())
    }

    /// For these sites (the configured ones and those added at run time) and `public_url`.
    pub fn new<'a>(sites: impl Iterator<Item = &'a Site>, public_url: Option<&str>) -> Self {
        let mut site_hosts: Vec<String> = Vec::new();
        for site in sites {
            let names = std::iter::once(&site.domain).chain(&site.renamed_to);
            for host in names.chain(site.allowed_hostnames()) {
                let host = host.trim().to_ascii_lowercase();
                let bare = host.strip_prefix("www.").unwrap_or(&host).to_string();
                // `www.` is the same site, as for the site's hostname rules.
                for host in [bare.clone(), format!("www.{bare}")] {
                    if !bare.is_empty() && !site_hosts.contains(&host) {
                        site_hosts.push(host);
                    }
                }
            }
        }
        let public_origin = public_url
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization());
        let mut csp = String::from("frame-ancestors 'self'");
        for host in &site_hosts {
            csp.push_str(&format!(" https://{host} http://{host}"));
        }
        // Domains were validated at start-up; a value a header cannot hold falls back to
        // the strictest policy rather than none.
        let frame_ancestors = HeaderValue::from_str(&csp)
            .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'self'"));
        Self {
            site_hosts,
            public_origin,
            frame_ancestors,
        }
    }

    /// `Err(reason)` when the request comes from another website.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            return if self.allows_origin(origin.as_bytes(), headers.get(header::HOST)) {
                Ok(())
            } else {
                Err("cross-site request refused: Origin is not this service or one of its sites")
            };
        }
        // Without Origin (browsers send it on every POST, so this is rare) only the browser's
        // word on where the request comes from is left.
        match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
            None | Some(b"same-origin") | Some(b"none") => Ok(()),
            Some(_) => Err("cross-site request refused: Sec-Fetch-Site says another site"),
        }
    }

    fn allows_origin(&self, origin: &[u8], host: Option<&HeaderValue>) -> bool {
        // `null` (sandboxed frames, opaque origins) is nobody we know.
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        if !matches!(scheme, "http" | "https") || authority.is_empty() || authority.contains('/') {
            return false;
        }
        // The collector's own origin: `public_url` when set; else the host the browser
        // addressed this request to. With `public_url` the Host header is not trusted, so a
        // page on a name that merely resolves to the collector (DNS rebinding) is refused.
        match self.public_origin.as_deref() {
            Some(public) if public == origin => return true,
            Some(_) => {}
            None if host
                .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(authority.as_bytes())) =>
            {
                return true
            }
            None => {}
        }
        // A configured site, on any port (development servers).
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        self.site_hosts.iter().any(|h| h == host)
    }

    /// Adds `Content-Security-Policy: frame-ancestors …` to an HTML page.
    pub fn frame_only_first_party(&self, headers: &mut HeaderMap) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            self.frame_ancestors.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_core::site::SiteConfig;

    fn first_party() -> FirstParty {
        FirstParty::from_config(&Config {
            sites: vec![Site::parse(SiteConfig {
                allowed_hostnames: vec!["shop.example.com".into()],
                ..SiteConfig::new("example.com")
            })
            .unwrap()],
            public_url: Some("https://stats.example.net/".into()),
            ..Config::default()
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            header::HOST,
            HeaderValue::from_static("collector.test:8000"),
        );
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn other_sites_are_refused() {
        let fp = first_party();
        for pairs in [
            &[("origin", "https://evil.example")][..],
            &[("origin", "null")],
            &[("origin", "https://example.com.evil.example")],
            &[("origin", "https://evilexample.com")],
            &[("origin", "https://collector.test:8001")],
            &[("origin", "https://stats.example.net:444")],
            // With public_url set, the Host header does not make an origin ours.
            &[("origin", "http://collector.test:8000")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "same-origin"),
            ],
        ] {
            assert!(fp.check(&headers(pairs)).is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn first_party_and_non_browsers_are_allowed() {
        let fp = first_party();
        for pairs in [
            &[][..],
            &[("origin", "https://stats.example.net")],
            &[("origin", "https://example.com")],
            &[("origin", "https://www.example.com")],
            &[("origin", "http://example.com:3000")],
            &[
                ("origin", "https://shop.example.com"),
                ("sec-fetch-site", "cross-site"),
            ],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
        ] {
            assert!(fp.check(&headers(pairs)).is_ok(), "{pairs:?}");
        }
    }

    #[test]
    fn without_public_url_the_host_is_the_own_origin() {
        let fp = FirstParty::from_config(&Config {
            sites: vec![Site::new("example.com")],
            ..Config::default()
        });
        let own = headers(&[("origin", "http://collector.test:8000")]);
        assert!(fp.check(&own).is_ok());
        let other_port = headers(&[("origin", "http://collector.test:8001")]);
        assert!(fp.check(&other_port).is_err());
    }

    #[test]
    fn frame_ancestors_names_the_sites() {
        let mut map = HeaderMap::new();
        first_party().frame_only_first_party(&mut map);
        assert_eq!(
            map[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors 'self' https://example.com http://example.com \
             https://www.example.com http://www.example.com \
             https://shop.example.com http://shop.example.com \
             https://www.shop.example.com http://www.shop.example.com"
        );
    }
}
