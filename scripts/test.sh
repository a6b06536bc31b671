#!/usr/bin/env bash
# Builds syncbus and runs every test, three times over: a warnings-as-errors
# build (and one clang-tidy check), then under AddressSanitizer +
# UndefinedBehaviorSanitizer, then under ThreadSanitizer; then fuzzes the
# envelope decoder for 60 s (libFuzzer).
# Tests that need PostgreSQL get a throwaway server that ctest starts and
# stops (or SYNCBUS_TEST_DATABASE_URL's).
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh ci         one stage: ci, asan, tsan or fuzz
#   SYNCBUS_FUZZ_SECONDS=600 scripts/test.sh fuzz   a longer fuzzing run
set -euo pipefail
cd "$(dirname "$0")/.."

presets=("$@")
[[ ${#presets[@]} -gt 0 ]] || presets=(ci asan tsan fuzz)

scripts/install-deps.sh

echo "==> format: clang-format --dry-run -Werror"
# The project's sources: git's list in a clone, the tree's in a plain copy
# (a release tarball), build directories left out.
sources() {
  if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    git ls-files --cached --others --exclude-standard -- '*.hpp' '*.cpp'
  else
    find . -path ./build -prune -o \( -name '*.hpp' -o -name '*.cpp' \) -type f -print
  fi
}
sources | xargs clang-format --dry-run -Werror

# Whatever happens, no test server outlives this script.
cleanup() {
  for state in build/*/pg-state; do
    [[ -d "$state" ]] && tests/pg/test_server.sh stop "$state" > /dev/null 2>&1 || true
  done
}
trap cleanup EXIT

jobs=$(nproc)
passed=0
for preset in "${presets[@]}"; do
  if [[ "$preset" == fuzz ]]; then
    scripts/fuzz.sh "${SYNCBUS_FUZZ_SECONDS:-60}"
    continue
  fi
  echo "==> [$preset] configure"
  cmake --preset "$preset" > /dev/null
  echo "==> [$preset] build"
  cmake --build --preset "$preset" -j "$jobs" -- --no-print-directory > "build/$preset-build.log" 2>&1 || {
    cat "build/$preset-build.log"; exit 1; }
  if [[ "$preset" == ci ]]; then
    # One check of .clang-tidy is enforced: three or more adjacent parameters
    # a caller could swap unnoticed. (Its others are advice, not yet clean.)
    echo "==> [ci] clang-tidy: bugprone-easily-swappable-parameters"
    printf '%s\n' src/*.cpp cli/*.cpp tools/*.cpp bench/*.cpp |
      xargs -P "$jobs" -n 8 clang-tidy -p build/ci --extra-arg=-std=c++17 --quiet \
        --checks='-*,bugprone-easily-swappable-parameters' --warnings-as-errors='*' 2> /dev/null
  fi
  echo "==> [$preset] test"
  ctest --preset "$preset" 2>&1 | tee "build/$preset-ctest.log"
  # ctest's summary: "100% tests passed, 0 tests failed out of 57"
  total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "build/$preset-ctest.log" | tail -n 1)
  passed=$((passed + ${total:-0}))
done
echo "==> all tests passed in ${#presets[@]} builds (${presets[*]})"
echo "tests: $passed passed, 0 failed"
