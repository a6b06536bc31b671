#pragma once
// A listener's connection and what hangs off it: the LISTENs (one inbox per
// channel), and the payloads that libpqxx hands over while it reads. One ListenSession per
// connection; the listener's thread owns it, and a broken one is replaced
// whole.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "notification_inbox.hpp"
#include "pg_session.hpp"

namespace syncbus::detail {

struct ListenSession {
  std::unique_ptr<Session> connection;
  /// The bus channel's payloads, and the markers that came back on the
  /// listener's private channel, each in arrival order.
  std::vector<Notification> pending;
  std::vector<Notification> returned_markers;
  // Declared after `connection` and the sinks, so destroyed before them.
  std::unique_ptr<NotificationInbox> collector;
  std::unique_ptr<NotificationInbox> markers;
  int backend_pid = 0;
};

/// Sets up a session that reads the spill table under `query_timeout`
/// (one round trip): rows are found by key whatever the planner's
/// statistics say (SpillStore::read_by_key_only), and the server ends a
/// statement (statement_timeout, just before the client's own deadline
/// would cut the connection) or a lock wait (lock_timeout, half of it) with
/// an error the listener retries, where a role's shorter statement_timeout
/// would have failed every fetch of a large body.
void configure_reading_session(pqxx::connection_base& session,
                               std::chrono::milliseconds query_timeout);

}  // namespace syncbus::detail
