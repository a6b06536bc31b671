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

#include "bus_config.hpp"
#include "error_sink.hpp"
#include "periodic_tasks.hpp"
#include "publisher.hpp"
#include "spill_store.hpp"
#include "stats_counters.hpp"

namespace syncbus::detail {

class BusUpkeep {
 public:
  /// Reads from `services.config` the intervals (heartbeat_interval,
  /// queue_usage_interval, watchdog_interval: each 0 is off),
  /// queue_usage_warning, watchdog_stuck_after and query_timeout. The
  /// services and `publisher` must outlive it.
  BusUpkeep(const BusServices& services, Publisher& publisher);

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

  const PostgresBusOptions& options_;
  Publisher& publisher_;
  const SpillStore& store_;
  std::shared_ptr<StatsCounters> stats_;
  ErrorSink on_error_;
};

}  // namespace syncbus::detail
