# shellcheck shell=bash
# Shared by scripts/run.sh and scripts/test.sh: install what a fresh Debian machine lacks.
# Sourced, not run.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
# ensure_apt PACKAGE... — installs the Debian packages that are not installed yet.
ensure_apt() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing ${missing[*]} (apt)"
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ensure_rust — cargo on PATH, installing the stable toolchain with rustup when it is missing.
# A rustup installation not on PATH yet (a fresh login shell) is found through its env file.
ensure_rust() {
    local env_file="${CARGO_HOME:-$HOME/.cargo}/env"
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$env_file" ]; then
        # shellcheck source=/dev/null
        . "$env_file"
    fi
    if command -v cargo >/dev/null 2>&1; then return 0; fi
    echo "==> Rust is not installed; installing the stable toolchain with rustup"
    ensure_apt curl ca-certificates build-essential
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt -c clippy
    # shellcheck source=/dev/null
    . "$env_file"
}

# absolutize VAR... — makes relative paths in these environment variables absolute against the
# current directory: the scripts then change to the repository root, wherever they were
# called from, and a path the caller gave must keep meaning what it meant to the caller.
absolutize() {
    local var value
    for var in "$@"; do
        value="${!var:-}"
        if [ -n "$value" ] && [ "${value#/}" = "$value" ]; then
            export "$var=$PWD/$value"
        fi
    done
}

# cargo_target_dir — where cargo puts builds: CARGO_TARGET_DIR, a .cargo/config setting, or
# ./target (asked from cargo itself, so every way of setting it is honoured).
cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps --offline 2>/dev/null \
        | grep -o '"target_directory":"[^"]*"' | head -n 1 | cut -d '"' -f 4
}

# ensure_base — what both the product and the tests need.
ensure_base() {
    ensure_apt ca-certificates build-essential pkg-config clickhouse-server clickhouse-client
    ensure_rust
}
