#!/usr/bin/env bash
# Runs every test on a fresh Debian machine: installs what is missing (ClickHouse, a Python
# venv with chdb for current-ClickHouse checks), then the whole workspace's tests. The tests
# start their own ClickHouse servers on loopback with temporary data directories.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_base
ensure_apt python3-venv
if ! .venv/bin/python -c 'import chdb' >/dev/null 2>&1; then
    echo "==> creating .venv with chdb-core (current ClickHouse, in-process)"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet chdb-core
fi
export GLIMPSE_TEST_PYTHON="$PWD/.venv/bin/python"
cargo test --workspace --locked "$@"
