#pragma once
// A listener's connection and what hangs off it: the LISTENs, and the
// payloads that libpqxx hands over while it reads. One ListenSession per
// connection; the listener's thread owns it, and a broken one is replaced
// whole.

#include <pqxx/notification>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "pg_session.hpp"

namespace syncbus::detail {

/// One notification: its payload, and the server process that sent it.
struct Notification {
  std::string payload;
  int sender_pid = 0;
};

/// Collects the notifications of one channel during get_notifs(), in order;
/// they are decoded afterwards, outside libpqxx's callback, where the
/// connection may run the spill fetch. Constructing it LISTENs; destroying
/// it UNLISTENs.
class PayloadCollector final : public pqxx::notification_receiver {
 public:
  PayloadCollector(pqxx::connection_base& session, const std::string& channel,
                   std::vector<Notification>& sink)
      : pqxx::notification_receiver(session, channel), sink_(sink) {}
  void operator()(const std::string& payload, int backend_pid) override {
    sink_.push_back({payload, backend_pid});
  }

 private:
  std::vector<Notification>& sink_;
};

struct ListenSession {
  std::unique_ptr<Session> connection;
  /// The bus channel's payloads, and the markers that came back on the
  /// listener's private channel, each in arrival order.
  std::vector<Notification> pending;
  std::vector<Notification> returned_markers;
  // Declared after `connection` and the sinks, so destroyed before them.
  std::unique_ptr<PayloadCollector> collector;
  std::unique_ptr<PayloadCollector> markers;
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
