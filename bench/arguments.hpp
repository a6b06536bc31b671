#pragma once
// The benchmark's command line: what a run is asked to do.

#include <cstddef>
#include <string>
#include <vector>

namespace syncbus::bench {

struct Config {
  std::string conninfo;
  double seconds = 2.0;
  std::vector<std::size_t> sizes{200, 2000, 20000};
  std::vector<int> threads{1, 4, 16};
  // How the saturation senders publish: publish_async with up to `window`
  // messages in flight per thread (what a high-volume producer does), and
  // also, for these thread counts, blocking publish() calls.
  std::size_t window = 64;
  // Senders wait while this many bytes of messages are published but not yet
  // delivered to every receiver (at least 256 messages).
  std::size_t max_lag_bytes = 16 * 1024 * 1024;
  std::vector<int> blocking_threads{16};
  // Receivers on each side: as many listening connections for the raw
  // baseline as receiving buses for syncbus, each doing the same work (for
  // spilled sizes, each fetches every row), so that the two sides compare.
  int receivers = 2;
  // --receiver-processes: each receiver (bus or raw listener) in a process
  // of its own, as in a cluster of instances; their CPU counts as this
  // process's (cpu/1k).
  bool receiver_processes = false;
  // --spill always: the durable mode, every message through the spill table,
  // against a raw baseline that INSERTs every message and NOTIFYs its id
  // (each raw receiver fetching every row).
  bool spill_always = false;
  int rate = 1000;
  // The paced runs alternate raw and syncbus this many times, each for
  // seconds / 2: both then see the same moments of a noisy machine.
  int rounds = 4;
  // The publishing bus listens too (PostgresBusOptions::listen), as one
  // that also had subscribers would.
  bool publisher_listens = false;
  // What fills each body: one repeated character (compresses to almost
  // nothing), or text of pseudo-random words, which lz4 compresses about as
  // it does prose (--body text).
  bool text_body = false;
  bool check = false;
  // --stages: the paced runs also time each stage of a message's way (the
  // commit, the listener's read, the hand-off to the delivery thread, the
  // handler), on both sides; receivers in this process only.
  bool stages = false;
  // --json: one JSON object per run and line, with the configuration,
  // instead of the table.
  bool json = false;
  // --resume N,N,...: measure resuming instead (resume_runs.hpp), once for
  // each count of missed messages.
  std::vector<std::size_t> resume;
  bool help = false;  // --help: print usage_text and stop
};

/// The --help text.
extern const char* const usage_text;

/// Reads `args` (tools/command_line.hpp: the parser of every syncbus
/// command): the options, and the connection string (--db, or a first
/// argument; else $DATABASE_URL). Throws cli::usage_error saying what is
/// wrong.
Config parse_arguments(const std::vector<std::string>& args);

}  // namespace syncbus::bench
