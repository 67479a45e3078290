//! Other trackers' protocols, mapped into the same [`Beacon`] as Plausible's `POST /api/event`,
//! so that everything after the mapping (client address from the socket, opt-outs, bots,
//! salts, visits, spool) is shared: `umami` (`POST /api/send`), `matomo` (`/matomo.php`,
//! `/piwik.php`) and `pixel` (`GET /pixel.gif`, no JavaScript).
//!
//! Each mapping is a pure function of the request's payload. None of them ever reads a client
//! address or user agent from the payload (Matomo's `cip`/`ua`/`uadata`, Umami's `ip` and
//! `userAgent`): the collector only believes the connection and its trusted proxies. Visitor
//! ids that trackers send (Matomo's `_id`/`uid`/`cid`, Umami's `id` and its session cache) are
//! ignored too: the daily pseudonym replaces them, so nothing links a visitor across days.

pub mod matomo;
pub mod pixel;
pub mod umami;

use std::collections::BTreeMap;

use url::Url;

use super::beacon::{Beacon, BeaconError, BeaconLimits};

/// A tracker's site id (Umami website UUID, Matomo `idsite`) → the Glimpse site domain.
pub type SiteIds = BTreeMap<String, String>;

/// What one request of another protocol asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// An event to record, exactly like a Plausible beacon.
    Event(Beacon),
    /// A request the protocol defines but Glimpse does not record (a Matomo heartbeat, an
    /// Umami `identify`); answered as the original server would, counted by `reason`.
    Ignored(&'static str),
}

/// Why a request of another protocol was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The tracker's site id is not mapped to a Glimpse site (`umami_websites`,
    /// `matomo_sites`); the same `403` as an unknown `d`.
    #[error("site id {0:?} is not mapped to a configured site")]
    UnknownSite(String),
    /// A field is missing, malformed or over a limit.
    #[error("{0}")]
    Invalid(#[from] BeaconError),
}

impl MapError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid(BeaconError {
            field: field.into(),
            reason: reason.into(),
        })
    }
}

/// A beacon before the checks every protocol shares.
#[derive(Debug, Clone, Default)]
pub(crate) struct Draft {
    pub name: String,
    /// Absolute http(s) page URL.
    pub url: String,
    pub domain: String,
    pub referrer: Option<String>,
    pub screen_width: Option<u16>,
    pub props: Vec<(String, String)>,
}

impl Draft {
    /// Applies the limits of `POST /api/event` (same settings, same errors) and builds the
    /// beacon. `fields` names the protocol's own fields for `(name, url, referrer, props)`.
    pub(crate) fn finish(
        self,
        limits: &BeaconLimits,
        fields: [&str; 4],
    ) -> Result<Beacon, MapError> {
        let [name_field, url_field, referrer_field, props_field] = fields;
        if self.name.is_empty() {
            return Err(MapError::invalid(
                name_field,
                "event name must not be empty",
            ));
        }
        if self.name.chars().count() > limits.max_event_name_length {
            return Err(MapError::invalid(
                name_field,
                format!(
                    "event name is longer than {} characters",
                    limits.max_event_name_length
                ),
            ));
        }
        check_length(url_field, &self.url, limits.max_url_length)?;
        let url = page_url(&self.url).ok_or_else(|| {
            MapError::invalid(url_field, "page URL must be an absolute http(s) URL")
        })?;
        let referrer = self.referrer.filter(|r| !r.is_empty());
        if let Some(r) = &referrer {
            check_length(referrer_field, r, limits.max_url_length)?;
        }
        let props: Vec<_> = self
            .props
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if props.len() > limits.max_props {
            return Err(MapError::invalid(
                props_field,
                format!("more than {} properties", limits.max_props),
            ));
        }
        for (key, value) in &props {
            let field = format!("{props_field}.{key}");
            if key.is_empty() {
                return Err(MapError::invalid(
                    props_field,
                    "property names must not be empty",
                ));
            }
            check_length(&field, key, limits.max_prop_key_length)?;
            check_length(&field, value, limits.max_prop_value_length)?;
        }
        Ok(Beacon {
            name: self.name,
            url,
            domains: vec![self.domain],
            referrer,
            screen_width: self.screen_width,
            hash_mode: false,
            props,
            interactive: true,
            scroll_depth: None,
            engagement_ms: None,
        })
    }
}

fn check_length(field: &str, value: &str, max: usize) -> Result<(), MapError> {
    if value.chars().count() > max {
        return Err(MapError::invalid(
            field,
            format!("longer than {max} characters"),
        ));
    }
    Ok(())
}

/// An absolute http(s) URL with a host, or nothing.
pub(crate) fn page_url(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host_str().is_some()).then_some(url)
}

/// The width of a `WIDTHxHEIGHT` screen size (Umami's `screen`, Matomo's `res`).
pub(crate) fn screen_width(text: &str) -> Option<u16> {
    text.split(['x', 'X', '×']).next()?.trim().parse().ok()
}

/// A link's URL as Glimpse's tracker reports a file download: without query and fragment
/// (they often carry tokens).
pub(crate) fn without_query(link: &str) -> String {
    match Url::parse(link) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => link
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// The names Glimpse's and Plausible's trackers use, so the stats API and dashboard treat
/// other trackers' clicks the same way.
pub const OUTBOUND_LINK: &str = "Outbound Link: Click";
pub const FILE_DOWNLOAD: &str = "File Download";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screen_sizes() {
        assert_eq!(screen_width("1366x768"), Some(1366));
        assert_eq!(screen_width("390X844"), Some(390));
        assert_eq!(screen_width("wide"), None);
        assert_eq!(screen_width("99999x1"), None);
        assert_eq!(screen_width(""), None);
    }

    #[test]
    fn download_urls_lose_their_query() {
        assert_eq!(
            without_query("https://e.com/f/report.pdf?token=abc#p2"),
            "https://e.com/f/report.pdf"
        );
        assert_eq!(without_query("/f/a.zip?x=1"), "/f/a.zip");
    }
}
