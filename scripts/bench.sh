#!/usr/bin/env bash
# Builds the benchmark (optimised) and runs it against a throwaway PostgreSQL
# started for the occasion (or DATABASE_URL's server when it is set), then
# stops that server. Arguments go to syncbus_bench, e.g.
#
#   scripts/bench.sh                      about a minute, the default runs
#   scripts/bench.sh --seconds 600 --sizes 200 --threads 16   a 10-minute soak
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh > /dev/null
cmake --preset release > /dev/null
cmake --build --preset release -j "$(nproc)" --target syncbus_bench > /dev/null

url=${DATABASE_URL:-}
if [[ -z "$url" ]]; then
  state=$(mktemp -d /tmp/syncbus-bench.XXXXXX)
  trap 'tests/pg/test_server.sh stop "$state" > /dev/null 2>&1 || true; rm -rf "$state"' EXIT
  tests/pg/test_server.sh start "$state" >&2  # stdout is the figures' (--json)
  url=$(cat "$state/url")
fi
build/release/bench/syncbus_bench "$url" "$@"
