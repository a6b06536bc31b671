#!/usr/bin/env bash
# Runs the shell commands of README.md as written, so that the README stays
# true. Every line of every ```sh block is accounted for:
#   "Three commands"        .ci/run runs each of them itself (checked here);
#   "Building by hand"      run here, installing into a throwaway $HOME;
#   "The `syncbus` command" run here against a throwaway PostgreSQL, with the
#                           program installed above on PATH and a `syncbus
#                           tail` listening on the default channel; a line
#                           that runs until Ctrl-C gets one after 2 s and must
#                           exit 0.
# Run by .ci/run after scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

work=$(mktemp -d /tmp/syncbus-readme.XXXXXX)
tail_pid=""
cleanup() {
  [[ -n "$tail_pid" ]] && kill -INT "$tail_pid" 2> /dev/null || true
  tests/pg/test_server.sh stop "$work/pg" > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# "heading<TAB>command" for every line of every sh block, the building ones
# first: the others use what they install.
awk '/^## /{heading=substr($0, 4)} /^```sh$/{inside=1; next} /^```$/{inside=0}
     inside && NF {print (heading == "Building by hand" ? 0 : 1) "\t" heading "\t" $0}' README.md |
  sort -s -t$'\t' -k1,1 | cut -f2- > "$work/commands"

failures=0
fail() { echo "check-readme: FAILED: $*" >&2; failures=$((failures + 1)); }

server_started=false
while IFS=$'\t' read -r heading command; do
  case "$heading" in
    "Three commands")
      bare=${command%%#*}; bare=${bare%"${bare##*[![:space:]]}"}
      grep -qxF "$bare" .ci/run || grep -qF "$bare " .ci/run || fail "CI does not run \"$bare\" (README, $heading)"
      echo "==> [readme] run by .ci/run: $bare"
      ;;
    "Building by hand")
      echo "==> [readme] $command"
      HOME="$work/home" bash -euo pipefail -c "$command" > "$work/out" 2>&1 || {
        tail -n 30 "$work/out"; fail "$command"; }
      ;;
    "The \`syncbus\` command")
      if [[ $server_started == false ]]; then
        tests/pg/test_server.sh start "$work/pg" > /dev/null
        export DATABASE_URL
        DATABASE_URL=$(cat "$work/pg/url")
        export PATH="$work/home/.local/bin:$PATH"
        syncbus tail > /dev/null 2>&1 &
        tail_pid=$!
        server_started=true
        sleep 1
      fi
      echo "==> [readme] $command"
      if [[ "$command" == *"Ctrl-C stops"* ]]; then
        timeout --preserve-status -s INT 2 bash -c "$command" > "$work/out" 2>&1 || {
          tail -n 30 "$work/out"; fail "$command"; }
      else
        bash -c "$command" > "$work/out" 2>&1 || { tail -n 30 "$work/out"; fail "$command"; }
      fi
      ;;
    *)
      fail "a shell block under \"$heading\" that this script does not know how to run: $command"
      ;;
  esac
done < "$work/commands"

if [[ $failures -gt 0 ]]; then
  echo "check-readme: $failures README command(s) failed" >&2
  exit 1
fi
echo "==> [readme] every command of README.md ran as written"
