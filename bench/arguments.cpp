#include "arguments.hpp"

#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "command_line.hpp"

namespace syncbus::bench {
namespace {

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

}  // namespace

const char* const usage_text =
    "usage: syncbus bench [--db CONNINFO] [--seconds S] [--sizes 200,2000,20000]\n"
    "                     [--threads 1,4,16] [--window 64] [--blocking 16|none]\n"
    "                     [--rate 1000] [--rounds 4] [--max-lag-bytes 16777216]\n"
    "                     [--receivers 2] [--receiver-processes]\n"
    "                     [--spill overflow|always] [--publisher-listens]\n"
    "                     [--body repeated|text] [--json] [--check] [--stages]\n"
    "                     [--resume 1000,100000,1000000]\n"
    "\n"
    "Measures syncbus against a raw libpq baseline on the same server, in one run:\n"
    "throughput delivered to each receiver, latency percentiles at saturation and\n"
    "at --rate messages/s, CPU per 1,000 messages delivered to a receiver (this\n"
    "process and the server), for each message size. Both sides have --receivers\n"
    "receivers (syncbus: receiving buses; raw: listening connections, each\n"
    "fetching the rows of spilled sizes), so that they do the same work;\n"
    "--receiver-processes: each in a process of its own (fan-out, as a cluster\n"
    "of instances has it; their CPU is counted with this process's). --spill\n"
    "always: syncbus in its durable mode, every message through the spill table,\n"
    "against raw libpq INSERTing every message and NOTIFYing its id. At\n"
    "saturation each of --threads publishes with publish_async, --window messages\n"
    "in flight; --blocking threads call publish() and wait; senders pause while\n"
    "--max-lag-bytes are published and not yet delivered. The paced runs\n"
    "alternate raw and syncbus --rounds times, each for --seconds / 2, and pool\n"
    "the rounds; --rate 0 skips them. The connection string: --db, or a first\n"
    "argument, or $DATABASE_URL. The publishing bus is publish-only (listen =\n"
    "false) unless --publisher-listens. --body: each body's padding is one\n"
    "repeated character (the default) or text of pseudo-random words, which\n"
    "compresses like prose. --check: exit 1 unless every receiver got every\n"
    "message once, in order. --json: one JSON object per run and line (its figures,\n"
    "its ratios to raw, and the configuration) instead of the table. --stages:\n"
    "the paced runs also say, per stage of a message's way (committed, read by\n"
    "the listener, on the delivery thread, in the handler), the median time from\n"
    "the publish call; receivers in this process only.\n"
    "--resume N,...: measure instead what resuming costs: a client misses N\n"
    "messages (of the first --sizes bytes), then subscribe_from() on a new bus;\n"
    "the time until it has them all, and until a message published after it\n"
    "arrives.\n"
    "See docs/BENCHMARKS.md.\n";

Config parse_arguments(const std::vector<std::string>& args) {
  // -h as well as --help, as the benchmark always took.
  for (const auto& arg : args) {
    if (arg == "-h") {
      Config help;
      help.help = true;
      return help;
    }
  }
  const cli::CommandLine line(
      args,
      {"db", "seconds", "sizes", "threads", "blocking", "window", "max-lag-bytes", "rate", "rounds",
       "body", "receivers", "spill", "resume"},
      {"publisher-listens", "receiver-processes", "check", "json", "help", "stages"});
  Config config;
  config.help = line.has("help");
  if (auto v = line.value("seconds")) config.seconds = cli::parse_number<double>("seconds", *v);
  if (auto v = line.value("sizes")) {
    config.sizes.clear();
    for (const auto& s : split(*v))
      config.sizes.push_back(cli::parse_number<std::size_t>("sizes", s));
  }
  if (auto v = line.value("threads")) {
    config.threads.clear();
    for (const auto& t : split(*v)) config.threads.push_back(cli::parse_number<int>("threads", t));
  }
  if (auto v = line.value("blocking")) {
    config.blocking_threads.clear();
    if (*v != "none") {
      for (const auto& t : split(*v))
        config.blocking_threads.push_back(cli::parse_number<int>("blocking", t));
    }
  }
  if (auto v = line.value("window")) config.window = cli::parse_number<std::size_t>("window", *v);
  if (auto v = line.value("max-lag-bytes")) {
    config.max_lag_bytes = cli::parse_number<std::size_t>("max-lag-bytes", *v);
  }
  if (auto v = line.value("receivers")) {
    config.receivers = cli::parse_number<int>("receivers", *v);
    if (config.receivers < 1) throw cli::usage_error("--receivers must be at least 1");
  }
  if (auto v = line.value("rate")) config.rate = cli::parse_number<int>("rate", *v);
  if (auto v = line.value("rounds")) {
    config.rounds = cli::parse_number<int>("rounds", *v);
    if (config.rounds < 1) throw cli::usage_error("--rounds must be at least 1");
  }
  config.publisher_listens = line.has("publisher-listens");
  config.receiver_processes = line.has("receiver-processes");
  if (auto v = line.value("body")) {
    if (*v != "repeated" && *v != "text") {
      throw cli::usage_error("--body takes repeated or text, not " + *v);
    }
    config.text_body = *v == "text";
  }
  if (auto v = line.value("spill")) {
    if (*v != "overflow" && *v != "always") {
      throw cli::usage_error("--spill takes overflow or always, not " + *v);
    }
    config.spill_always = *v == "always";
  }
  if (auto v = line.value("resume")) {
    for (const auto& n : split(*v)) {
      config.resume.push_back(cli::parse_number<std::size_t>("resume", n));
    }
  }
  config.check = line.has("check");
  config.stages = line.has("stages");
  if (config.stages && config.receiver_processes) {
    throw cli::usage_error(
        "--stages times receivers in this process: drop --receiver-processes to use it");
  }
  config.json = line.has("json");
  // The connection string: --db, as every syncbus command takes it, or the
  // first argument, as the stand-alone benchmark always took it.
  const auto& positional = line.positional();
  if (positional.size() > 1 || (positional.size() == 1 && line.has("db"))) {
    throw cli::usage_error("more than one connection string (give it once, with --db)");
  }
  if (auto v = line.value("db")) {
    config.conninfo = *v;
  } else if (!positional.empty()) {
    config.conninfo = positional.front();
  } else if (const char* url = std::getenv("DATABASE_URL")) {
    config.conninfo = url;
  }
  return config;
}

}  // namespace syncbus::bench
