#include "server_admin.hpp"

#include <fmt/format.h>
#include <pqxx/nontransaction>
#include <pqxx/result>

#include <cctype>
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

namespace {

// Skips white space and comments (-- to the end of the line, /* */ nested
// as the server nests them) from `at`.
void skip_blanks(std::string_view text, std::size_t& at) {
  while (at < text.size()) {
    const char c = text[at];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      ++at;
    } else if (text.substr(at, 2) == "--") {
      const auto end = text.find('\n', at);
      at = end == std::string_view::npos ? text.size() : end + 1;
    } else if (text.substr(at, 2) == "/*") {
      int depth = 0;
      do {
        if (text.substr(at, 2) == "/*") {
          ++depth;
          at += 2;
        } else if (text.substr(at, 2) == "*/") {
          --depth;
          at += 2;
        } else {
          ++at;
        }
      } while (depth > 0 && at < text.size());
    } else {
      return;
    }
  }
}

bool identifier_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '$' || c >= 0x80;
}

}  // namespace

bool is_listen_on(std::string_view statement, std::string_view channel) {
  std::size_t at = 0;
  skip_blanks(statement, at);
  constexpr std::string_view keyword = "listen";
  if (statement.size() - at < keyword.size()) return false;
  for (std::size_t i = 0; i < keyword.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(statement[at + i])) != keyword[i]) return false;
  }
  at += keyword.size();
  const auto after_keyword = at;
  skip_blanks(statement, at);
  std::string name;
  if (at < statement.size() && statement[at] == '"') {
    for (++at;; ++at) {
      if (at >= statement.size()) return false;  // unterminated
      if (statement[at] == '"') {
        if (at + 1 < statement.size() && statement[at + 1] == '"') {
          name += '"';
          ++at;
        } else {
          ++at;
          break;
        }
      } else {
        name += statement[at];
      }
    }
  } else {
    if (at == after_keyword) return false;  // LISTENx is another word
    const auto first = at;
    while (at < statement.size() && identifier_char(static_cast<unsigned char>(statement[at]))) {
      // The server folds unquoted names to lower case (ASCII letters).
      name += static_cast<char>(std::tolower(static_cast<unsigned char>(statement[at])));
      ++at;
    }
    if (at == first || (name[0] >= '0' && name[0] <= '9') || name[0] == '$') return false;
  }
  // Names are cut to NAMEDATALEN - 1 bytes, as LISTEN cuts them.
  if (name.size() > 63) name.resize(63);
  skip_blanks(statement, at);
  if (at < statement.size() && statement[at] == ';') ++at;
  skip_blanks(statement, at);
  return at == statement.size() && name == channel;
}

ChannelListeners sessions_listening(pqxx::connection_base& session, std::string_view channel) {
  const auto tag = listener_tag(channel);
  // Candidates: tagged statements, and anything that mentions LISTEN (read
  // here, as the server would read it); and the syncbus sessions whose
  // statements this role may not see.
  const auto rows = pqxx::nontransaction(session).exec_params(
      "SELECT pid, application_name, coalesce(host(client_addr), 'local'), "
      "to_char(backend_start, 'YYYY-MM-DD\"T\"HH24:MI:SSOF'), coalesce(state, ''), "
      "coalesce(query, ''), coalesce(left(query, length($1)) = $1, false), "
      "coalesce(state = 'idle' OR (state = 'active' AND xact_start = query_start), false) "
      "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
      "((backend_type = 'client backend' AND (left(query, length($1)) = $1 OR "
      "query ILIKE '%listen%')) OR query = '<insufficient privilege>') "
      "ORDER BY backend_start",
      tag);
  ChannelListeners found;
  for (const auto& row : rows) {
    const auto statement = row[5].as<std::string>();
    if (statement == "<insufficient privilege>") {
      ++found.hidden;
      continue;
    }
    const bool tagged = row[6].as<bool>();
    const bool outside_a_transaction = row[7].as<bool>();
    if (tagged || (outside_a_transaction && is_listen_on(statement, channel))) {
      found.sessions.push_back({row[0].as<int>(), row[1].as<std::string>(),
                                row[2].as<std::string>(), row[3].as<std::string>(),
                                row[4].as<std::string>()});
    }
  }
  return found;
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
