#pragma once
// The benchmark of bench/benchmark.cpp, callable from `syncbus bench` and
// from the stand-alone bench/syncbus_bench.

#include <functional>
#include <string>
#include <vector>

namespace syncbus::bench {

/// Runs the benchmark with `args` (CONNINFO and options, as documented in
/// benchmark.cpp; --help prints them) and returns the process exit code:
/// 0, 1 when a run lost or reordered messages under --check (or failed),
/// 2 for a bad argument. Once `interrupted` returns true, the run in progress
/// stops sending, drains and cleans up, and no further run starts.
int run_benchmark(const std::vector<std::string>& args,
                  std::function<bool()> interrupted = nullptr);

}  // namespace syncbus::bench
