#!/usr/bin/env bash
# Builds the production image from docker/Dockerfile with buildah, without a Docker engine.
#
#   docker/build-image.sh [--tag NAME] [--binary PATH]
#
#   --tag NAME      the image's name (default localhost/glimpse:local)
#   --binary PATH   put this already built `glimpse` in the image instead of compiling it in the
#                   build stage (GLIMPSE_BINARY_STAGE=prebuilt). It must be a Linux x86-64 binary
#                   linked against a glibc no newer than bookworm's (2.36), e.g. one built on
#                   Debian 12. The tests use this, so that they do not compile Glimpse twice.
#
# The Dockerfile's base images, debian:bookworm-slim and (without --binary) rust:1-bookworm, are
# pulled from Docker Hub when it can be reached. When it cannot, equivalents are made on this
# machine and stored under the same names, so the Dockerfile itself is unchanged:
#   - debian:bookworm-slim: `debootstrap --variant=minbase bookworm`, with the docs, man pages
#     and translations left out as in the official image;
#   - rust:1-bookworm: that, plus gcc, libc6-dev, pkg-config, the Rust toolchain installed on
#     this machine (`rustc --print sysroot`), as no toolchain can be downloaded in the build,
#     and the certificate authorities this machine added (/usr/local/share/ca-certificates),
#     so that cargo reaches crates.io the way this machine does;
#   - node:22-bookworm-slim (the GeoIP stage, which only runs `npm pack`): debian:bookworm-slim
#     plus the Node.js and npm installed on this machine when they are a self-contained install
#     that runs on bookworm (the official binaries, NodeSource's packages), else Debian's
#     `nodejs` and `npm` packages, and the certificate authorities this machine added, given
#     to Node as NODE_EXTRA_CA_CERTS, so that npm reaches the package registry the way this
#     machine does.
# Each carries the label io.glimpse.base=local. The debootstrap root filesystem is cached in
# GLIMPSE_IMAGE_CACHE (default /var/cache/glimpse-image as root, else ~/.cache/glimpse-image),
# and buildah keeps the images and the build's layers, so a second run takes seconds.
#
# Needs root (or rootless buildah), buildah and, to make the bases, debootstrap (Debian
# packages `buildah` and `debootstrap`). Prints the image's size at the end.
set -euo pipefail

tag=localhost/glimpse:local
binary=""
while [ $# -gt 0 ]; do
    case $1 in
        --tag) tag=${2:?--tag needs a name}; shift 2 ;;
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$binary" ]; then
    { [ -f "$binary" ] && [ -x "$binary" ]; } || { echo "--binary $binary: not an executable file" >&2; exit 1; }
    binary=$(realpath "$binary")
fi
cd "$(dirname "$0")/.."

runtime_base=docker.io/library/debian:bookworm-slim
builder_base=docker.io/library/rust:1-bookworm
# The GeoIP stage's base, from the same registry and namespace as the Debian one.
node_base=${runtime_base%/*}/node:22-bookworm-slim
image_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ "$(id -u)" -eq 0 ]; then
    cache=${GLIMPSE_IMAGE_CACHE:-/var/cache/glimpse-image}
else
    cache=${GLIMPSE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/glimpse-image}
fi
# Every buildah step runs its commands with chroot isolation: no container runtime is needed.
export BUILDAH_ISOLATION=chroot

command -v buildah >/dev/null || { echo "buildah is not installed (apt-get install buildah)" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
    rm -rf "$work"
    if [ -n "${before+set}" ]; then
        local leftover
        leftover=$(buildah containers --quiet --notruncate | sort | comm -13 <(echo "$before") -)
        # shellcheck disable=SC2086 # one ID a line
        [ -z "$leftover" ] || buildah rm $leftover >/dev/null
    fi
}
trap cleanup EXIT

have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# pull_or_keep NAME: pulls NAME (or a newer version of it); 1 when the registry cannot be
# reached and no copy is stored.
pull_or_keep() {
    if timeout 120 buildah pull --policy always --quiet "$1" >/dev/null 2>"$work/pull.log"; then
        echo "==> $1: pulled"
        return 0
    fi
    if have_image "$1"; then
        echo "==> $1: registry unreachable ($(tail -n1 "$work/pull.log")); using the stored image"
        return 0
    fi
    echo "==> $1: registry unreachable ($(tail -n1 "$work/pull.log")); making it locally"
    return 1
}

# The minbase root filesystem as a tar file, made once and cached.
rootfs_tar() {
    local tar="$cache/debian-bookworm-minbase.tar"
    if [ -s "$tar" ]; then
        echo "$tar"
        return
    fi
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
    local root="$work/rootfs"
    echo "==> debootstrap --variant=minbase bookworm (a few minutes; cached in $cache)" >&2
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
        tail -n 20 "$work/debootstrap.log" >&2
        exit 1
    }
    # What the official slim image does (debuerreotype-slimify): no docs, man pages or
    # translations, now or from packages installed later; apt's downloads and lists deleted.
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{groff,info,linda,lintian,locale,man}/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
    # The official image's sources: the release, its updates and the security archive.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    mkdir -p "$cache"
    # /dev, /proc and /sys stay empty: the container runtime provides them.
    tar --numeric-owner -C "$root" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* \
        -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    echo "$tar"
}

make_runtime_base() {
    local tar ctr
    tar=$(rootfs_tar)
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$tar" / >/dev/null
    buildah config --env PATH="$image_path" --cmd bash --label io.glimpse.base=local "$ctr"
    buildah commit --quiet --rm "$ctr" "$runtime_base" >/dev/null
    echo "==> made $runtime_base from $tar"
}

make_builder_base() {
    local sysroot ctr
    command -v rustc >/dev/null || { echo "no Rust toolchain on this machine to copy into $builder_base" >&2; exit 1; }
    sysroot=$(rustc --print sysroot)
    # A rustup toolchain is a directory of its own; Debian's rustc (sysroot /usr) is too old.
    if [ "$sysroot" = /usr ] || [ ! -x "$sysroot/bin/cargo" ]; then
        echo "the Rust toolchain at $sysroot cannot be copied into $builder_base: install one with rustup" >&2
        exit 1
    fi
    ctr=$(buildah from --pull=false "$runtime_base")
    buildah run --isolation chroot "$ctr" -- sh -c 'apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            ca-certificates gcc libc6-dev pkg-config >/dev/null \
        && rm -rf /var/lib/apt/lists/*'
    # The certificate authorities this machine added to its own trust store (say, a proxy's):
    # the build stage downloads crates through the same network. The runtime image keeps
    # Debian's list only.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        buildah copy --quiet "$ctr" /usr/local/share/ca-certificates /usr/local/share/ca-certificates >/dev/null
        buildah run --isolation chroot "$ctr" -- update-ca-certificates >/dev/null
    fi
    # The toolchain without its documentation (share/): rustc, cargo and the standard library.
    for dir in bin lib libexec; do
        buildah copy --quiet "$ctr" "$sysroot/$dir" "/usr/local/rust/$dir" >/dev/null
    done
    buildah config --env PATH="/usr/local/rust/bin:$image_path" --env CARGO_HOME=/usr/local/cargo \
        --label io.glimpse.base=local "$ctr"
    buildah commit --quiet --rm "$ctr" "$builder_base" >/dev/null
    echo "==> made $builder_base from $runtime_base and $("$sysroot/bin/rustc" --version)"
}

# The extra certificate authorities (see make_builder_base) as one PEM file, for Node.
extra_ca_bundle() {
    local crt
    for crt in /usr/local/share/ca-certificates/*.crt; do
        [ -f "$crt" ] && cat "$crt" && echo
    done
    return 0
}

# copy_host_node CTR: this machine's Node.js and npm into CTR, where the official image has
# them (/usr/local/bin, /usr/local/lib/node_modules). 1 when they are not a self-contained
# install that runs there (Debian's own nodejs, say: its npm is spread over /usr/share/nodejs).
copy_host_node() {
    local ctr=$1 node npm
    if ! node=$(command -v node) || ! npm=$(command -v npm); then
        echo "no Node.js with npm on this machine" >"$work/node.log"
        return 1
    fi
    node=$(realpath "$node")
    # npm's package directory: the `npm` command is a link to its bin/npm-cli.js.
    npm=$(dirname "$(dirname "$(realpath "$npm")")")
    if [ ! -f "$npm/bin/npm-cli.js" ]; then
        echo "$npm is not npm's package directory" >"$work/node.log"
        return 1
    fi
    buildah copy --quiet --chmod 0755 "$ctr" "$node" /usr/local/bin/node >/dev/null
    buildah copy --quiet "$ctr" "$npm" /usr/local/lib/node_modules/npm >/dev/null
    buildah run --isolation chroot "$ctr" -- sh -c \
        'ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
        && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx'
    # Both must run there: the binary's libraries must be bookworm's, npm must support it.
    buildah run --isolation chroot "$ctr" -- sh -c 'node --version && npm --version' >"$work/node.log" 2>&1
}

make_node_base() {
    local ctr how
    ctr=$(buildah from --pull=false "$runtime_base")
    if copy_host_node "$ctr"; then
        how="this machine's Node.js $(head -n1 "$work/node.log") and npm $(tail -n1 "$work/node.log")"
    else
        echo "==> this machine's Node.js and npm cannot be used ($(tail -n1 "$work/node.log")); installing Debian's nodejs and npm"
        buildah rm "$ctr" >/dev/null
        ctr=$(buildah from --pull=false "$runtime_base")
        buildah run --isolation chroot "$ctr" -- sh -c 'apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                ca-certificates nodejs npm >/dev/null \
            && rm -rf /var/lib/apt/lists/*'
        how="Debian's nodejs and npm"
    fi
    buildah config --env PATH="$image_path" --cmd node --label io.glimpse.base=local "$ctr"
    # The certificate authorities this machine added (see make_builder_base), for npm's
    # downloads; Node takes them on top of its own list.
    extra_ca_bundle >"$work/extra-ca.pem"
    if [ -s "$work/extra-ca.pem" ]; then
        buildah copy --quiet --chmod 0644 "$ctr" "$work/extra-ca.pem" /usr/local/share/glimpse-extra-ca.pem >/dev/null
        buildah config --env NODE_EXTRA_CA_CERTS=/usr/local/share/glimpse-extra-ca.pem "$ctr"
    fi
    buildah run --isolation chroot "$ctr" -- npm --version >/dev/null 2>"$work/node.log" || {
        cat "$work/node.log" >&2
        buildah rm "$ctr" >/dev/null
        echo "npm does not run in the $node_base made from $how" >&2
        exit 1
    }
    buildah commit --quiet --rm "$ctr" "$node_base" >/dev/null
    echo "==> made $node_base from $runtime_base and $how"
}

pull_or_keep "$runtime_base" || make_runtime_base
pull_or_keep "$node_base" || make_node_base
build_args=(--build-arg GLIMPSE_BINARY_STAGE=build)
if [ -n "$binary" ]; then
    # A build context of its own, holding only the binary (the main context, the repository,
    # leaves target/ out).
    mkdir "$work/prebuilt"
    cp "$binary" "$work/prebuilt/glimpse"
    build_args=(--build-arg GLIMPSE_BINARY_STAGE=prebuilt --build-context "glimpse-prebuilt=$work/prebuilt")
else
    pull_or_keep "$builder_base" || make_builder_base
fi

# buildah 1.28 with --layers leaves behind the working container of a stage that has no
# instructions (`FROM ${GLIMPSE_BINARY_STAGE} AS binary`); cleanup removes those made by the build.
before=$(buildah containers --quiet --notruncate | sort)
echo "==> buildah bud -f docker/Dockerfile -t $tag ${build_args[*]}"
# --format docker: the OCI format has no HEALTHCHECK. --layers: reuse unchanged steps.
buildah bud --isolation chroot --format docker --layers --pull=false \
    --ignorefile docker/Dockerfile.dockerignore \
    "${build_args[@]}" -f docker/Dockerfile -t "$tag" .

size=$(buildah images --format '{{.Size}}' "$tag" | head -n1)
echo "==> built $tag: $size"
