#pragma once
// The parts of a PostgresClusterBus, built and wired in dependency order,
// and closed in the reverse: its configuration and shared services, the
// publisher and its connection's upkeep, the listener and the delivery
// stage, the timers. PostgresClusterBus is its public face; `syncbus tail`
// builds one with a ChannelTap, so that it hears a channel exactly as a bus
// does.

#include <syncbus/bus_stats.hpp>
#include <syncbus/cluster_bus.hpp>
#include <syncbus/postgres_bus_options.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "bus_config.hpp"
#include "channel_tap.hpp"
#include "deadline_timer.hpp"
#include "error_sink.hpp"
#include "logger.hpp"
#include "stats_counters.hpp"

namespace syncbus::detail {

class BusUpkeep;
class DeliveryQueue;
class ListenerLoop;
class MessageAuth;
class PeriodicTasks;
class Publisher;
class ResumeReader;
class SpillStore;

class BusParts {
 public:
  /// Checks the server, the table and the role's privileges, then starts
  /// every part (PostgresClusterBus's constructor says what it throws).
  explicit BusParts(PostgresBusOptions options, ChannelTap tap = {});
  /// close()s.
  ~BusParts();
  BusParts(const BusParts&) = delete;
  BusParts& operator=(const BusParts&) = delete;

  const BusConfig& config() const noexcept { return *config_; }
  void publish(const nlohmann::json& body);
  std::future<void> publish_async(const nlohmann::json& body);
  /// Throws closed_error after close(), configuration_error on a
  /// publish-only bus.
  Subscription subscribe(MessageHandler handler);
  /// See PostgresClusterBus::subscribe_from.
  Subscription subscribe_from(std::string_view position, MessageHandler handler);
  BusStats stats() const { return stats_->snapshot(); }
  std::int64_t vacuum(std::chrono::milliseconds older_than);
  /// Any thread, callbacks too, concurrently: see PostgresClusterBus::close.
  void close();

 private:
  /// True on a thread of this bus: its callbacks run there.
  bool on_own_thread() const noexcept;

  // Declared in dependency order; the destructor runs close() first, so
  // that threads stop before the objects they use go away.
  std::optional<BusConfig> config_;  // set first, by the constructor
  const ChannelTap tap_;
  std::shared_ptr<StatsCounters> stats_ = std::make_shared<StatsCounters>();
  Logger log_;
  ErrorSink on_error_;  // counts, logs, then calls the user's on_error
  std::unique_ptr<MessageAuth> auth_;
  std::unique_ptr<SpillStore> store_;
  DeadlineTimer deadlines_;
  std::optional<BusServices> services_;      // the parts' view of the above
  std::unique_ptr<DeliveryQueue> delivery_;  // none when publish-only
  std::unique_ptr<Publisher> publisher_;
  std::unique_ptr<BusUpkeep> upkeep_;       // borrows the publisher's connection
  std::unique_ptr<ListenerLoop> listener_;  // none when publish-only
  std::unique_ptr<PeriodicTasks> timers_;
  // Positions: given by a durable bus whose table has its removal log;
  // the key ties them to the channel (position_token.hpp).
  bool gives_positions_ = false;
  std::string position_key_;
  // Made by the first subscribe_from().
  mutable std::mutex reader_mutex_;
  std::unique_ptr<ResumeReader> reader_;

  // close() may be called from any thread, from the bus's own callbacks too
  // (a handler, on_error, on_gap, log), concurrently. The first call does
  // the work; see close().
  std::atomic<bool> closed_{false};
  std::mutex close_mutex_;
  std::condition_variable close_finished_;
  enum class CloseState { open, closing, closed } close_state_ = CloseState::open;
  std::thread::id closing_thread_;
};

}  // namespace syncbus::detail
