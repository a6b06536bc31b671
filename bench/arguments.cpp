#include "arguments.hpp"

#include <cstdlib>
#include <sstream>
#include <stdexcept>

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
    "usage: syncbus bench [CONNINFO] [--seconds S] [--sizes 200,2000,20000]\n"
    "                     [--threads 1,4,16] [--window 64] [--blocking 16|none]\n"
    "                     [--rate 1000] [--rounds 4] [--max-lag-bytes 16777216]\n"
    "                     [--publisher-listens] [--body repeated|text] [--check]\n"
    "\n"
    "Measures syncbus against a raw libpq baseline on the same server, in one run:\n"
    "throughput delivered to every receiver, latency percentiles at saturation and\n"
    "at --rate messages/s, CPU per 1,000 messages (this process and the server), for\n"
    "each message size. At saturation each of --threads publishes with\n"
    "publish_async, --window messages in flight; --blocking threads call publish()\n"
    "and wait; senders pause while --max-lag-bytes are published and not yet\n"
    "delivered. The paced runs alternate raw and syncbus --rounds times, each for\n"
    "--seconds / 2, and pool the rounds. --rate 0 skips them. CONNINFO defaults to\n"
    "$DATABASE_URL. The publishing bus is publish-only (listen = false) unless\n"
    "--publisher-listens. --body: each body's padding is one repeated character\n"
    "(the default) or text of pseudo-random words, which compresses like prose.\n"
    "--check: exit 1 unless every receiver got every message once, in order.\n"
    "See docs/BENCHMARKS.md.\n";

Config parse_arguments(const std::vector<std::string>& args) {
  Config config;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw std::invalid_argument(args[i] + " needs a value");
      return args[++i];
    };
    if (args[i] == "--seconds") {
      config.seconds = std::stod(value());
    } else if (args[i] == "--sizes") {
      config.sizes.clear();
      for (const auto& s : split(value())) config.sizes.push_back(std::stoul(s));
    } else if (args[i] == "--threads") {
      config.threads.clear();
      for (const auto& t : split(value())) config.threads.push_back(std::stoi(t));
    } else if (args[i] == "--blocking") {
      config.blocking_threads.clear();
      const auto list = value();
      if (list != "none") {
        for (const auto& t : split(list)) config.blocking_threads.push_back(std::stoi(t));
      }
    } else if (args[i] == "--window") {
      config.window = std::stoul(value());
    } else if (args[i] == "--max-lag-bytes") {
      config.max_lag_bytes = std::stoul(value());
    } else if (args[i] == "--rate") {
      config.rate = std::stoi(value());
    } else if (args[i] == "--rounds") {
      config.rounds = std::stoi(value());
      if (config.rounds < 1) throw std::invalid_argument("--rounds must be at least 1");
    } else if (args[i] == "--publisher-listens") {
      config.publisher_listens = true;
    } else if (args[i] == "--body") {
      const auto kind = value();
      if (kind != "repeated" && kind != "text") {
        throw std::invalid_argument("--body takes repeated or text, not " + kind);
      }
      config.text_body = kind == "text";
    } else if (args[i] == "--check") {
      config.check = true;
    } else if (args[i] == "--help" || args[i] == "-h") {
      config.help = true;
    } else if (config.conninfo.empty() && args[i].rfind("--", 0) != 0) {
      config.conninfo = args[i];
    } else {
      throw std::invalid_argument("unknown argument " + args[i]);
    }
  }
  if (config.conninfo.empty()) {
    if (const char* url = std::getenv("DATABASE_URL")) config.conninfo = url;
  }
  return config;
}

}  // namespace syncbus::bench
