#!/usr/bin/env bash
# Installs with apt everything that building, testing and running syncbus
# need, on a bare Debian 12 as on a machine that has it all (then it only
# checks). Runs apt as root, or through sudo.
set -euo pipefail

packages=(
  g++ make cmake pkg-config git ca-certificates   # toolchain
  libpqxx-dev libpq-dev nlohmann-json3-dev libfmt-dev libssl-dev libsimdjson-dev  # the library's dependencies
  libgtest-dev libgmock-dev                       # tests
  gdb                                             # tests: stacks of a hung test
  postgresql-15 postgresql-client-15              # the throwaway test server
  pgbouncer                                       # tests: LISTEN through a pooler
  clang-format clang-tidy                         # the format check, the lint
  clang libclang-rt-14-dev                        # the fuzzer (libFuzzer)
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "==> dependencies: all ${#packages[@]} packages are installed"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo > /dev/null; then
    echo "install-deps.sh: missing packages (${missing[*]}) and not root: run as root or install sudo" >&2
    exit 1
  fi
  sudo=(sudo)
fi

echo "==> dependencies: installing ${missing[*]}"
# The server package would create and start a 'main' cluster on port 5432;
# the tests and the demo start throwaway clusters of their own instead.
if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
  "${sudo[@]}" mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf > /dev/null
fi
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
echo "==> dependencies: done"
