#include "bus_upkeep.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>

#include "server_admin.hpp"

namespace syncbus::detail {

BusUpkeep::BusUpkeep(const BusServices& services, Publisher& publisher)
    : options_(services.config.options()),
      publisher_(publisher),
      store_(services.store),
      stats_(services.stats),
      on_error_(services.on_error) {}

std::vector<PeriodicTasks::Task> BusUpkeep::periodic_tasks() const {
  // The tasks run on the timer thread, which the bus stops before this goes.
  std::vector<PeriodicTasks::Task> tasks;
  if (options_.heartbeat_interval.count() > 0) {
    tasks.push_back({options_.heartbeat_interval,
                     [this] { publisher_.heartbeat_if_idle(options_.heartbeat_interval); }});
  }
  if (options_.queue_usage_interval.count() > 0) {
    tasks.push_back({options_.queue_usage_interval, [this] { watch_notify_queue(); }});
  }
  if (options_.watchdog_interval.count() > 0) {
    tasks.push_back({options_.watchdog_interval, [this] { end_stuck_sessions(); }});
  }
  return tasks;
}

void BusUpkeep::watch_notify_queue() const {
  double usage = 0;
  publisher_.borrow_connection(
      "notification_queue_usage()", options_.query_timeout,
      [&](Session& session) { usage = notification_queue_usage(session); },
      "reading pg_notification_queue_usage()");
  stats_->notification_queue_usage.store(usage, std::memory_order_relaxed);
  if (usage < options_.queue_usage_warning) return;
  report(on_error_,
         error(fmt::format("syncbus: {} (PostgresBusOptions::queue_usage_warning: {:.1f}%). The "
                           "bus's watchdog can end such sessions "
                           "(PostgresBusOptions::watchdog_interval)",
                           notify_queue_problem(usage), options_.queue_usage_warning * 100)));
}

void BusUpkeep::end_stuck_sessions() const {
  std::int64_t terminated = 0;
  publisher_.borrow_connection(
      "the watchdog", options_.query_timeout,
      [&](Session& session) {
        terminated = terminate_stuck_sessions(session, options_.watchdog_stuck_after);
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
  // In batches, each borrowing the connection under its own deadline, so
  // that publishing goes on between them and a large backlog is no single
  // long statement.
  const auto what = fmt::format("vacuuming the spill table {}", store_.qualified_name());
  std::string cutoff;
  bool note_removed = false;
  publisher_.borrow_connection(
      "vacuum()", options_.query_timeout,
      [&](Session& session) {
        cutoff = store_.vacuum_cutoff(session, older_than);
        note_removed = store_.has_removal_log(session);
      },
      what);
  std::int64_t deleted = 0;
  for (std::int64_t batch = SpillStore::vacuum_batch_rows;
       batch == SpillStore::vacuum_batch_rows;) {
    publisher_.borrow_connection(
        "vacuum()", options_.query_timeout,
        [&](Session& session) {
          batch = store_.vacuum_batch(session, cutoff, SpillStore::vacuum_batch_rows, note_removed);
        },
        what);
    deleted += batch;
  }
  return deleted;
}

void BusUpkeep::probe_notify(const std::string& channel, const std::string& payload) {
  publisher_.borrow_connection(
      "the start-up NOTIFY round trip", options_.query_timeout,
      [&](Session& session) {
        pqxx::nontransaction(session).exec_params("SELECT pg_notify($1, $2)", channel, payload);
      },
      fmt::format("sending a NOTIFY on \"{}\"", channel));
}

}  // namespace syncbus::detail
