//! The configured sites and their rules, looked up by the domain a beacon names.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::SiteConfig;

/// One site's rules, compiled once from its configuration.
#[derive(Debug, Clone)]
pub struct SiteRules {
    pub domain: String,
    allowed_hostnames: Vec<String>,
    allow_subdomains: bool,
    exclude_ips: Vec<IpNet>,
    exclude_paths: Vec<glob::Pattern>,
}

impl SiteRules {
    /// Compiles a site's configuration; the error names the bad entry.
    pub fn new(site: &SiteConfig) -> Result<Self, String> {
        let exclude_ips = site
            .exclude_ips
            .iter()
            .map(|entry| {
                parse_net(entry)
                    .ok_or_else(|| format!("exclude_ips: {entry:?} is not an address or CIDR"))
            })
            .collect::<Result<_, _>>()?;
        let exclude_paths = site
            .exclude_paths
            .iter()
            .map(|p| glob::Pattern::new(p).map_err(|e| format!("exclude_paths: {p:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            domain: site.domain.clone(),
            allowed_hostnames: site
                .allowed_hostnames
                .iter()
                .map(|h| super::referrer::normalize_host(h))
                .collect(),
            allow_subdomains: site.allow_subdomains,
            exclude_ips,
            exclude_paths,
        })
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

    pub fn excludes_ip(&self, ip: IpAddr) -> bool {
        self.exclude_ips.iter().any(|net| net.contains(&ip))
    }

    pub fn excludes_path(&self, path: &str) -> bool {
        self.exclude_paths.iter().any(|p| p.matches(path))
    }
}

fn parse_net(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Sites by domain. Built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Sites {
    by_domain: HashMap<String, SiteRules>,
}

impl Sites {
    /// Compiles every site; configuration validation has already rejected bad rules.
    pub fn new(sites: &[SiteConfig]) -> Result<Self, String> {
        let by_domain = sites
            .iter()
            .map(|s| Ok((s.domain.clone(), SiteRules::new(s)?)))
            .collect::<Result<_, String>>()?;
        Ok(Self { by_domain })
    }

    /// The site for `domain`, which the beacon parser has already lower-cased.
    pub fn get(&self, domain: &str) -> Option<&SiteRules> {
        self.by_domain.get(domain)
    }

    pub fn len(&self) -> usize {
        self.by_domain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(f: impl FnOnce(&mut SiteConfig)) -> SiteRules {
        let mut site = SiteConfig::new("example.com");
        f(&mut site);
        SiteRules::new(&site).unwrap()
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
    fn bad_rules_name_the_entry() {
        let mut site = SiteConfig::new("example.com");
        site.exclude_ips = vec!["10.0.0.0/33".into()];
        assert!(SiteRules::new(&site).unwrap_err().contains("10.0.0.0/33"));
        let mut site = SiteConfig::new("example.com");
        site.exclude_paths = vec!["/[".into()];
        assert!(SiteRules::new(&site).unwrap_err().contains("exclude_paths"));
    }
}
