//! The configured sites, looked up by the domain a beacon names.

use std::collections::HashMap;

use crate::config::SiteConfig;

/// Sites by domain. Built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Sites {
    by_domain: HashMap<String, SiteConfig>,
}

impl Sites {
    pub fn new(sites: &[SiteConfig]) -> Self {
        Self {
            by_domain: sites
                .iter()
                .map(|s| (s.domain.clone(), s.clone()))
                .collect(),
        }
    }

    /// The site for `domain`, which the beacon parser has already lower-cased.
    pub fn get(&self, domain: &str) -> Option<&SiteConfig> {
        self.by_domain.get(domain)
    }

    pub fn len(&self) -> usize {
        self.by_domain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}
