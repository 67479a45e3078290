//! The deployment files: the systemd unit is accepted by `systemd-analyze verify` and keeps
//! its hardening; the reverse-proxy examples in docker/README.md send every path the
//! collector serves to the collector.

use std::path::Path;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The value of `key=` in the unit, if set (the last assignment wins, as in systemd).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .last()
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = repo_file("packaging/glimpse.service");
    for (key, value) in [
        ("ExecStart", "/usr/local/bin/glimpse serve"),
        ("EnvironmentFile", "-/etc/glimpse/glimpse.env"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "glimpse"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(unit_value(&unit, key), Some(value), "{key}");
    }
    // Nothing writable beside the state directory.
    assert_eq!(unit_value(&unit, "ReadWritePaths"), None);
    // systemd must not kill serve before its own graceful shutdown is over.
    let stop: u64 = unit_value(&unit, "TimeoutStopSec").unwrap().parse().unwrap();
    let shutdown = glimpse_collector::Config::default().shutdown_timeout_secs;
    assert!(stop > shutdown, "TimeoutStopSec={stop} <= {shutdown}");

    // verify checks that ExecStart's binary exists: this build's, in a copy of the unit.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("glimpse.service");
    let binary = env!("CARGO_BIN_EXE_glimpse");
    std::fs::write(&copy, unit.replace("/usr/local/bin/glimpse", binary)).unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown or misspelt keys are only warned about, with exit status 0.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        output.status
    );
}
