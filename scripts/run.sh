#!/usr/bin/env bash
# Runs Glimpse (collector on :8000, query service on :8001) on a fresh Debian machine: installs
# what is missing, builds the release binary, and starts `glimpse serve`, which starts its own
# ClickHouse under ./glimpse-data unless GLIMPSE_CLICKHOUSE_URL is set. Ctrl-C stops everything.
# Extra arguments go to `glimpse serve`; configure with GLIMPSE_* variables or GLIMPSE_CONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_base
echo "==> building glimpse (release)"
cargo build --release --locked
if [ -z "${GLIMPSE_SITES:-}" ] && [ -z "${GLIMPSE_CONFIG:-}" ]; then
    echo "==> no GLIMPSE_SITES set: accepting beacons for 'localhost' only (set GLIMPSE_SITES=your.site)"
    export GLIMPSE_SITES=localhost
fi
exec target/release/glimpse serve "$@"
