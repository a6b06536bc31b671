#!/usr/bin/env bash
# Builds the fuzzers with clang (libFuzzer, ASan + UBSan) and runs them: the
# envelope decoder (what a peer can send a listener) for SECONDS, and the
# publisher's framing (tests/framing_check.hpp) for half as long, and the
# position decoder (what a client hands back to a bus) for a quarter.
#
#   scripts/fuzz.sh            60 seconds (what the test command runs)
#   scripts/fuzz.sh 3600       an hour
#
# The envelope fuzzer starts from the seeds in fuzz/corpus; each keeps what it
# finds in build/fuzz/corpus* (so a longer run picks up where the last one
# stopped). A failing input is written to build/fuzz/artifacts/ and the
# script fails.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

scripts/install-deps.sh

echo "==> [fuzz] configure and build (clang, libFuzzer)"
cmake --preset fuzz > /dev/null
cmake --build --preset fuzz -j "$(nproc)" -- --no-print-directory > build/fuzz-build.log 2>&1 || {
  cat build/fuzz-build.log; exit 1; }

mkdir -p build/fuzz/corpus build/fuzz/corpus-framing build/fuzz/corpus-position \
  build/fuzz/artifacts
cp -n fuzz/corpus/* build/fuzz/corpus/
cp -n fuzz/corpus-position/* build/fuzz/corpus-position/
echo "==> [fuzz] envelope_fuzzer for ${seconds} s"
# -max_len: a NOTIFY payload is under 8000 bytes; a little over exercises the
# size cap. -malloc_limit_mb: no single allocation may approach the limits
# (an input of a few KB never needs 64 MB): "no unbounded allocation".
build/fuzz/fuzz/envelope_fuzzer build/fuzz/corpus -max_total_time="$seconds" \
  -max_len=9000 -rss_limit_mb=2048 -malloc_limit_mb=64 -timeout=5 -print_final_stats=1 \
  -artifact_prefix=build/fuzz/artifacts/ 2> build/fuzz/fuzz.log || {
  tail -n 60 build/fuzz/fuzz.log; echo "==> [fuzz] FAILED: the input is in build/fuzz/artifacts/"; exit 1; }
grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" build/fuzz/fuzz.log | sed 's/^/    /'

framing_seconds=$(( (seconds + 1) / 2 ))
echo "==> [fuzz] framing_fuzzer for ${framing_seconds} s"
build/fuzz/fuzz/framing_fuzzer build/fuzz/corpus-framing -max_total_time="$framing_seconds" \
  -max_len=512 -rss_limit_mb=2048 -timeout=5 -print_final_stats=1 \
  -artifact_prefix=build/fuzz/artifacts/framing- 2> build/fuzz/framing-fuzz.log || {
  tail -n 60 build/fuzz/framing-fuzz.log; echo "==> [fuzz] FAILED: the input is in build/fuzz/artifacts/"; exit 1; }
grep -E "^stat::number_of_executed_units" build/fuzz/framing-fuzz.log | sed 's/^/    /'
position_seconds=$(( (seconds + 3) / 4 ))
echo "==> [fuzz] position_fuzzer for ${position_seconds} s"
build/fuzz/fuzz/position_fuzzer build/fuzz/corpus-position -max_total_time="$position_seconds" \
  -max_len=4096 -rss_limit_mb=2048 -malloc_limit_mb=64 -timeout=5 -print_final_stats=1 \
  -artifact_prefix=build/fuzz/artifacts/position- 2> build/fuzz/position-fuzz.log || {
  tail -n 60 build/fuzz/position-fuzz.log; echo "==> [fuzz] FAILED: the input is in build/fuzz/artifacts/"; exit 1; }
grep -E "^stat::number_of_executed_units" build/fuzz/position-fuzz.log | sed 's/^/    /'
echo "==> [fuzz] no crash, hang, leak or unbounded allocation; framing exact, positions canonical"
