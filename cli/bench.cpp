// syncbus bench: the benchmark of bench/benchmark.cpp (docs/BENCHMARKS.md).
#include <iostream>

#include "benchmark.hpp"
#include "commands.hpp"
#include "interrupt.hpp"

namespace syncbus::cli {

int run_bench(const Arguments& args) {
  // The benchmark takes the connection string first; accept --db too, as
  // every other subcommand does.
  Arguments translated;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--db" && i + 1 < args.size()) {
      translated.insert(translated.begin(), args[++i]);
    } else if (args[i].rfind("--db=", 0) == 0) {
      translated.insert(translated.begin(), args[i].substr(5));
    } else {
      translated.push_back(args[i]);
    }
  }
  interrupt_fd();  // Ctrl-C ends the run in progress cleanly, not the process
  const int code = bench::run_benchmark(translated, [] { return interrupted(); });
  if (interrupted()) std::cerr << "syncbus bench: interrupted; the runs above are complete\n";
  return code;
}

}  // namespace syncbus::cli
