#pragma once
// What syncbus asks PostgreSQL about the sessions around a bus, in one
// place: the bus's periodic checks (the NOTIFY queue, the watchdog) and the
// CLI's `doctor` and `status` run these same statements and say the same
// things about them. Each runs one statement on the caller's connection,
// under the caller's deadline.

#include <pqxx/connection_base>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace syncbus::detail {

/// pg_notification_queue_usage(): how full the server-wide NOTIFY queue is,
/// 0 to 1.
double notification_queue_usage(pqxx::connection_base& session);

/// What a NOTIFY queue `usage` full means and how to find the cause, for an
/// operator (no "syncbus:" prefix).
std::string notify_queue_problem(double usage);

/// What begins every statement a bus's listening session runs once it
/// listens: a comment naming its channel (in hex: no name can end the
/// comment), so that pg_stat_activity shows which channel it listens on
/// whatever it is doing (PostgreSQL itself does not say).
std::string listener_tag(std::string_view channel);

/// A session listening on a channel.
struct ListeningSession {
  int pid = 0;
  std::string application_name;
  std::string client;  // its address, or "local"
  std::string since;   // when it connected, ISO 8601
  std::string state;
};

/// True when `statement` (a session's last, as pg_stat_activity shows it)
/// is a LISTEN on `channel`, as the server reads it: the keyword in any
/// case, after white space and comments; the name quoted (exactly, `""`
/// for a quote) or not (folded to lower case); an optional semicolon.
bool is_listen_on(std::string_view statement, std::string_view channel);

/// The sessions that listen on `channel` as far as this role can see.
struct ChannelListeners {
  /// Oldest first: every syncbus listener of the channel, whose statements
  /// all begin with its listener_tag(), busy or idle (`syncbus tail` is
  /// one); and any other session whose last statement was a LISTEN on it
  /// (is_listen_on) outside a transaction (one inside has not taken effect).
  std::vector<ListeningSession> sessions;
  /// Sessions whose statements this role may not see (other roles', to one
  /// without pg_read_all_stats; PostgreSQL hides their application_name
  /// too): any of them may listen on the channel.
  std::size_t hidden = 0;
};
ChannelListeners sessions_listening(pqxx::connection_base& session, std::string_view channel);

/// Terminates other sessions whose application_name starts with "syncbus:"
/// and that have been idle in a transaction (their notifications wait, and
/// they pin the queue's tail) or blocked writing to their client (which
/// stopped reading) for longer than `stuck_after`. Returns how many.
std::int64_t terminate_stuck_sessions(pqxx::connection_base& session,
                                      std::chrono::milliseconds stuck_after);

}  // namespace syncbus::detail
