#!/usr/bin/env bash
# Checks the three ways a project can consume syncbus, each by building and
# running examples/find_package_consumer/main.cpp:
#   1. find_package(syncbus) against a tree installed with cmake --install
#      (into a non-root prefix);
#   2. pkg-config against that same installed tree;
#   3. add_subdirectory() of the source tree.
#   check_packaging.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
build=${1:?} source=${2:?} work=${3:?}
rm -rf "$work"
mkdir -p "$work"
# The consumers are built with the same compiler and flags (sanitizers included).
flags=$(sed -n 's/^CMAKE_CXX_FLAGS:STRING=//p' "$build/CMakeCache.txt")
compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
consumer="$source/examples/find_package_consumer"

echo "--- find_package(syncbus) after cmake --install"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$consumer" -B "$work/find_package" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_COMPILER="$compiler" -DCMAKE_CXX_FLAGS="$flags" > "$work/find_package.log"
cmake --build "$work/find_package" >> "$work/find_package.log"
"$work/find_package/consumer"

libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -n 1)
# Exactly what a user types (README), then with --static.
for static in "" --static; do
  echo "--- the installed documentation and man page"
for file in share/doc/syncbus/LICENSE share/doc/syncbus/README.md share/doc/syncbus/CHANGELOG.md \
    share/doc/syncbus/docs/OPERATIONS.md share/doc/syncbus/docs/PROTOCOL.md share/man/man1/syncbus.1; do
  [[ -s "$work/prefix/$file" ]] || { echo "not installed: $file" >&2; exit 1; }
done
for command in TAIL PUBLISH VACUUM STATUS DOCTOR BENCH; do
  grep -q "^.SH \"SYNCBUS $command\"" "$work/prefix/share/man/man1/syncbus.1" ||
    { echo "the man page has no section for $command" >&2; exit 1; }
done
if command -v groff > /dev/null; then
  warnings=$(groff -man -Tutf8 -ww -z "$work/prefix/share/man/man1/syncbus.1" 2>&1)
  [[ -z "$warnings" ]] || { echo "the man page does not render cleanly: $warnings" >&2; exit 1; }
fi

echo "--- pkg-config --cflags --libs $static syncbus"
  # shellcheck disable=SC2046,SC2086 # the flags are meant to split into words
  "$compiler" -std=c++17 $flags "$consumer/main.cpp" -o "$work/pkg_config_consumer" \
    $(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs $static syncbus)
  "$work/pkg_config_consumer"
done

if [[ "$flags" != *-fsanitize* ]]; then
  # The library alone, shared, as -DBUILD_SHARED_LIBS=ON builds it: it must
  # export the API and none of its insides (syncbus::detail), and serve a
  # consumer through find_package and pkg-config alike.
  echo "--- a shared libsyncbus through find_package and pkg-config"
  cmake -S "$source" -B "$work/shared" -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_COMPILER="$compiler" -DSYNCBUS_BUILD_TESTS=OFF -DSYNCBUS_BUILD_EXAMPLES=OFF \
    -DSYNCBUS_BUILD_BENCH=OFF -DSYNCBUS_BUILD_CLI=OFF > "$work/shared.log"
  cmake --build "$work/shared" -j 2 >> "$work/shared.log"
  cmake --install "$work/shared" --prefix "$work/shared-prefix" >> "$work/shared.log"
  library=$(ls "$work"/shared-prefix/lib*/libsyncbus.so | head -n 1)
  inside=$(nm -D --defined-only -C "$library" | grep -c 'syncbus::detail' || true)
  [[ "$inside" == 0 ]] || { echo "libsyncbus.so exports $inside symbol(s) of syncbus::detail" >&2; exit 1; }
  cmake -S "$consumer" -B "$work/shared-consumer" -DCMAKE_PREFIX_PATH="$work/shared-prefix" \
    -DCMAKE_CXX_COMPILER="$compiler" > "$work/shared-consumer.log"
  cmake --build "$work/shared-consumer" >> "$work/shared-consumer.log"
  "$work/shared-consumer/consumer"
  shared_pc=$(dirname "$library")/pkgconfig
  # shellcheck disable=SC2046 # the flags are meant to split into words
  "$compiler" -std=c++17 "$consumer/main.cpp" -o "$work/shared_pkg_config_consumer" \
    $(PKG_CONFIG_PATH="$shared_pc" pkg-config --cflags --libs syncbus)
  LD_LIBRARY_PATH=$(dirname "$library") "$work/shared_pkg_config_consumer"
fi

echo "--- add_subdirectory(syncbus)"
cmake -S "$source/tests/packaging/add_subdirectory_consumer" -B "$work/add_subdirectory" \
  -DSYNCBUS_SOURCE_DIR="$source" -DCMAKE_CXX_COMPILER="$compiler" -DCMAKE_CXX_FLAGS="$flags" \
  > "$work/add_subdirectory.log"
cmake --build "$work/add_subdirectory" -j 2 >> "$work/add_subdirectory.log"
"$work/add_subdirectory/consumer"
