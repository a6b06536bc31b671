#include "server_admin.hpp"

#include <fmt/format.h>
#include <pqxx/nontransaction>
#include <pqxx/result>

#include <iterator>

namespace syncbus::detail {

double notification_queue_usage(pqxx::connection_base& session) {
  return pqxx::nontransaction(session)
      .exec1("SELECT pg_notification_queue_usage()")[0]
      .as<double>();
}

std::string notify_queue_problem(double usage) {
  return fmt::format(
      "PostgreSQL's NOTIFY queue is {:.1f}% full: a listening session on this server has "
      "stopped reading, and when the queue is full every NOTIFY fails. Find it in "
      "pg_stat_activity (state 'idle in transaction', or wait_event 'ClientWrite'), and end "
      "it (docs/OPERATIONS.md, \"Watching the NOTIFY queue\")",
      usage * 100);
}

std::string listener_tag(std::string_view channel) {
  std::string hex;
  hex.reserve(channel.size() * 2);
  for (const unsigned char c : channel) fmt::format_to(std::back_inserter(hex), "{:02x}", c);
  return "/* syncbus listener of channel 0x" + hex + " */ ";
}

std::vector<ListeningSession> sessions_listening(pqxx::connection_base& session,
                                                 std::string_view channel) {
  const auto tag = listener_tag(channel);
  const auto rows = pqxx::nontransaction(session).exec_params(
      "SELECT pid, application_name, coalesce(host(client_addr), 'local'), "
      "to_char(backend_start, 'YYYY-MM-DD\"T\"HH24:MI:SSOF'), coalesce(state, '') "
      "FROM pg_stat_activity WHERE (query = $1 OR left(query, length($2)) = $2) "
      "AND pid <> pg_backend_pid() ORDER BY backend_start",
      "LISTEN " + session.quote_name(std::string(channel)), tag);
  std::vector<ListeningSession> sessions;
  sessions.reserve(rows.size());
  for (const auto& row : rows) {
    sessions.push_back({row[0].as<int>(), row[1].as<std::string>(), row[2].as<std::string>(),
                        row[3].as<std::string>(), row[4].as<std::string>()});
  }
  return sessions;
}

std::int64_t terminate_stuck_sessions(pqxx::connection_base& session,
                                      std::chrono::milliseconds stuck_after) {
  // 'idle in transaction': get_notifs() sees nothing while a transaction is
  // open, and the session pins the queue tail. ClientWrite: the server is
  // blocked sending to a client that stopped reading.
  return pqxx::nontransaction(session)
      .exec_params1(
          "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
          "WHERE application_name LIKE 'syncbus:%' AND pid <> pg_backend_pid() "
          "AND ((state = 'idle in transaction' AND state_change < now() - $1::bigint * "
          "interval '1 millisecond') OR (wait_event = 'ClientWrite' AND "
          "state_change < now() - $1::bigint * interval '1 millisecond'))",
          static_cast<std::int64_t>(stuck_after.count()))[0]
      .as<std::int64_t>();
}

}  // namespace syncbus::detail
