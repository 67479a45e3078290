//! The site model: one [`Site`] per website Glimpse records, parsed once from its
//! configuration ([`SiteConfig`], the file's form) into its rules, goals and time zone; and
//! [`Sites`], the registry the collector and the query service look sites up in.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::goals::{parse_goals, Goal, GoalError};

/// Why a site's configuration cannot be used; the message names the site and the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("{0:?} is not a site domain: use the bare lower-case host name, e.g. example.com")]
    Domain(String),
    #[error("site {site}: timezone {name:?} is not an IANA time zone name such as Europe/Berlin")]
    Timezone { site: String, name: String },
    #[error("site {0}: share_token must be at least 16 characters")]
    ShareToken(String),
    #[error("site {site}: exclude_ips: {entry:?} is not an address or CIDR")]
    ExcludeIp { site: String, entry: String },
    #[error("site {site}: exclude_paths: {entry:?}: {reason}")]
    ExcludePath {
        site: String,
        entry: String,
        reason: String,
    },
    #[error("site {site}: {source}")]
    Goal { site: String, source: GoalError },
    #[error("site {0}: retention_days must be at least 1")]
    Retention(String),
}

/// One site, parsed: every value checked and compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The domain the tracker sends in `d`, e.g. `example.com`, and the site's id: its rows,
    /// goals, links, members and keys are stored under it. A renamed site keeps it as its id
    /// (and keeps accepting it) and goes by [`Site::renamed_to`].
    pub domain: String,
    /// The domain a stored site goes by since it was renamed (the Sites API's `domain`
    /// change); shown, put in its snippet and accepted beside `domain`.
    pub renamed_to: Option<String>,
    /// An IANA time zone name the bundled database knows (checked).
    pub timezone: String,
    /// The secret of the site's public share link, if any (at least 16 characters).
    pub share_token: Option<String>,
    /// Days events are kept.
    pub retention_days: u32,
    /// The conversions the stats API reports.
    pub goals: Vec<Goal>,
    /// Named read-only links added at run time (the Sites API, the dashboard), beside
    /// `share_token` from the configuration.
    pub shared_links: Vec<SharedLink>,
    /// Page host names whose events count, normalised; empty: any host.
    allowed_hostnames: Vec<String>,
    allow_subdomains: bool,
    exclude_ips: Vec<IpNet>,
    exclude_paths: Vec<glob::Pattern>,
}

impl Site {
    /// A site with default rules (UTC, 180 days, any host, no goals). The domain is taken as
    /// given; [`Site::parse`] checks it.
    pub fn new(domain: impl Into<String>) -> Self {
        let config = SiteConfig::new(domain);
        Self {
            domain: config.domain,
            renamed_to: None,
            timezone: config.timezone,
            share_token: None,
            retention_days: config.retention_days,
            goals: Vec::new(),
            shared_links: Vec::new(),
            allowed_hostnames: Vec::new(),
            allow_subdomains: true,
            exclude_ips: Vec::new(),
            exclude_paths: Vec::new(),
        }
    }

    /// Checks and compiles a site's configuration.
    pub fn parse(config: SiteConfig) -> Result<Self, SiteError> {
        validate_domain(&config.domain)?;
        let site = config.domain.clone();
        validate_timezone(&config.timezone).map_err(|_| SiteError::Timezone {
            site: site.clone(),
            name: config.timezone.clone(),
        })?;
        if config.share_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(SiteError::ShareToken(site));
        }
        let exclude_ips = config
            .exclude_ips
            .iter()
            .map(|entry| {
                parse_net(entry).ok_or_else(|| SiteError::ExcludeIp {
                    site: site.clone(),
                    entry: entry.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        let exclude_paths = config
            .exclude_paths
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| SiteError::ExcludePath {
                    site: site.clone(),
                    entry: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let goals = parse_goals(&config.goals).map_err(|source| SiteError::Goal {
            site: site.clone(),
            source,
        })?;
        if config.retention_days == 0 {
            return Err(SiteError::Retention(site));
        }
        Ok(Self {
            domain: config.domain,
            renamed_to: None,
            timezone: config.timezone,
            share_token: config.share_token,
            retention_days: config.retention_days,
            goals,
            shared_links: Vec::new(),
            allowed_hostnames: config
                .allowed_hostnames
                .iter()
                .map(|h| normalize_host(h))
                .collect(),
            allow_subdomains: config.allow_subdomains,
            exclude_ips,
            exclude_paths,
        })
    }

    /// The site's configuration as a file would hold it.
    pub fn to_config(&self) -> SiteConfig {
        SiteConfig {
            domain: self.domain.clone(),
            timezone: self.timezone.clone(),
            share_token: self.share_token.clone(),
            allowed_hostnames: self.allowed_hostnames.clone(),
            allow_subdomains: self.allow_subdomains,
            exclude_ips: self.exclude_ips.iter().map(ToString::to_string).collect(),
            exclude_paths: self
                .exclude_paths
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            retention_days: self.retention_days,
            goals: self.goals.iter().map(|g| g.name.clone()).collect(),
        }
    }

    /// The domain the site goes by: its new one when renamed, else its id.
    pub fn current_domain(&self) -> &str {
        self.renamed_to.as_deref().unwrap_or(&self.domain)
    }

    /// Whether `token` opens this site's stats read-only: the configured `share_token` or one
    /// of its shared links. Compared in time independent of where the texts differ.
    pub fn accepts_share_token(&self, token: &str) -> bool {
        self.share_token
            .iter()
            .chain(self.shared_links.iter().map(|l| &l.token))
            .any(|t| same_secret(t, token))
    }

    /// Whether a page on `host` (normalised: lower case, no `www.`) belongs to the site.
    pub fn allows_hostname(&self, host: &str) -> bool {
        self.allowed_hostnames.is_empty()
            || self.allowed_hostnames.iter().any(|allowed| {
                host == allowed
                    || (self.allow_subdomains
                        && host.len() > allowed.len()
                        && host.ends_with(allowed.as_str())
                        && host.as_bytes()[host.len() - allowed.len() - 1] == b'.')
            })
    }

    /// The host names (normalised) whose pages count; empty: any host.
    pub fn allowed_hostnames(&self) -> &[String] {
        &self.allowed_hostnames
    }

    pub fn excludes_ip(&self, ip: IpAddr) -> bool {
        self.exclude_ips.iter().any(|net| net.contains(&ip))
    }

    pub fn excludes_path(&self, path: &str) -> bool {
        self.exclude_paths.iter().any(|p| p.matches(path))
    }
}

impl Serialize for Site {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_config().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Site {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Site::parse(SiteConfig::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// A named read-only link to a site's stats (`?auth=TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedLink {
    pub name: String,
    pub token: String,
}

/// Compares secrets by their SHA-256 digests, so the time taken does not tell how much of a
/// guess was right.
pub fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

fn parse_net(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A site domain: lower-case letters, digits, dots and dashes, at most 253 characters.
pub fn validate_domain(domain: &str) -> Result<(), SiteError> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SiteError::Domain(domain.to_string()))
    }
}

/// Whether `name` is an IANA time zone name the bundled database knows, e.g. `Europe/Berlin`.
pub fn validate_timezone(name: &str) -> Result<(), TimezoneError> {
    jiff::tz::TimeZone::get(name)
        .map(|_| ())
        .map_err(|_| TimezoneError(name.to_string()))
}

/// A time zone name the bundled database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timezone {0:?} is not an IANA time zone name such as Europe/Berlin")]
pub struct TimezoneError(pub String);

/// The registry of sites by domain, which the collector and the query service read.
#[derive(Debug, Clone, Default)]
pub struct Sites {
    by_domain: BTreeMap<String, Site>,
    /// A renamed site's new domain → its id (its `domain`).
    renamed: BTreeMap<String, String>,
}

impl Sites {
    pub fn new(sites: &[Site]) -> Self {
        let mut all = Self::default();
        for site in sites {
            all.add_if_absent(site.clone());
        }
        all
    }

    /// The site for `domain` (its id or, renamed, its new domain), which the beacon parser has
    /// already lower-cased. An id wins over another site's new name.
    pub fn get(&self, domain: &str) -> Option<&Site> {
        self.by_domain.get(domain).or_else(|| {
            self.renamed
                .get(domain)
                .and_then(|id| self.by_domain.get(id))
        })
    }

    /// Adds `site` unless a site with its domain is already known (the configuration wins
    /// over sites added at run time). Its new name, if renamed, counts unless taken.
    pub fn add_if_absent(&mut self, site: Site) {
        if self.by_domain.contains_key(&site.domain) {
            return;
        }
        if let Some(name) = &site.renamed_to {
            if self.get(name).is_none() {
                self.renamed.insert(name.clone(), site.domain.clone());
            }
        }
        self.by_domain.insert(site.domain.clone(), site);
    }

    /// Removes the site with this domain (its id), if any.
    pub fn remove(&mut self, domain: &str) -> Option<Site> {
        self.renamed.retain(|_, id| id != domain);
        self.by_domain.remove(domain)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Site> {
        self.by_domain.values()
    }

    pub fn len(&self) -> usize {
        self.by_domain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

/// Lower-case host without a leading `www.`, so `www.example.com` and `example.com` are one.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match host.strip_prefix("www.") {
        Some(rest) => rest.to_string(),
        None => host,
    }
}

/// One site whose traffic Glimpse records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site's domain as the tracker sends it in `d`, e.g. `example.com`.
    pub domain: String,
    /// IANA time zone in which the stats API buckets days and hours and reads "today",
    /// e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// A secret that gives read-only access to this site's stats without an API key
    /// (`?auth=TOKEN`), for a public share link. Unset (default): no share link.
    #[serde(default)]
    pub share_token: Option<String>,
    /// Page host names whose events count (`www.` is ignored). Empty: any host.
    #[serde(default)]
    pub allowed_hostnames: Vec<String>,
    /// Also accept subdomains of the allowed host names. Default true.
    #[serde(default = "yes")]
    pub allow_subdomains: bool,
    /// Client networks (CIDRs or addresses) whose events are dropped, e.g. your office.
    #[serde(default)]
    pub exclude_ips: Vec<String>,
    /// Page paths whose events are dropped; `*` matches anything, e.g. `/admin/*`.
    #[serde(default)]
    pub exclude_paths: Vec<String>,
    /// Days events are kept; older ones are deleted by the retention job. Default 180.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Conversions the stats API reports (`event:goal`, `conversion_rate`): a custom event's
    /// name (`"Signup"`) or `"Visit /path"` for page views, `*` matching any characters
    /// (`"Visit /blog/*"`). Default none.
    #[serde(default)]
    pub goals: Vec<String>,
}

fn default_retention_days() -> u32 {
    180
}

fn yes() -> bool {
    true
}

fn utc() -> String {
    "UTC".into()
}

impl SiteConfig {
    /// A site with default rules.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            allow_subdomains: true,
            timezone: utc(),
            retention_days: default_retention_days(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(id: &str, to: &str) -> Site {
        Site {
            renamed_to: Some(to.into()),
            ..Site::new(id)
        }
    }

    #[test]
    fn a_renamed_site_answers_to_both_names_and_an_id_wins_over_a_new_name() {
        let sites = Sites::new(&[
            Site::new("conf.example"),
            renamed("old.example", "new.example"),
            // Its new name is another site's id: the id wins, the name is not used.
            renamed("b.example", "conf.example"),
        ]);
        assert_eq!(sites.get("new.example").unwrap().domain, "old.example");
        assert_eq!(sites.get("old.example").unwrap().domain, "old.example");
        assert_eq!(
            sites.get("new.example").unwrap().current_domain(),
            "new.example"
        );
        assert_eq!(sites.get("conf.example").unwrap().domain, "conf.example");
        assert_eq!(sites.len(), 3);

        let mut sites = sites;
        sites.remove("old.example");
        assert!(sites.get("new.example").is_none(), "its name goes with it");
        assert!(sites.get("old.example").is_none());
    }

    fn rules(f: impl FnOnce(&mut SiteConfig)) -> Site {
        let mut site = SiteConfig::new("example.com");
        f(&mut site);
        Site::parse(site).unwrap()
    }

    #[test]
    fn any_hostname_by_default() {
        assert!(rules(|_| {}).allows_hostname("anything.test"));
    }

    #[test]
    fn allowed_hostnames_with_and_without_subdomains() {
        let r = rules(|s| s.allowed_hostnames = vec!["www.Example.com".into()]);
        assert!(r.allows_hostname("example.com"));
        assert!(r.allows_hostname("blog.example.com"));
        assert!(!r.allows_hostname("badexample.com"));
        assert!(!r.allows_hostname("example.com.evil.test"));
        let r = rules(|s| {
            s.allowed_hostnames = vec!["example.com".into()];
            s.allow_subdomains = false;
        });
        assert!(r.allows_hostname("example.com"));
        assert!(!r.allows_hostname("blog.example.com"));
    }

    #[test]
    fn excluded_networks_and_paths() {
        let r = rules(|s| {
            s.exclude_ips = vec!["203.0.113.0/24".into(), "2001:db8::1".into()];
            s.exclude_paths = vec!["/admin/*".into(), "/preview".into()];
        });
        assert!(r.excludes_ip("203.0.113.77".parse().unwrap()));
        assert!(!r.excludes_ip("203.0.114.1".parse().unwrap()));
        assert!(r.excludes_ip("2001:db8::1".parse().unwrap()));
        assert!(r.excludes_path("/admin/users"));
        assert!(r.excludes_path("/preview"));
        assert!(!r.excludes_path("/previews"));
        assert!(!r.excludes_path("/blog"));
    }

    #[test]
    fn share_tokens_from_the_configuration_and_from_links_must_match_exactly() {
        let mut site = rules(|s| s.share_token = Some("share-me-0123456789".into()));
        site.shared_links.push(SharedLink {
            name: "press".into(),
            token: "link-token-abcdefghij".into(),
        });
        assert!(site.accepts_share_token("share-me-0123456789"));
        assert!(site.accepts_share_token("link-token-abcdefghij"));
        for other in [
            "share-me-0123456780",
            "share-me-012345678",
            "share-me-01234567890",
            "Share-me-0123456789",
            "press",
            "",
        ] {
            assert!(!site.accepts_share_token(other), "{other:?}");
        }
        assert!(!Site::new("x.com").accepts_share_token(""));
    }

    #[test]
    fn bad_rules_name_the_entry() {
        let mut site = SiteConfig::new("example.com");
        site.exclude_ips = vec!["10.0.0.0/33".into()];
        assert!(Site::parse(site.clone())
            .unwrap_err()
            .to_string()
            .contains("10.0.0.0/33"));
        let mut site = SiteConfig::new("example.com");
        site.exclude_paths = vec!["/[".into()];
        assert!(Site::parse(site.clone())
            .unwrap_err()
            .to_string()
            .contains("exclude_paths"));
    }
}
