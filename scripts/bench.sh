#!/usr/bin/env bash
# Benchmarks (not run by CI, which only builds them): per-event micro-benchmarks of the ingest
# path, then the ingest load benchmark (bare hyper vs glimpse with the spool on and off, against
# a real ClickHouse it starts). Loopback only, bounded in time (about 3 minutes).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/scripts/lib.sh"
absolutize CARGO_TARGET_DIR
cd "$root"
ensure_base
echo "==> micro-benchmarks (ns/event)"
cargo bench --locked -p glimpse-collector --bench pipeline --bench spool -- --warm-up-time 1 --measurement-time 3
echo "==> ingest load benchmark"
cargo build --release --locked -p glimpse -p glimpse-bench
target="$(cargo_target_dir)"
"$target/release/glimpse-bench" ingest --glimpse "$target/release/glimpse" "$@"
