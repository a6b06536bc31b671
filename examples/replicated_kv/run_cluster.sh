#!/usr/bin/env bash
# Runs three replicated_kv processes against one PostgreSQL and checks that
# their digests match.
#   run_cluster.sh PATH/TO/replicated_kv
# Server: $DATABASE_URL, else the test fixture's ($SYNCBUS_TEST_STATE_DIR/url).
set -euo pipefail
binary=${1:?usage: run_cluster.sh PATH/TO/replicated_kv}
db=${DATABASE_URL:-}
if [[ -z "$db" && -n "${SYNCBUS_TEST_STATE_DIR:-}" && -f "$SYNCBUS_TEST_STATE_DIR/url" ]]; then
  db=$(cat "$SYNCBUS_TEST_STATE_DIR/url")
fi
if [[ -z "$db" ]]; then
  echo "run_cluster.sh: set DATABASE_URL to a PostgreSQL connection string" >&2
  exit 2
fi
channel="replicated_kv_$$_$RANDOM"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "==> starting 3 processes on channel $channel"
pids=()
for name in alpha bravo charlie; do
  "$binary" --db "$db" --name "$name" --peers 3 --channel "$channel" > "$out/$name.out" 2> "$out/$name.err" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
for name in alpha bravo charlie; do
  cat "$out/$name.out"
  if [[ -s "$out/$name.err" ]]; then sed "s/^/  $name stderr: /" "$out/$name.err" >&2; fi
done
if [[ $failed -ne 0 ]]; then
  echo "==> FAILED: a process exited with an error" >&2
  exit 1
fi
digests=$(grep -h ' digest=' "$out"/*.out | awk '{print $2, $3}' | sort -u)
if [[ $(wc -l <<< "$digests") -ne 1 || -z "$digests" ]]; then
  echo "==> FAILED: the digests differ" >&2
  exit 1
fi
echo "==> OK: all 3 processes hold the same map ($digests)"
