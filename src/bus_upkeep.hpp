#pragma once
// What a PostgresClusterBus does on its own connection besides publishing,
// and what it tells the operator about it: the timer thread's tasks
// (heartbeats when idle, the NOTIFY-queue watch, the watchdog of stuck
// sessions), vacuum(), and the start-up probe that proves LISTEN works on
// the connection path. Each borrows the connection from the Publisher
// between batches; the statements are server_admin.cpp's and the spill
// store's.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "error_sink.hpp"
#include "periodic_tasks.hpp"
#include "publisher.hpp"
#include "spill_store.hpp"
#include "stats_counters.hpp"

namespace syncbus::detail {

class BusUpkeep {
 public:
  struct Settings {
    std::string channel;
    std::chrono::milliseconds query_timeout;
    /// Each 0: off.
    std::chrono::milliseconds heartbeat_interval;
    std::chrono::milliseconds queue_usage_interval;
    std::chrono::milliseconds watchdog_interval;
    /// The NOTIFY queue's fill (0 to 1) at which on_error hears of it.
    double queue_usage_warning;
    std::chrono::milliseconds watchdog_stuck_after;
  };

  /// `publisher` and `store` must outlive it.
  BusUpkeep(Settings settings, Publisher& publisher, const SpillStore& store,
            std::shared_ptr<StatsCounters> stats, ErrorSink on_error);

  /// The timer thread's tasks (those switched on).
  std::vector<PeriodicTasks::Task> periodic_tasks() const;

  /// Deletes the spill rows of this channel older than `older_than`;
  /// returns how many. Throws configuration_error for a negative age.
  std::int64_t vacuum(std::chrono::milliseconds older_than);

  /// NOTIFYs `payload` on `channel` as is, unprepared: the start-up round
  /// trip that proves LISTEN works through this connection path (behind a
  /// transaction pooler a prepared statement may not exist on the server
  /// connection that runs it; the probe exists to give that case a clear
  /// error of its own).
  void probe_notify(const std::string& channel, const std::string& payload);

 private:
  void watch_notify_queue() const;
  void end_stuck_sessions() const;

  Settings settings_;
  Publisher& publisher_;
  const SpillStore& store_;
  std::shared_ptr<StatsCounters> stats_;
  ErrorSink on_error_;
};

}  // namespace syncbus::detail
