//! GeoIP: country, region and city of an address, from a MaxMind DB file (GeoLite2/GeoIP2 or
//! DB-IP Lite, City or Country edition).
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
         (use a GeoLite2/GeoIP2 or DB-IP Lite City or Country file)",
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

/// An open, checked GeoIP database, read whole into memory. `Send + Sync`: share it behind an
/// `Arc` and swap it to reload.
pub struct GeoIp {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
    errors: AtomicU64,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp")
            .field("path", &self.path)
            .field("database_type", &self.database_type())
            .field("lookup_errors", &self.lookup_errors())
            .finish()
    }
}

impl GeoIp {
    /// Reads and checks the database at `path`: it must be a MaxMind DB whose type names a
    /// City or Country edition (or Enterprise, a superset of City), and the records of a set
    /// of probe addresses plus the first records of the file must decode.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = Reader::from_source(bytes).map_err(|source| GeoError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
        let database_type = reader.metadata().database_type.to_ascii_lowercase();
        if !["city", "country", "enterprise"]
            .iter()
            .any(|kind| database_type.contains(kind))
        {
            return Err(GeoError::WrongType {
                path: path.to_path_buf(),
                database_type: reader.metadata().database_type.clone(),
            });
        }
        let geo = GeoIp {
            reader,
            path: path.to_path_buf(),
            errors: AtomicU64::new(0),
        };
        geo.probe().map_err(|(what, source)| GeoError::Corrupt {
            path: path.to_path_buf(),
            what,
            source,
        })?;
        Ok(geo)
    }

    /// Decodes the records of the probe addresses and the first [`PROBE_RECORDS`] records.
    fn probe(&self) -> Result<(), (String, MaxMindDbError)> {
        let ipv4_only = self.reader.metadata().ip_version == 4;
        for text in PROBE_ADDRESSES {
            let Ok(ip) = text.parse::<IpAddr>() else {
                continue;
            };
            if ipv4_only && ip.is_ipv6() {
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
            result
                .and_then(|record| record.decode::<geoip2::City>().map(drop))
                .map_err(|e| (what(), e))?;
        }
        Ok(())
    }

    /// Checks every record and the whole search tree (slow on full-size databases: seconds,
    /// and memory for the set of record offsets). For an operator's check, not start-up.
    pub fn verify(&self) -> Result<(), GeoError> {
        self.reader.verify().map_err(|source| GeoError::Corrupt {
            path: self.path.clone(),
            what: "full verification".to_string(),
            source,
        })
    }

    /// Where `ip` is. Addresses the database does not know, and lookup failures, give
    /// [`Location::default()`] (unknown); failures are counted in [`GeoIp::lookup_errors`]
    /// and logged at most once per [`WARN_EVERY`]. IPv4-mapped IPv6 is looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Location {
        let ip = ip.to_canonical();
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Location::default();
        }
        match self.decode(ip) {
            Ok(location) => location.unwrap_or_default(),
            Err(error) => {
                let count = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
                if count == 1 || count % WARN_EVERY == 0 {
                    // Never the address: it is personal data.
                    tracing::warn!(
                        path = %self.path.display(),
                        lookup_errors = count,
                        %error,
                        "GeoIP lookup failed, location recorded as unknown \
                         (logged once per {WARN_EVERY} failures)"
                    );
                }
                Location::default()
            }
        }
    }

    fn decode(&self, ip: IpAddr) -> Result<Option<Location>, MaxMindDbError> {
        let result = self.reader.lookup(ip)?;
        Ok(result
            .decode::<geoip2::City>()?
            .map(|record| Location::from_record(&record)))
    }

    /// Lookups that failed (corrupt records) since the database was opened.
    pub fn lookup_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The metadata's database type, e.g. `GeoLite2-City`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The file this database was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/geoip/");

    fn db(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    fn open(name: &str) -> GeoIp {
        GeoIp::open(&db(name)).unwrap_or_else(|e| panic!("{e}"))
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

    /// Golden vectors from GeoIP2-City-Test.json / GeoLite2-City-Test.json.
    fn city_vectors() -> Vec<(&'static str, Location)> {
        vec![
            ("81.2.69.142", loc("GB", "GB-ENG", "London")),
            ("81.2.69.150", loc("GB", "GB-ENG", "London")),
            ("216.160.83.56", loc("US", "US-WA", "Milton")),
            ("89.160.20.112", loc("SE", "SE-E", "Linköping")),
            ("89.160.20.200", loc("SE", "SE-E", "Linköping")),
            ("2.125.160.216", loc("GB", "GB-ENG", "Boxford")),
            ("175.16.199.5", loc("CN", "CN-22", "Changchun")),
            ("67.43.156.1", loc("BT", "", "")),
            ("2001:218::1", loc("JP", "", "")),
            ("2001:220::abcd", loc("KR", "", "")),
            ("2a02:d280::1", loc("CZ", "", "")),
            ("::ffff:81.2.69.142", loc("GB", "GB-ENG", "London")),
            ("8.8.8.8", Location::default()),
            ("127.0.0.1", Location::default()),
            ("2001:db8::1", Location::default()),
        ]
    }

    #[test]
    fn city_databases_give_golden_answers() {
        for name in ["GeoIP2-City-Test.mmdb", "GeoLite2-City-Test.mmdb"] {
            let geo = open(name);
            assert!(geo.database_type().contains("City"), "{name}");
            for (addr, want) in city_vectors() {
                assert_eq!(geo.lookup(ip(addr)), want, "{name}: {addr}");
            }
            assert_eq!(geo.lookup_errors(), 0);
        }
    }

    #[test]
    fn mapped_address_resolves_like_ipv4() {
        let geo = open("GeoIP2-City-Test.mmdb");
        assert_eq!(
            geo.lookup(ip("::ffff:81.2.69.142")),
            geo.lookup(ip("81.2.69.142"))
        );
        assert_eq!(
            geo.lookup(ip("::ffff:216.160.83.56")),
            loc("US", "US-WA", "Milton")
        );
    }

    #[test]
    fn country_database_gives_country_only() {
        let geo = open("GeoLite2-Country-Test.mmdb");
        assert!(geo.database_type().contains("Country"));
        assert_eq!(geo.lookup(ip("81.2.69.142")), loc("GB", "", ""));
        assert_eq!(geo.lookup(ip("216.160.83.56")), loc("US", "", ""));
        assert_eq!(geo.lookup(ip("89.160.20.112")), loc("SE", "", ""));
        assert_eq!(geo.lookup(ip("2001:218::1")), loc("JP", "", ""));
        assert_eq!(geo.lookup(ip("::ffff:81.2.69.142")), loc("GB", "", ""));
        assert_eq!(geo.lookup(ip("8.8.8.8")), Location::default());
    }

    #[test]
    fn asn_database_is_refused() {
        let path = db("GeoLite2-ASN-Test.mmdb");
        let err = GeoIp::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::WrongType { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("GeoLite2-ASN"), "{text}");
        assert!(text.contains("not a City or Country database"), "{text}");
        let err = GeoIp::open(&db("GeoIP2-Anonymous-IP-Test.mmdb")).unwrap_err();
        assert!(matches!(err, GeoError::WrongType { .. }), "{err:?}");
    }

    #[test]
    fn broken_database_is_refused_at_open() {
        let path = db("GeoIP2-City-Test-Broken-Double-Format.mmdb");
        let err = GeoIp::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::Corrupt { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("is corrupt"), "{text}");
    }

    #[test]
    fn broken_records_at_lookup_time_are_unknown_and_counted() {
        // Bypass the checks of `open`, as if the damage had escaped the probes.
        let path = db("GeoIP2-City-Test-Broken-Double-Format.mmdb");
        let geo = GeoIp {
            reader: Reader::from_source(std::fs::read(&path).unwrap()).unwrap(),
            path,
            errors: AtomicU64::new(0),
        };
        assert_eq!(geo.lookup(ip("81.2.69.142")), Location::default());
        assert_eq!(geo.lookup_errors(), 1);
        for _ in 0..WARN_EVERY + 1 {
            assert_eq!(geo.lookup(ip("216.160.83.56")), Location::default());
        }
        assert_eq!(geo.lookup_errors(), WARN_EVERY + 2);
        for (addr, _) in city_vectors() {
            let _ = geo.lookup(ip(addr));
        }
        assert!(geo.verify().is_err());
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let path = db("no-such-file.mmdb");
        let err = GeoIp::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("cannot read GeoIP database"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[test]
    fn non_database_file_is_an_error_naming_it() {
        let path = db("GeoIP2-City-Test.json");
        let err = GeoIp::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::Invalid { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("not a valid MaxMind DB file"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[test]
    fn valid_databases_pass_full_verification() {
        for name in [
            "GeoIP2-City-Test.mmdb",
            "GeoLite2-City-Test.mmdb",
            "GeoLite2-Country-Test.mmdb",
        ] {
            open(name).verify().unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
