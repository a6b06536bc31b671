#include "bus_upkeep.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>

#include "server_admin.hpp"

namespace syncbus::detail {

BusUpkeep::BusUpkeep(Settings settings, Publisher& publisher, const SpillStore& store,
                     std::shared_ptr<StatsCounters> stats, ErrorSink on_error)
    : settings_(std::move(settings)),
      publisher_(publisher),
      store_(store),
      stats_(std::move(stats)),
      on_error_(std::move(on_error)) {}

std::vector<PeriodicTasks::Task> BusUpkeep::periodic_tasks() const {
  // The tasks run on the timer thread, which the bus stops before this goes.
  std::vector<PeriodicTasks::Task> tasks;
  if (settings_.heartbeat_interval.count() > 0) {
    tasks.push_back({settings_.heartbeat_interval,
                     [this] { publisher_.heartbeat_if_idle(settings_.heartbeat_interval); }});
  }
  if (settings_.queue_usage_interval.count() > 0) {
    tasks.push_back({settings_.queue_usage_interval, [this] { watch_notify_queue(); }});
  }
  if (settings_.watchdog_interval.count() > 0) {
    tasks.push_back({settings_.watchdog_interval, [this] { end_stuck_sessions(); }});
  }
  return tasks;
}

void BusUpkeep::watch_notify_queue() const {
  double usage = 0;
  publisher_.borrow_connection(
      "notification_queue_usage()", settings_.query_timeout,
      [&](Session& session) { usage = notification_queue_usage(session); },
      "reading pg_notification_queue_usage()");
  stats_->notification_queue_usage.store(usage, std::memory_order_relaxed);
  if (usage < settings_.queue_usage_warning) return;
  report(on_error_,
         error(fmt::format("syncbus: {} (PostgresBusOptions::queue_usage_warning: {:.1f}%). The "
                           "bus's watchdog can end such sessions "
                           "(PostgresBusOptions::watchdog_interval)",
                           notify_queue_problem(usage), settings_.queue_usage_warning * 100)));
}

void BusUpkeep::end_stuck_sessions() const {
  std::int64_t terminated = 0;
  publisher_.borrow_connection(
      "the watchdog", settings_.query_timeout,
      [&](Session& session) {
        terminated = terminate_stuck_sessions(session, settings_.watchdog_stuck_after);
      },
      "looking for stuck listeners in pg_stat_activity");
  if (terminated == 0) return;
  StatsCounters::add(stats_->stuck_listeners_terminated, static_cast<std::uint64_t>(terminated));
  report(on_error_, error(fmt::format("syncbus: the watchdog terminated {} stuck syncbus "
                                      "session(s) that held back the NOTIFY queue",
                                      terminated)));
}

std::int64_t BusUpkeep::vacuum(std::chrono::milliseconds older_than) {
  if (older_than.count() < 0) {
    throw configuration_error(
        fmt::format("syncbus: vacuum() was given a negative age ({} ms); pass how old a "
                    "spill row must be to be deleted, e.g. std::chrono::minutes(1)",
                    older_than.count()));
  }
  std::int64_t deleted = 0;
  publisher_.borrow_connection(
      "vacuum()", settings_.query_timeout,
      [&](Session& session) { deleted = store_.vacuum(session, older_than); },
      fmt::format("vacuuming the spill table {}", store_.qualified_name()));
  return deleted;
}

void BusUpkeep::probe_notify(const std::string& channel, const std::string& payload) {
  publisher_.borrow_connection(
      "the start-up NOTIFY round trip", settings_.query_timeout,
      [&](Session& session) {
        pqxx::nontransaction(session).exec_params("SELECT pg_notify($1, $2)", channel, payload);
      },
      fmt::format("sending a NOTIFY on \"{}\"", channel));
}

}  // namespace syncbus::detail
