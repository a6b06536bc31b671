#pragma once
// The publishing side of a PostgresClusterBus: one connection, one statement
// per message, serialised by a mutex so that sequence order is commit order.

#include <syncbus/postgres_bus.hpp>

#include <pqxx/connection>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "deadline_timer.hpp"
#include "pg_session.hpp"
#include "spill_store.hpp"
#include "stats_counters.hpp"

namespace syncbus::detail {

class Publisher {
 public:
  /// Takes an open connection to `conninfo` and prepares its statements. A
  /// connection that breaks is dropped and replaced, on the next call, by a
  /// new one set up the same way (never by libpqxx's silent reactivation).
  Publisher(std::unique_ptr<Session> session, std::string conninfo, std::string application_name,
            const SpillStore& store, std::string channel, std::string origin, SpillMode mode,
            std::shared_ptr<StatsCounters> stats, DeadlineTimer& deadlines,
            std::chrono::milliseconds publish_timeout, std::chrono::milliseconds query_timeout);

  /// Sends one message; returns once it is committed. Throws payload_too_large
  /// (SpillMode::never), invalid_message, timeout_error (past the publish
  /// timeout), connection_error, notify_queue_full or database_error.
  void publish(const nlohmann::json& body);

  std::int64_t vacuum(std::chrono::milliseconds older_than);

  /// Sends a heartbeat (the last sequence number) if something was published
  /// and nothing was sent for `idle`. Throws like publish().
  void heartbeat_if_idle(std::chrono::milliseconds idle);

  /// pg_notification_queue_usage(), 0 to 1.
  double notification_queue_usage();

  /// Terminates other sessions whose application_name starts with "syncbus:"
  /// and that have been idle in a transaction, or blocked writing to their
  /// client, for longer than `stuck_after`. Returns how many.
  std::int64_t terminate_stuck_listeners(std::chrono::milliseconds stuck_after);

  /// Closes the connection; later calls throw closed_error.
  void close() noexcept;

 private:
  /// The open session, reconnecting first if the last one broke.
  Session& session();
  /// Runs work(session()) under a deadline of `timeout` from now; translates
  /// failures, naming describe(), and drops a session whose connection broke.
  template <typename Work, typename Describe>
  auto with_session(std::chrono::milliseconds timeout, Work&& work, Describe&& describe);
  void prepare(Session& session);

  std::mutex mutex_;
  bool closed_ = false;
  std::unique_ptr<Session> session_;  // null after a broken connection
  std::string conninfo_;
  std::string application_name_;
  const SpillStore& store_;
  std::string channel_;
  std::string origin_;
  SpillMode mode_;
  bool ascii_only_ = false;
  std::shared_ptr<StatsCounters> stats_;
  DeadlineTimer& deadlines_;
  std::chrono::milliseconds publish_timeout_;
  std::chrono::milliseconds query_timeout_;
  std::chrono::steady_clock::time_point last_sent_{};
  // Never reused, even after a failed publish: a failure at COMMIT leaves the
  // outcome unknown, and reusing the number could make receivers drop the
  // next message as a duplicate. A failure shows up as a gap instead.
  std::uint64_t last_sequence_ = 0;
};

}  // namespace syncbus::detail
