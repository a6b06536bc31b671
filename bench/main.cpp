// bench/syncbus_bench: the benchmark as a program of its own (the same as
// `syncbus bench`), for scripts/bench.sh and the test command's short run.
#include <string>
#include <vector>

#include "benchmark.hpp"

int main(int argc, char** argv) {
  return syncbus::bench::run_benchmark(std::vector<std::string>(argv + 1, argv + argc));
}
