#include "preflight.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>

namespace syncbus::detail {

ServerFacts read_server_facts(pqxx::connection_base& session) {
  pqxx::nontransaction query(session);
  const auto row = query.exec1(
      "SELECT current_setting('server_version_num')::int, current_setting('server_version'), "
      "pg_is_in_recovery(), current_setting('transaction_read_only')::bool, "
      "quote_ident(current_user)");
  return {row[0].as<int>(), row[1].as<std::string>(), row[2].as<bool>(), row[3].as<bool>(),
          row[4].as<std::string>()};
}

std::string read_database_identity(pqxx::connection_base& session) {
  pqxx::nontransaction query(session);
  const auto row = query.exec1(
      "SELECT (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())::text, "
      "has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')");
  std::string system;
  if (row[1].as<bool>()) {
    system = query.exec1("SELECT system_identifier::text FROM pg_catalog.pg_control_system()")[0]
                 .as<std::string>();
  }
  return system + "/" + row[0].as<std::string>();
}

void check_server(const ServerFacts& facts) {
  if (facts.version_num < min_server_version) {
    throw configuration_error(
        fmt::format("syncbus: the server runs PostgreSQL {} ({}); syncbus needs {} or later "
                    "(for 64-bit transaction ids and snapshots: xid8, pg_current_snapshot())",
                    facts.version, facts.version_num, min_server_version / 10000));
  }
  if (facts.in_recovery) {
    throw configuration_error(
        "syncbus: the server is a standby in recovery: LISTEN and pg_notify() fail there and "
        "nothing is delivered. Connect the bus to the primary (with several hosts in the "
        "conninfo, add target_session_attrs=read-write)");
  }
}

std::string read_only_problem(const ServerFacts& facts) {
  if (!facts.read_only || facts.in_recovery) return "";
  return fmt::format(
      "the sessions of role {0} are read-only (default_transaction_read_only = on, set for the "
      "role, the database, or in PGOPTIONS): NOTIFY works, but spilled messages cannot be "
      "written, nor old rows vacuumed. Turn it off for the bus's role: ALTER ROLE {0} SET "
      "default_transaction_read_only = off; (or publish with SpillMode::never, which writes "
      "nothing)",
      facts.role);
}

void check_privileges(const std::vector<SpillStore::MissingPrivilege>& missing) {
  if (missing.empty()) return;
  std::string what, grants;
  for (const auto& m : missing) {
    what += (what.empty() ? "" : ", ") + m.what;
    grants += "\n  " + m.grant;
  }
  throw configuration_error(
      fmt::format("syncbus: this role lacks privileges the bus needs: {}. Grant them with:{}\nSee "
                  "docs/OPERATIONS.md for the grants each role needs",
                  what, grants));
}

}  // namespace syncbus::detail
