//! Validation of a loaded configuration: every problem names its setting.

use super::*;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.clickhouse_url {
            ServerList::parse(url).map_err(|e| ConfigError::invalid("clickhouse_url", e))?;
        }
        if self.clickhouse_cluster.is_some() && self.clickhouse_url.is_none() {
            return Err(ConfigError::invalid(
                "clickhouse_cluster",
                "needs clickhouse_url: Glimpse starts only single servers itself",
            ));
        }
        if let Some(key) = &self.collector.salt_key {
            // Long enough that guessing it is no shortcut to the salts it seals.
            if key.expose().chars().count() < 32 {
                return Err(ConfigError::invalid(
                    "salt_key",
                    "must be at least 32 characters (e.g. `openssl rand -hex 32`)",
                ));
            }
        }
        let db = &self.clickhouse_database;
        if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::invalid(
                "clickhouse_database",
                "must be a non-empty name of letters, digits and _",
            ));
        }
        let mut seen = HashSet::new();
        // Each site was checked when it was parsed; the list must not repeat one.
        for site in &self.sites {
            if !seen.insert(site.domain.as_str()) {
                return Err(ConfigError::invalid(
                    "sites",
                    format!("site {:?} is listed twice", site.domain),
                ));
            }
        }
        crate::ip_prefix::validate_prefixes(
            self.collector.ipv4_prefix_length,
            self.collector.ipv6_prefix_length,
        )
        .map_err(|r| ConfigError::invalid("ipv4_prefix_length", r.to_string()))?;
        validate_paths(&self.collector.script_path, &self.collector.event_path)?;
        self.validate_tracker_ids()?;
        for (key, url) in [
            ("public_url", &self.public_url),
            ("dashboard_url", &self.query.dashboard_url),
        ] {
            if let Some(url) = url {
                let parsed =
                    url::Url::parse(url).map_err(|e| ConfigError::invalid(key, e.to_string()))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::invalid(key, "must be an http(s) URL"));
                }
            }
        }
        self.validate_mail()?;
        let positive = [
            ("batch_max_rows", self.collector.batch_max_rows as u64),
            ("batch_max_delay_ms", self.collector.batch_max_delay_ms),
            ("queue_capacity", self.collector.queue_capacity as u64),
            ("max_body_bytes", self.collector.max_body_bytes as u64),
            ("max_url_length", self.collector.max_url_length as u64),
            (
                "max_event_name_length",
                self.collector.max_event_name_length as u64,
            ),
            (
                "max_prop_key_length",
                self.collector.max_prop_key_length as u64,
            ),
            (
                "max_prop_value_length",
                self.collector.max_prop_value_length as u64,
            ),
            ("request_timeout_secs", self.request_timeout_secs),
            ("max_connections", self.collector.max_connections as u64),
            ("max_open_visits", self.collector.max_open_visits as u64),
            (
                "erase_limit_per_hour",
                u64::from(self.collector.erase_limit_per_hour),
            ),
            ("erase_batch_ms", self.collector.erase_batch_ms),
            (
                "query_max_connections",
                self.query.query_max_connections as u64,
            ),
            (
                "query_max_execution_secs",
                self.query.query_max_execution_secs,
            ),
        ];
        if self.max_header_bytes < 8192 {
            return Err(ConfigError::invalid(
                "max_header_bytes",
                "must be at least 8192",
            ));
        }
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }
}

impl Config {
    /// What only a collector needs on top of [`Config::load`]'s checks (the query service and
    /// the admin commands share the file and must not be refused for it): on a cluster, one
    /// source of visitor-id salts for every collector — `salt_key`, or a `salt_dir` the
    /// operator says is shared. Collectors with their own salt files would give one visitor
    /// one id per collector, silently counting them several times.
    pub fn validate_for_collector(&self) -> Result<(), ConfigError> {
        let own_salts = self.collector.salt_key.is_none() && !self.collector.salt_dir_shared;
        if self.clickhouse_cluster.is_some() && own_salts {
            return Err(ConfigError::invalid(
                "salt_key",
                "a collector on a cluster needs it (the same on every collector), or \
                 salt_dir_shared = true if every collector uses one salt_dir",
            ));
        }
        Ok(())
    }

    /// `smtp_url` must be a mail server's URL (its text is never put in the message: it may
    /// hold a password); `smtp_from` an address.
    fn validate_mail(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.query.smtp_url {
            let scheme_ok = url::Url::parse(url.expose())
                .is_ok_and(|u| matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some());
            if !scheme_ok {
                return Err(ConfigError::invalid(
                    "smtp_url",
                    "must be smtp://host[:port] or smtps://[user:password@]host[:port]",
                ));
            }
        }
        if let Some(from) = &self.query.smtp_from {
            let plain = from
                .split_once('@')
                .is_some_and(|(local, host)| !local.is_empty() && host.contains('.'))
                && !from
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<');
            if !plain {
                return Err(ConfigError::invalid(
                    "smtp_from",
                    "must be an e-mail address such as glimpse@stats.example.com",
                ));
            }
        }
        Ok(())
    }
}

/// The tracker's script and beacon paths: absolute, distinct, clear of the other endpoints.
fn validate_paths(script: &str, event: &str) -> Result<(), ConfigError> {
    const TAKEN: [&str; 8] = [
        "/health",
        "/ready",
        "/metrics",
        "/opt-out",
        "/opt-in",
        "/privacy",
        "/privacy/my-data",
        "/privacy/erase",
    ];
    for (key, path) in [("script_path", script), ("event_path", event)] {
        let plain =
            path.starts_with('/') && !path.contains(['?', '#', ' ']) && !TAKEN.contains(&path);
        if !plain {
            return Err(ConfigError::invalid(
                key,
                format!("{path:?} must start with / (no ? or #), and no other endpoint use it"),
            ));
        }
    }
    if !script.ends_with(".js") || script.len() < 5 {
        return Err(ConfigError::invalid("script_path", "must end with .js"));
    }
    if crate::tracker::variant_of(event, script).is_some() {
        return Err(ConfigError::invalid(
            "event_path",
            "must differ from script_path and its variants",
        ));
    }
    Ok(())
}

impl Config {
    /// Every Umami website id is a UUID and every Matomo `idsite` a number, each naming a
    /// configured site; other trackers' endpoints are not the Plausible event path.
    fn validate_tracker_ids(&self) -> Result<(), ConfigError> {
        let configured = |domain: &str| self.sites.iter().any(|s| s.domain == domain);
        for (id, domain) in &self.collector.umami_websites {
            let uuid = id.len() == 36
                && id.char_indices().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                });
            if !uuid {
                return Err(ConfigError::invalid(
                    "umami_websites",
                    format!("{id:?} is not an Umami website id (a UUID)"),
                ));
            }
            if !configured(domain) {
                return Err(ConfigError::invalid(
                    "umami_websites",
                    format!("website {id} maps to {domain:?}, which is not in `sites`"),
                ));
            }
        }
        for (id, domain) in &self.collector.matomo_sites {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::invalid(
                    "matomo_sites",
                    format!("{id:?} is not a Matomo idsite (a number)"),
                ));
            }
            if !configured(domain) {
                return Err(ConfigError::invalid(
                    "matomo_sites",
                    format!("idsite {id} maps to {domain:?}, which is not in `sites`"),
                ));
            }
        }
        const OTHER_TRACKERS: [&str; 4] = ["/api/send", "/matomo.php", "/piwik.php", "/pixel.gif"];
        if OTHER_TRACKERS.contains(&self.collector.event_path.as_str()) {
            return Err(ConfigError::invalid(
                "event_path",
                "is the endpoint of another tracker (Umami, Matomo, the pixel)",
            ));
        }
        Ok(())
    }
}
