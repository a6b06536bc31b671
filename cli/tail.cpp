// syncbus tail: every message on a channel, as it arrives, one JSON line
// each, spill pointers followed. Read-only: it publishes nothing, creates
// nothing, and stops cleanly on Ctrl-C.
//
// It hears the channel through a bus's own parts (detail::BusParts with a
// ChannelTap): it connects, pings, reconnects, checks signatures, follows
// pointers and reports gaps exactly as a bus does, and identifies itself
// in pg_stat_activity as a bus does.
#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <poll.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <iostream>
#include <mutex>
#include <optional>

#include "bus_parts.hpp"
#include "commands.hpp"
#include "connection.hpp"
#include "interrupt.hpp"
#include "wake_fd.hpp"

namespace syncbus::cli {
namespace {

constexpr const char* usage = R"(usage: syncbus tail [options]

Prints every message on the channel as it arrives, one JSON line each, its
metadata first:
  {"time":"2026-11-29T10:00:00.123Z","origin":"...","sequence":7,"size":123,
   "spilled":false,"body":...}
(time: when it arrived here, UTC; size: the body's bytes of JSON; spilled:
read from the spill table), following spill pointers, in order per origin,
each message once (a repeat is dropped). A gap, messages this tail knows it
missed, is a line of its own:
  {"time":"...","gap":"missed","origin":"...","first_missing":8,"last_missing":9}
  {"time":"...","gap":"unknown","reason":"..."}   (after a lost connection)
Publishes nothing; stops on Ctrl-C (exit 0). Problems (refused messages, a
lost connection, which it regains by itself) are also said on stderr.

options:
)";

constexpr const char* usage_tail =
    R"(  --no-body            leave the body out of each line
  --count N            stop (exit 0) after printing N messages
  --raw                print each NOTIFY payload exactly as sent instead
  --heartbeats         print heartbeats too: {"time":...,"origin":"...",
                       "heartbeat":N}, and a closing bus's last: {...,
                       "goodbye":true}
  --max-bytes N        refuse spilled bodies larger than N bytes (default 64 MiB)
  --name NAME          this tail's name, which its sessions carry in
                       pg_stat_activity as a bus's do: syncbus:NAME.<random>
                       (default: syncbus-tail)
  --help
)";

// Now, as ISO 8601 in UTC with milliseconds.
std::string now_utc() {
  const auto now = std::chrono::system_clock::now();
  const auto seconds = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:03}Z", text, ms.count());
}

/// Prints what the tap sees, one line at a time (the listener's thread
/// prints raw payloads, the delivery thread the rest), and says when it has
/// printed the messages it was asked for.
class Printer {
 public:
  struct Settings {
    bool heartbeats = false;
    bool bodies = true;
    std::optional<std::uint64_t> count;  // stop after this many messages
  };
  explicit Printer(Settings settings) : settings_(settings) {}

  /// Readable once `count` messages are printed, or once a line could not
  /// be written (write_failed()).
  int done_fd() const noexcept { return done_.fd(); }
  /// Why standard output refused a line ("" while it takes them): a full
  /// disk, a closed descriptor, a reader gone (with SIGPIPE ignored).
  std::string write_failed() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return write_error_;
  }

  void payload(const detail::Notification& notification) {
    line(notification.payload);
    counted();
  }

  void delivered(const detail::Inbound& item) {
    using Kind = detail::Inbound::Kind;
    const auto& message = item.message;
    nlohmann::ordered_json shown{{"time", now_utc()}, {"origin", message.origin}};
    if (item.kind == Kind::heartbeat || item.kind == Kind::goodbye) {
      if (!settings_.heartbeats) return;
      shown["heartbeat"] = message.sequence;
      if (item.kind == Kind::goodbye) shown["goodbye"] = true;  // the origin closed
      line(shown.dump());
      return;
    }
    // Bodies arrive parsed, but for a bus's echo of its own messages.
    const auto body = item.body_text ? nlohmann::json::parse(*item.body_text) : message.body;
    shown["sequence"] = message.sequence;
    shown["size"] = item.from_table  ? item.body_bytes
                    : item.body_text ? item.body_text->size()
                                     : body.dump().size();
    shown["spilled"] = item.from_table;
    if (settings_.bodies) shown["body"] = body;
    line(shown.dump());
    counted();
  }

  void gap(const GapEvent& gap) {
    nlohmann::ordered_json shown{{"time", now_utc()}};
    if (gap.range_known()) {
      shown["gap"] = "missed";
      shown["origin"] = gap.origin;
      shown["first_missing"] = gap.first_missing;
      shown["last_missing"] = gap.last_missing;
    } else {
      shown["gap"] = "unknown";
      shown["reason"] =
          "the connection was lost and regained: messages committed meanwhile may be missed";
    }
    line(shown.dump());
  }

 private:
  void line(const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopped_) return;  // no line past --count, or past a failed write
    errno = 0;
    std::cout << text << '\n' << std::flush;
    if (!std::cout) {
      // A tail that cannot print loses every message: it stops and says so.
      write_error_ = errno != 0 ? std::strerror(errno) : "the stream failed";
      stopped_ = true;
      done_.signal();
    }
  }
  void counted() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (settings_.count && ++printed_ >= *settings_.count && !stopped_) {
      stopped_ = true;
      done_.signal();
    }
  }

  const Settings settings_;
  mutable std::mutex mutex_;
  std::uint64_t printed_ = 0;
  bool stopped_ = false;
  std::string write_error_;
  detail::WakeFd done_;
};

}  // namespace

int run_tail(const Arguments& args) {
  const int stop_fd = interrupt_fd();  // first: Ctrl-C is a clean stop from the start
  CommandLine line = [&] {
    auto valued = connection_options();
    valued.insert(valued.end(), {"max-bytes", "name", "count"});
    return CommandLine(args, valued, {"raw", "heartbeats", "no-body", "help"});
  }();
  if (line.has("help")) {
    std::cout << usage << connection_help << usage_tail;
    return exit_ok;
  }
  const auto where = connection_from(line);
  check_identifiers(where);  // the spill table is read too

  auto options = bus_options(where);
  if (auto max = line.value("max-bytes")) {
    options.max_message_bytes = parse_number<std::size_t>("max-bytes", *max);
  }
  options.instance_id = line.value("name").value_or("syncbus-tail");
  // Read-only: it needs SELECT on the spill table and nothing more.
  options.spill = SpillMode::never;
  options.create_spill_table = false;
  if (line.has("timeout") && where.statement_timeout.count() > 0) {
    options.query_timeout = where.statement_timeout;
  }
  options.log_level = LogLevel::warning;
  options.log = [](LogLevel level, const std::string& message) {
    std::cerr << "syncbus tail: [" << to_string(level) << "] " << in_command_line_terms(message)
              << '\n';
  };
  check_bus_options(options);

  Printer::Settings shown;
  shown.heartbeats = line.has("heartbeats");
  shown.bodies = !line.has("no-body");
  if (auto count = line.value("count")) shown.count = parse_number<std::uint64_t>("count", *count);
  Printer printer(shown);
  detail::ChannelTap tap;
  if (line.has("raw")) {
    // Payloads exactly as sent, and nothing else on stdout (gaps are still
    // said on stderr, by the log).
    tap.on_payload = [&](const detail::Notification& n) { printer.payload(n); };
  } else {
    tap.on_delivered = [&](const detail::Inbound& item) { printer.delivered(item); };
    options.on_gap = [&](const GapEvent& gap) { printer.gap(gap); };
  }
  detail::BusParts bus(std::move(options), std::move(tap));
  std::cerr << "syncbus tail: listening on channel \"" << where.channel << "\" (Ctrl-C to stop)\n";
  pollfd waits[2] = {{stop_fd, POLLIN, 0}, {printer.done_fd(), POLLIN, 0}};
  while (!interrupted() && waits[1].revents == 0) ::poll(waits, 2, -1);
  bus.close();
  if (const auto why = printer.write_failed(); !why.empty()) {
    std::cerr << "syncbus tail: cannot write to standard output (" << why
              << "): stopped, as every message from here on would be lost\n";
    return exit_problem;
  }
  return exit_ok;
}

}  // namespace syncbus::cli
