#include "pg_session.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/except>
#include <pqxx/nontransaction>

#include "conninfo.hpp"

namespace syncbus::detail {
namespace {

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '.')) {
    text.pop_back();
  }
  return text;
}

}  // namespace

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
    const std::string& state = e.sqlstate();
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
        fmt::format("syncbus: PostgreSQL refused a statement while {}: {} "
                    "(SQLSTATE {})",
                    doing, trimmed(e.what()), e.sqlstate().empty() ? "unknown" : e.sqlstate()),
        e.sqlstate());
  } catch (const std::exception& e) {
    throw error(fmt::format("syncbus: failed while {}: {}", doing, trimmed(e.what())));
  }
}

std::unique_ptr<Session> open_session(const std::string& conninfo,
                                      const std::string& application_name) {
  // Set at connection time rather than by SET: no extra round trips, and they
  // hold for whatever connection libpq makes from this string.
  const std::string full_conninfo = with_connection_options(
      conninfo, {{"application_name", application_name}, {"client_encoding", "UTF8"}},
      {{"connect_timeout", "5"}});
  try {
    return std::make_unique<Session>(full_conninfo);
  } catch (const std::exception& e) {
    // libpq's message names host and port but not the password; the conninfo
    // itself is never echoed.
    throw connection_error(fmt::format(
        "syncbus: could not connect to PostgreSQL: {}. Check PostgresBusOptions::conninfo and "
        "that the server accepts connections",
        trimmed(e.what())));
  }
}

bool needs_ascii_payloads(pqxx::connection& session) {
  try {
    pqxx::nontransaction query(session);
    const auto encoding = query.exec1("SHOW server_encoding")[0].as<std::string>();
    return encoding != "UTF8" && encoding != "SQL_ASCII";
  } catch (...) {
    rethrow_as_syncbus_error("reading the server encoding");
  }
}

}  // namespace syncbus::detail
