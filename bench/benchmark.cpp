// The benchmark: throughput, latency and CPU of syncbus against a raw libpq
// baseline, in one run, on one PostgreSQL server. Run by `syncbus bench` and
// by the stand-alone bench/syncbus_bench (scripts/bench.sh).
//
//   syncbus bench CONNINFO [--seconds S] [--sizes 200,2000,20000]
//                 [--threads 1,4,16] [--rate 1000] [--check]   (--help: all)
//
// For each message size it measures:
//   raw      plain libpq: one pg_notify per transaction (for bodies that do
//            not fit a payload: one INSERT + pg_notify of the row id, and the
//            listener SELECTs each row), one sender, one listener connection;
//   syncbus  one PostgresClusterBus published to by 1, 4 and 16 threads
//            (publish_async, --window messages in flight each) and by 16
//            threads calling publish(), delivering to 2 other
//            PostgresClusterBus instances;
// at saturation (as fast as the senders go, for S seconds) and at a fixed
// offered load (--rate messages/s, one sender). Every figure of syncbus is
// also given as a ratio to the raw one of the same size.
//
// Latency is commit-to-handler as the sender's clock sees it (sender and
// receivers are in this process): each body carries its send time. CPU is
// this process's (getrusage) and the server's (/proc of the postmaster and
// its children; "n/a" when the server is not on this machine).
//
// --check turns it into a correctness test: every receiver must get every
// message exactly once, in order per origin, or the program exits with 1.
#include "benchmark.hpp"

#include <syncbus/postgres_bus.hpp>

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "arguments.hpp"
#include "measures.hpp"
#include "pacing.hpp"
#include "raw_baseline.hpp"
#include "report.hpp"
#include "resume_runs.hpp"
#include "syncbus_runs.hpp"

namespace syncbus::bench {
namespace {

int usage(const char* error) {
  std::cerr << "syncbus bench: " << error << "\n" << usage_text;
  return 2;
}

}  // namespace

// --resume: a table of its own (or --json lines).
int measure_resumes(const Config& config) {
  if (!config.json) {
    std::cout << fmt::format("{:>10} {:>6} {:>13} {:>13} {:>14} {:>11} {:>12} {:>6}  {}\n",
                             "missed", "bytes", "subscribe ms", "caught up ms", "first live ms",
                             "read msg/s", "raw read ms", "ratio", "correct");
  }
  bool all_correct = true;
  for (const auto missed : config.resume) {
    if (stop_requested()) break;
    const auto r = run_resume(config, missed);
    all_correct = all_correct && r.correct;
    if (config.json) {
      std::cout << fmt::format(
          "{{\"resume\":{{\"missed\":{},\"bytes\":{},\"subscribe_ms\":{:.1f},"
          "\"caught_up_ms\":{:.1f},\"first_live_ms\":{:.1f},\"read_per_second\":{:.0f},"
          "\"raw_read_ms\":{:.1f},\"correct\":{}}}}}\n",
          r.missed, r.size, r.subscribe_ms, r.caught_up_ms, r.first_live_ms, r.read_per_second,
          r.raw_read_ms, r.correct);
    } else {
      std::cout << fmt::format(
          "{:>10} {:>6} {:>13.1f} {:>13.1f} {:>14.1f} {:>11.0f} {:>12.1f} {:>6.2f}  {}\n", r.missed,
          r.size, r.subscribe_ms, r.caught_up_ms, r.first_live_ms, r.read_per_second, r.raw_read_ms,
          r.raw_read_ms > 0 ? r.caught_up_ms / r.raw_read_ms : 0.0, r.correct ? "yes" : "NO");
    }
  }
  if (!all_correct) std::cerr << "syncbus_bench: a resume lost, repeated or reordered messages\n";
  return all_correct ? 0 : 1;
}

int run_benchmark(const std::vector<std::string>& args, std::function<bool()> interrupted) {
  if (interrupted) stop_requested = std::move(interrupted);
  Config config;
  try {
    config = parse_arguments(args);
  } catch (const std::exception& e) {
    return usage(e.what());
  }
  if (config.help) {
    std::cout << usage_text;
    return 0;
  }
  if (config.conninfo.empty()) return usage("no CONNINFO (or DATABASE_URL)");

  int postmaster = 0;
  try {
    RawConnection probe(config.conninfo);
    const int backend = std::stoi(probe.exec("SELECT pg_backend_pid()"));
    if (const auto f = proc_stat(backend)) postmaster = std::stoi((*f)[1]);
  } catch (const std::exception& e) {
    std::cerr << "syncbus_bench: " << e.what() << "\n";
    return 1;
  }

  // Each row as soon as it is measured, also into a pipe or a file.
  std::cout << std::unitbuf;
  // What runs now, on a terminal: a whole invocation takes a while (every
  // size, thread count and paced round, each a run of --seconds).
  const bool on_terminal = ::isatty(STDERR_FILENO) != 0;
  const auto now_running = [&](const std::string& what) {
    if (on_terminal) std::cerr << "\r\033[Ksyncbus_bench: measuring " << what << std::flush;
  };
  if (!config.resume.empty()) return measure_resumes(config);
  const Report report(config);
  report.preamble(postmaster != 0);
  bool all_correct = true;
  try {
    for (const auto size : config.sizes) {
      if (stop_requested()) break;
      if (on_terminal) std::cerr << "\r\033[K";
      report.size_begins();
      now_running(fmt::format("raw libpq, {} B", size));
      auto raw = run_raw(config, size, std::nullopt, postmaster);
      raw.load = "saturation";
      report.run(raw, nullptr);
      all_correct = all_correct && raw.correct;
      std::optional<Result> best;  // syncbus's fastest run of this size
      const auto saturate = [&](int threads, bool blocking) {
        SyncbusLoad load;
        load.size = size;
        load.threads = threads;
        load.blocking = blocking;
        now_running(fmt::format("syncbus, {} B, {} thread(s){}", size, threads,
                                blocking ? " calling publish()" : ""));
        auto r = run_syncbus(config, load, postmaster);
        if (on_terminal) std::cerr << "\r\033[K";
        r.load = "saturation";
        report.run(r, &raw);
        all_correct = all_correct && r.correct;
        report.memory(r);
        if (!best || r.delivered_per_second > best->delivered_per_second) best = r;
      };
      for (const int threads : config.threads) saturate(threads, false);
      for (const int threads : config.blocking_threads) saturate(threads, true);
      // The ceiling at sizes that fit a payload: raw libpq batched by hand,
      // as many messages to a statement as syncbus's fastest run put in a
      // transaction. Not a baseline: what batching can give at most.
      if (best && best->transactions > 0 &&
          size + 64 < syncbus::PostgresClusterBus::notify_payload_limit && !config.spill_always &&
          !stop_requested()) {
        const auto per_statement = std::max<std::size_t>(
            2, static_cast<std::size_t>(static_cast<double>(best->delivered) /
                                            static_cast<double>(best->transactions) +
                                        0.5));
        now_running(fmt::format("raw libpq, {} B, {} per statement", size, per_statement));
        auto ceiling = run_raw(config, size, std::nullopt, postmaster, per_statement);
        if (on_terminal) std::cerr << "\r\033[K";
        ceiling.load = "saturation";
        report.ceiling(ceiling, *best);
        all_correct = all_correct && ceiling.correct;
      }
      if (config.rate > 0) {  // --rate 0: saturation runs only
        Config round = config;
        round.seconds = config.seconds / 2;
        Result raw_paced, paced;
        for (int i = 0; i < config.rounds && !stop_requested(); ++i) {
          now_running(
              fmt::format("{} B at {}/s, round {} of {}", size, config.rate, i + 1, config.rounds));
          pool(raw_paced, run_raw(round, size, config.rate, postmaster));
          SyncbusLoad load;
          load.size = size;
          load.rate = config.rate;
          load.blocking = true;
          pool(paced, run_syncbus(round, load, postmaster));
        }
        if (on_terminal) std::cerr << "\r\033[K";
        raw_paced.load = paced.load = fmt::format("{}/s", config.rate);
        report.run(raw_paced, nullptr);
        report.run(paced, &raw_paced);
        all_correct = all_correct && raw_paced.correct && paced.correct;
      }
      if (!config.json) std::cout << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "syncbus_bench: " << e.what() << "\n";
    return 1;
  }
  report.legend();
  if (config.check && !all_correct) {
    std::cerr << "syncbus_bench: a run lost, repeated or reordered messages\n";
    return 1;
  }
  return 0;
}

}  // namespace syncbus::bench