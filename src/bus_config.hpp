#pragma once
// A bus's configuration, checked and resolved once: PostgresBusOptions with
// every choice made (the instance id, the application name, the queue-full
// policy), and what follows from them. postgres_bus.cpp makes it; every part
// reads what it needs from it (with the services it shares: BusServices).

#include <syncbus/postgres_bus_options.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>

#include "deadline_timer.hpp"
#include "error_sink.hpp"
#include "logger.hpp"
#include "stats_counters.hpp"

namespace syncbus::detail {

struct ChannelTap;
class MessageAuth;
class SpillStore;

class BusConfig {
 public:
  /// Checks `options` (configuration_error naming the option and how to fix
  /// it) and resolves them: instance_id given or made, application_name
  /// "syncbus:<instance id>" unless given, queue_full_policy never automatic.
  static BusConfig resolve(PostgresBusOptions options);

  /// The options as resolved.
  const PostgresBusOptions& options() const noexcept { return options_; }
  /// This bus's instance id: its origin on the channel (options().instance_id
  /// is the name it starts with).
  const std::string& origin() const noexcept { return origin_; }
  /// SpillMode::always: every message is in the spill table, and a
  /// reconnecting listener catches up from it.
  bool durable() const noexcept { return options_.spill == SpillMode::always; }
  /// The listening session's application_name.
  std::string listener_application_name() const { return options_.application_name + ":listen"; }
  /// The session that reads for resuming subscriptions (resume_reader.hpp).
  std::string reader_application_name() const { return options_.application_name + ":resume"; }
  /// The server-side statement_timeout of the bus's own connection: no
  /// sooner than its client-side deadlines would end a statement.
  std::chrono::milliseconds connection_statement_timeout() const noexcept {
    return std::max(options_.query_timeout, options_.publish_timeout);
  }

 private:
  BusConfig(PostgresBusOptions options, std::string origin)
      : options_(std::move(options)), origin_(std::move(origin)) {}
  PostgresBusOptions options_;
  std::string origin_;
};

/// What a bus's parts share besides their configuration. Everything here
/// outlives the parts (PostgresClusterBus::impl owns it).
struct BusServices {
  const BusConfig& config;
  const Logger& log;
  const ErrorSink& on_error;  // counts, logs, then calls the user's on_error
  std::shared_ptr<StatsCounters> stats;
  DeadlineTimer& deadlines;
  const MessageAuth& auth;
  const SpillStore& store;
  const ChannelTap& tap;  // a tool's view of the channel (syncbus tail); empty for a bus
};

}  // namespace syncbus::detail
