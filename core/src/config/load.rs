//! Loading: defaults, then the TOML file, then the `GLIMPSE_*` environment and secret files.

use super::*;

impl Config {
    /// Loads defaults, then the TOML file (if given), then the `GLIMPSE_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile { path: path.into() });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only known keys: other GLIMPSE_* variables (GLIMPSE_CONFIG, GLIMPSE_LOG) are not
        // settings. String settings are taken verbatim (a password may look like a number);
        // the others are parsed by figment as TOML-like values.
        let defaults = Self::defaults_by_key();
        let typed: Vec<&str> = defaults
            .iter()
            .filter(|(_, v)| v.is_number() || v.is_boolean())
            .map(|(k, _)| k.as_str())
            .collect();
        figment = figment.merge(Env::prefixed("GLIMPSE_").only(&typed));
        for (key, default) in &defaults {
            if default.is_number() || default.is_boolean() {
                continue;
            }
            if let Ok(value) = std::env::var(format!("GLIMPSE_{}", key.to_uppercase())) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        for key in SECRET_KEYS {
            if let Some(value) = secret_from_file(key)? {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        // The parts are flattened into one table, which serde cannot check for unknown keys
        // (`deny_unknown_fields` does not work with `flatten`): a misspelt key is refused here.
        let known = Self::keys();
        let given: BTreeMap<String, figment::value::Value> = figment.extract().map_err(describe)?;
        if let Some(key) = given.keys().find(|k| !known.contains(*k)) {
            let source = file.map_or("the configuration".into(), |p| p.display().to_string());
            return Err(ConfigError::Parse(format!(
                "`{key}` (from {source}): unknown setting; glimpse.example.toml lists them all"
            )));
        }
        // Each part on its own first: inside a flattened part serde's errors lose the key, so
        // a bad value is named by these.
        figment.extract::<CollectorConfig>().map_err(describe)?;
        figment.extract::<QueryConfig>().map_err(describe)?;
        let mut config: Config = figment.extract().map_err(describe)?;
        config.take_url_credentials()?;
        config.validate()?;
        Ok(config)
    }

    /// `http://user:password@host:8123` is read as the URL without them plus
    /// `clickhouse_user`/`clickhouse_password`, so that the URL can be logged and the
    /// credentials go in headers. In a list of servers, every URL that has credentials must
    /// have the same: Glimpse has one user for the cluster.
    fn take_url_credentials(&mut self) -> Result<(), ConfigError> {
        let Some(text) = &self.clickhouse_url else {
            return Ok(());
        };
        let mut servers =
            ServerList::parse(text).map_err(|e| ConfigError::invalid("clickhouse_url", e))?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let mut found: Option<(String, Option<String>)> = None;
        for url in servers.urls_mut() {
            if url.username().is_empty() && url.password().is_none() {
                continue;
            }
            let these = (decode(url.username()), url.password().map(decode));
            if found.as_ref().is_some_and(|f| *f != these) {
                return Err(ConfigError::invalid(
                    "clickhouse_url",
                    "the servers' URLs hold different credentials: Glimpse uses one user \
                     and password for every server",
                ));
            }
            found = Some(these);
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        let Some((user, password)) = found else {
            return Ok(());
        };
        if !user.is_empty() {
            self.clickhouse_user = user;
        }
        if let Some(password) = password {
            self.clickhouse_password = password.into();
        }
        self.clickhouse_url = Some(servers.to_string());
        Ok(())
    }

    /// The keys a file may hold, each of which is also `GLIMPSE_<KEY>` in the environment.
    pub fn keys() -> HashSet<String> {
        Self::defaults_by_key()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    fn defaults_by_key() -> Vec<(String, serde_json::Value)> {
        match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

/// Settings that may instead be read from a file named by `GLIMPSE_<KEY>_FILE` (Docker and
/// Kubernetes secrets), so that the secret is in no process environment.
pub const SECRET_KEYS: [&str; 4] = [
    "clickhouse_password",
    "clickhouse_url",
    "smtp_url",
    "salt_key",
];

/// The content of the file `GLIMPSE_<KEY>_FILE` names, without its final line break.
fn secret_from_file(key: &'static str) -> Result<Option<String>, ConfigError> {
    let var = format!("GLIMPSE_{}_FILE", key.to_uppercase());
    let Some(path) = std::env::var_os(&var) else {
        return Ok(None);
    };
    if std::env::var_os(format!("GLIMPSE_{}", key.to_uppercase())).is_some() {
        return Err(ConfigError::invalid(
            key,
            format!(
                "set either GLIMPSE_{} or {var}, not both",
                key.to_uppercase()
            ),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::invalid(
            key,
            format!("{var}: cannot read {}: {e}", Path::new(&path).display()),
        )
    })?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}

/// One line per problem, naming the setting and where its value came from.
fn describe(error: figment::Error) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            // The environment wins over the file, so a set variable is where the value came from.
            let env_name = format!("GLIMPSE_{}", key.to_uppercase());
            let source = match &e.metadata {
                _ if !key.is_empty() && std::env::var_os(&env_name).is_some() => env_name,
                Some(m) => match &m.source {
                    Some(figment::Source::File(path)) => path.display().to_string(),
                    _ => m.name.to_string(),
                },
                None => "configuration".to_string(),
            };
            if key.is_empty() {
                format!("{} (in {source})", e.kind)
            } else {
                format!("`{key}` (from {source}): {}", e.kind)
            }
        })
        .collect();
    ConfigError::Parse(lines.join("; "))
}

/// Tracker site ids → site domains: a table, a list of `id=domain`, or a comma-separated
/// string of them (the environment). Ids are trimmed and lower-cased (UUIDs come in both cases).
pub(super) fn deserialize_id_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Map {
        Csv(String),
        List(Vec<String>),
        Table(BTreeMap<String, String>),
    }
    let pair = |item: &str| -> Result<(String, String), D::Error> {
        let (id, domain) = item
            .split_once('=')
            .ok_or_else(|| serde::de::Error::custom(format!("{item:?} is not id=domain")))?;
        Ok((id.trim().to_string(), domain.trim().to_string()))
    };
    let pairs: Vec<(String, String)> = match Map::deserialize(d)? {
        Map::Csv(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(pair)
            .collect::<Result<_, _>>()?,
        Map::List(items) => items.iter().map(|i| pair(i)).collect::<Result<_, _>>()?,
        Map::Table(table) => table.into_iter().collect(),
    };
    Ok(pairs
        .into_iter()
        .map(|(id, domain)| (id.trim().to_ascii_lowercase(), domain.trim().to_string()))
        .collect())
}

/// Trusted proxies: a list, or a comma-separated string (the environment), parsed.
pub(super) fn deserialize_proxies<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<crate::proxies::ProxyNets, D::Error> {
    crate::proxies::ProxyNets::parse(&deserialize_list(d)?).map_err(serde::de::Error::custom)
}

/// A list, or a comma-separated string (the environment).
pub(super) fn deserialize_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Csv(String),
        Items(Vec<String>),
    }
    Ok(match List::deserialize(d)? {
        List::Csv(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        List::Items(items) => items,
    })
}

/// `sites` may be a comma-separated string (the environment), a list of domains, or a list
/// of tables (`[[sites]]` with `domain = …`).
pub(super) fn deserialize_sites<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Site>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Domain(String),
        Table(SiteConfig),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sites {
        Csv(String),
        List(Vec<Entry>),
    }
    let sites: Vec<SiteConfig> = match Sites::deserialize(d)? {
        Sites::Csv(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(SiteConfig::new)
            .collect(),
        Sites::List(entries) => entries
            .into_iter()
            .map(|e| match e {
                Entry::Domain(domain) => SiteConfig::new(domain),
                Entry::Table(site) => site,
            })
            .collect(),
    };
    sites
        .into_iter()
        .map(|site| Site::parse(site).map_err(serde::de::Error::custom))
        .collect()
}
