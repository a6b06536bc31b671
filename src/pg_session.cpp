#include "pg_session.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pqxx/except>
#include <pqxx/nontransaction>

#include <algorithm>
#include <cerrno>
#include <new>

#include "conninfo.hpp"
#include "utf8.hpp"

namespace syncbus::detail {
namespace {

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '.')) {
    text.pop_back();
  }
  return text;
}

// `text` ended as one sentence: a full stop unless it asks or exclaims
// (libpq's "...accepting TCP/IP connections?").
std::string as_sentence(std::string text) {
  text = trimmed(std::move(text));
  if (text.empty() || (text.back() != '?' && text.back() != '!')) text += '.';
  return text;
}

using Clock = std::chrono::steady_clock;

// libpqxx 6.4 throws some of its typed SQL errors without the SQLSTATE it
// chose them by: recover it from the type.
std::string sqlstate_of(const pqxx::sql_error& e) {
  if (!e.sqlstate().empty()) return e.sqlstate();
  if (dynamic_cast<const pqxx::insufficient_privilege*>(&e) != nullptr) return "42501";
  if (dynamic_cast<const pqxx::disk_full*>(&e) != nullptr) return "53100";
  if (dynamic_cast<const pqxx::out_of_memory*>(&e) != nullptr) return "53200";
  if (dynamic_cast<const pqxx::insufficient_resources*>(&e) != nullptr) return "53000";
  return "";
}

// Runs libpq's non-blocking connection sequence on `conn` until it succeeds,
// fails, passes `limits.deadline`, or `limits.cancel_fd` becomes readable.
// Throws pqxx::broken_connection otherwise (the caller frees `conn`).
void complete_connection(PGconn* conn, const ConnectLimits& limits) {
  // As the libpq manual says: before the first PQconnectPoll, behave as if it
  // had returned PGRES_POLLING_WRITING.
  auto state = PGRES_POLLING_WRITING;
  for (;;) {
    if (state == PGRES_POLLING_OK) return;
    if (state == PGRES_POLLING_FAILED) throw pqxx::broken_connection(PQerrorMessage(conn));
    int timeout_ms = -1;
    if (limits.deadline) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*limits.deadline - Clock::now());
      if (left.count() <= 0) throw pqxx::broken_connection("timeout expired");
      timeout_ms = static_cast<int>(left.count()) + 1;
    }
    pollfd fds[2] = {
        {PQsocket(conn), static_cast<short>(state == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0},
        {limits.cancel_fd, POLLIN, 0}};
    const int ready = ::poll(fds, limits.cancel_fd >= 0 ? 2 : 1, timeout_ms);
    if (ready < 0 && errno != EINTR) {
      throw pqxx::broken_connection(fmt::format("poll() failed: errno {}", errno));
    }
    if (ready > 0 && limits.cancel_fd >= 0 && fds[1].revents != 0) {
      throw closed_error("syncbus: the bus was closed while connecting to PostgreSQL");
    }
    if (ready > 0 && fds[0].revents != 0) state = PQconnectPoll(conn);
  }
}

}  // namespace

void configure_session(pqxx::connection_base& session, std::chrono::milliseconds statement,
                       std::chrono::milliseconds lock) {
  // SET is a command, not a function: nothing on a search_path can stand
  // in for it.
  auto sql = fmt::format("SET search_path = pg_catalog, pg_temp; SET statement_timeout = {}",
                         std::max<long long>(1, statement.count()));
  if (lock.count() > 0) sql += fmt::format("; SET lock_timeout = {}", lock.count());
  // An acknowledged publish is on disk: synchronous_commit = off (from a
  // role's settings, PGOPTIONS or the conninfo) would let a crash lose
  // committed rows. Stronger settings (remote_apply, ...) are kept.
  sql +=
      "; SELECT set_config('synchronous_commit', 'on', false) "
      "WHERE current_setting('synchronous_commit') = 'off'";
  pqxx::nontransaction(session).exec(sql);
}

std::string kept_application_name(std::string name) {
  // NAMEDATALEN - 1 bytes, cut at a character boundary.
  constexpr std::size_t most = 63;
  if (name.size() <= most) return name;
  std::size_t end = 0;
  for (std::size_t i = 0; i < name.size();) {
    std::uint32_t code = 0;
    const auto length = std::max<std::size_t>(1, utf8_sequence(name, i, code));
    if (i + length > most) break;
    i += length;
    end = i;
  }
  name.resize(end);
  return name;
}

InterruptibleConnect::InterruptibleConnect(const std::string& options, ConnectLimits limits)
    : pqxx::connectionpolicy(options), limits_(limits) {}

pqxx::connectionpolicy::handle InterruptibleConnect::do_startconnect(handle orig) {
  if (orig != nullptr) return orig;
  if (connected_once_) {
    throw pqxx::broken_connection(
        "the connection was lost (syncbus replaces it with a new one rather than letting "
        "libpqxx re-establish it silently)");
  }
  connected_once_ = true;
  PGconn* conn = PQconnectStart(options().c_str());
  if (conn == nullptr) throw std::bad_alloc();
  try {
    if (PQstatus(conn) == CONNECTION_BAD) throw pqxx::broken_connection(PQerrorMessage(conn));
    complete_connection(conn, limits_);
  } catch (...) {
    PQfinish(conn);
    throw;
  }
  return conn;
}

pqxx::connectionpolicy::handle InterruptibleConnect::do_dropconnect(handle orig) noexcept {
  // libpqxx's reset() would otherwise PQreset() the dropped connection: a
  // blocking, silent reconnect. Closing it sends reset() through
  // do_startconnect(), which refuses.
  PQfinish(orig);
  return nullptr;
}

Session::Session(const std::string& conninfo, ConnectLimits limits)
    : pqxx::connection_base(policy_), options_(conninfo), policy_(options_, limits) {
  init();
}

Session::~Session() { close(); }

[[noreturn]] void rethrow_as_syncbus_error(std::string_view doing) {
  try {
    throw;
  } catch (const syncbus::error&) {
    throw;
  } catch (const pqxx::broken_connection& e) {
    throw connection_error(
        fmt::format("syncbus: lost the connection to PostgreSQL while {}: {}. Check that "
                    "the server is up and reachable",
                    doing, trimmed(e.what())));
  } catch (const pqxx::in_doubt_error& e) {
    throw connection_error(
        fmt::format("syncbus: the connection broke while {} and the outcome is unknown: {}", doing,
                    trimmed(e.what())));
  } catch (const pqxx::sql_error& e) {
    // Class 08 (connection exception) and 57P0x (the server terminated the
    // session or is shutting down) mean the connection is gone.
    const std::string state = sqlstate_of(e);
    if (state == "54000" && std::string(e.what()).find("NOTIFY queue") != std::string::npos) {
      throw notify_queue_full(
          fmt::format("syncbus: PostgreSQL's NOTIFY queue is full while {}: {} (SQLSTATE 54000). "
                      "A listening session somewhere stopped reading: look for it with "
                      "SELECT pg_notification_queue_usage() and pg_stat_activity "
                      "(state 'idle in transaction'), and end it",
                      doing, trimmed(e.what())),
          state);
    }
    if (state.rfind("08", 0) == 0 || state.rfind("57P0", 0) == 0) {
      throw connection_error(fmt::format(
          "syncbus: lost the connection to PostgreSQL while {}: {} (SQLSTATE {}). Check that "
          "the server is up and reachable",
          doing, trimmed(e.what()), state));
    }
    throw database_error(
        fmt::format("syncbus: PostgreSQL refused a statement while {}: {} (SQLSTATE {}){}", doing,
                    trimmed(e.what()), state.empty() ? "unknown" : state,
                    state == "42501" ? ". Grant the privilege it names to this role; "
                                       "docs/OPERATIONS.md lists what each role needs"
                                     : ""),
        state);
  } catch (const std::exception& e) {
    throw error(fmt::format("syncbus: failed while {}: {}", doing, trimmed(e.what())));
  }
}

std::unique_ptr<Session> open_session(const std::string& conninfo,
                                      const std::string& application_name, ConnectLimits limits) {
  // Set at connection time rather than by SET: no extra round trips, and they
  // hold for whatever connection libpq makes from this string. The name
  // is cut to what PostgreSQL keeps here, or the server would say so in a
  // notice, which libpq prints before the connection can silence it.
  const std::string full_conninfo = with_connection_options(
      conninfo,
      {{"application_name", kept_application_name(application_name)}, {"client_encoding", "UTF8"}},
      {{"connect_timeout", "5"}});
  // libpq enforces connect_timeout only in its blocking connect; the
  // non-blocking one is bounded here. 0 (or garbage) means no limit, as in libpq.
  int connect_timeout_s = 0;
  try {
    connect_timeout_s = std::stoi(connection_option(full_conninfo, "connect_timeout"));
  } catch (const std::logic_error&) {
  }
  if (connect_timeout_s > 0) {
    // libpq rounds timeouts under 2 s up to 2 s; so do we.
    const auto own = Clock::now() + std::chrono::seconds(std::max(connect_timeout_s, 2));
    limits.deadline = limits.deadline ? std::min(*limits.deadline, own) : own;
  }
  try {
    return std::make_unique<Session>(full_conninfo, limits);
  } catch (const closed_error&) {
    throw;  // close() interrupted it: nothing to check
  } catch (const std::exception& e) {
    // libpq's message names host and port but not the password; the conninfo
    // itself is never echoed.
    throw connection_error(fmt::format(
        "syncbus: could not connect to PostgreSQL: {} Check PostgresBusOptions::conninfo and "
        "that the server accepts connections",
        as_sentence(redacted(e.what(), conninfo))));
  }
}

bool needs_ascii_payloads(pqxx::connection_base& session) {
  try {
    pqxx::nontransaction query(session);
    const auto encoding = query.exec1("SHOW server_encoding")[0].as<std::string>();
    return encoding != "UTF8" && encoding != "SQL_ASCII";
  } catch (...) {
    rethrow_as_syncbus_error("reading the server encoding");
  }
}

}  // namespace syncbus::detail
