#!/usr/bin/env bash
# The main job: three separate processes, each a tiny engine holding a
# replicated key-value map behind its own PostgresClusterBus, write keys,
# publish their changes (one large enough to spill) and apply each other's;
# then each prints a digest of its map, and the digests must match.
#
# Uses $DATABASE_URL when set, else a throwaway local PostgreSQL that this
# script starts and stops itself.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "==> building the example (build/release)"
cmake --preset release > /dev/null
cmake --build --preset release --target replicated_kv -j "$(nproc)" -- --no-print-directory > build/release-demo.log 2>&1 || {
  cat build/release-demo.log; exit 1; }

if [[ -z "${DATABASE_URL:-}" ]]; then
  state=build/release/demo-pg
  echo "==> starting a throwaway PostgreSQL"
  trap 'echo "==> stopping the throwaway PostgreSQL"; tests/pg/test_server.sh stop "$state"' EXIT
  tests/pg/test_server.sh start "$state"
  DATABASE_URL=$(cat "$state/url")
  export DATABASE_URL
fi

examples/replicated_kv/run_cluster.sh build/release/examples/replicated_kv
