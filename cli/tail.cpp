// syncbus tail: every message on a channel, as it arrives, one JSON line
// each, spill pointers followed. Read-only: it publishes nothing, creates
// nothing, and stops cleanly on Ctrl-C.
//
// It hears the channel through a bus's own parts (detail::BusParts with a
// ChannelTap): it connects, pings, reconnects, checks signatures, follows
// pointers and reports gaps exactly as a bus does, and identifies itself
// in pg_stat_activity as a bus does.
#include <syncbus/errors.hpp>

#include <poll.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <mutex>

#include "bus_parts.hpp"
#include "commands.hpp"
#include "connection.hpp"
#include "interrupt.hpp"

namespace syncbus::cli {
namespace {

constexpr const char* usage = R"(usage: syncbus tail [options]

Prints every message on the channel as it arrives, one JSON line each:
  {"origin":"...","sequence":7,"size":123,"spilled":false,"body":...}
following spill pointers into the spill table, in order per origin. Publishes
nothing; stops on Ctrl-C (exit 0). Problems (refused messages, gaps, a lost
connection, which it regains by itself) go to stderr.

options:
)";

constexpr const char* usage_tail =
    R"(  --raw                print each NOTIFY payload exactly as sent instead
  --heartbeats         print heartbeats too: {"origin":"...","heartbeat":N}, and
                       a closing bus's last: {..., "goodbye":true}
  --max-bytes N        refuse spilled bodies larger than N bytes (default 64 MiB)
  --name NAME          this tail's name, which its sessions carry in
                       pg_stat_activity as a bus's do: syncbus:NAME.<random>
                       (default: syncbus-tail)
  --help
)";

/// Prints what the tap sees, one line at a time (the listener's thread
/// prints raw payloads, the delivery thread the rest).
class Printer {
 public:
  explicit Printer(bool heartbeats) : heartbeats_(heartbeats) {}

  void payload(const detail::Notification& notification) { line(notification.payload); }

  void delivered(const detail::Inbound& item) {
    using Kind = detail::Inbound::Kind;
    const auto& message = item.message;
    if (item.kind == Kind::heartbeat || item.kind == Kind::goodbye) {
      if (!heartbeats_) return;
      nlohmann::json shown{{"origin", message.origin}, {"heartbeat", message.sequence}};
      if (item.kind == Kind::goodbye) shown["goodbye"] = true;  // the origin closed
      line(shown.dump());
      return;
    }
    // Bodies arrive parsed, but for a bus's echo of its own messages.
    const auto body = item.body_text ? nlohmann::json::parse(*item.body_text) : message.body;
    const auto size = item.from_table  ? item.body_bytes
                      : item.body_text ? item.body_text->size()
                                       : body.dump().size();
    line(nlohmann::json{{"origin", message.origin},
                        {"sequence", message.sequence},
                        {"size", size},
                        {"spilled", item.from_table},
                        {"body", body}}
             .dump());
  }

 private:
  void line(const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::cout << text << '\n' << std::flush;
  }

  const bool heartbeats_;
  std::mutex mutex_;
};

}  // namespace

int run_tail(const Arguments& args) {
  CommandLine line = [&] {
    auto valued = connection_options();
    valued.insert(valued.end(), {"max-bytes", "name"});
    return CommandLine(args, valued, {"raw", "heartbeats", "help"});
  }();
  if (line.has("help")) {
    std::cout << usage << connection_help << usage_tail;
    return exit_ok;
  }
  const auto where = connection_from(line);
  check_identifiers(where);  // the spill table is read too

  auto options = bus_options(where);
  if (auto max = line.value("max-bytes")) options.max_message_bytes = std::stoull(*max);
  options.instance_id = line.value("name").value_or("syncbus-tail");
  // Read-only: it needs SELECT on the spill table and nothing more.
  options.spill = SpillMode::never;
  options.create_spill_table = false;
  if (line.has("timeout") && where.statement_timeout.count() > 0) {
    options.query_timeout = where.statement_timeout;
  }
  options.log_level = LogLevel::warning;
  options.log = [](LogLevel level, const std::string& message) {
    std::cerr << "syncbus tail: [" << to_string(level) << "] " << message << '\n';
  };

  const int stop_fd = interrupt_fd();
  Printer printer(line.has("heartbeats"));
  detail::ChannelTap tap;
  if (line.has("raw")) {
    tap.on_payload = [&](const detail::Notification& n) { printer.payload(n); };
  } else {
    tap.on_delivered = [&](const detail::Inbound& item) { printer.delivered(item); };
  }
  detail::BusParts bus(std::move(options), std::move(tap));
  std::cerr << "syncbus tail: listening on channel \"" << where.channel << "\" (Ctrl-C to stop)\n";
  pollfd stop{stop_fd, POLLIN, 0};
  while (!interrupted()) ::poll(&stop, 1, -1);
  bus.close();
  return exit_ok;
}

}  // namespace syncbus::cli
