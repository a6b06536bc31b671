// syncbus bench: the benchmark of bench/benchmark.cpp (docs/BENCHMARKS.md).
#include <iostream>

#include "benchmark.hpp"
#include "commands.hpp"
#include "interrupt.hpp"

namespace syncbus::cli {

int run_bench(const Arguments& args) {
  interrupt_fd();  // Ctrl-C ends the run in progress cleanly, not the process
  const int code = bench::run_benchmark(args, [] { return interrupted(); });
  if (interrupted()) std::cerr << "syncbus bench: interrupted; the runs above are complete\n";
  return code;
}

}  // namespace syncbus::cli
