#include "connection.hpp"

#include <syncbus/errors.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <pqxx/nontransaction>

#include "bus_config.hpp"
#include "conninfo.hpp"
#include "identifiers.hpp"

namespace syncbus::cli {

const std::vector<std::string>& connection_options() {
  static const std::vector<std::string> names = {"db",    "channel",     "schema",
                                                 "table", "secret-file", "timeout"};
  return names;
}

const char* const connection_help =
    "  --db CONNINFO        libpq connection string or URI (default: $DATABASE_URL;\n"
    "                       without either, libpq's environment: PGHOST, PGPORT,\n"
    "                       PGDATABASE, PGUSER, PGPASSWORD, PGSERVICE..., as psql)\n"
    "  --channel NAME       the bus's channel (default: absolutejs_sync_cluster)\n"
    "  --schema NAME        the spill table's schema (default: public)\n"
    "  --table NAME         the spill table (default: sync_cluster_spill)\n"
    "  --secret-file FILE   the buses' shared secrets, one per line, the signing one\n"
    "                       first (default: $SYNCBUS_SECRET_FILE; none: unsigned)\n"
    "  --timeout AGE        the longest one statement may take, waiting for a lock\n"
    "                       included (default: 30s, publish: 5s; 0: no limit)\n";

Connection connection_from(const CommandLine& line) {
  Connection c;
  if (auto db = line.value("db")) {
    c.conninfo = *db;
  } else if (const char* env = std::getenv("DATABASE_URL"); env != nullptr && *env != '\0') {
    c.conninfo = env;
  } else {
    // As psql does: libpq takes everything else from its environment
    // (PGHOST, PGPORT, PGDATABASE, PGUSER, PGSERVICE, ...) and defaults.
    c.conninfo = environment_conninfo;
  }
  try {
    detail::connection_option(c.conninfo, "host");  // parses it
  } catch (const configuration_error&) {
    throw usage_error(
        "--db is not a valid libpq connection string or URI (e.g. postgresql://user@host/db, "
        "or \"host=... dbname=...\"); see the libpq documentation, \"Connection Strings\"");
  }
  if (auto v = line.value("channel")) c.channel = *v;
  if (auto v = line.value("schema")) c.schema = *v;
  if (auto v = line.value("table")) c.table = *v;
  if (auto v = line.value("timeout")) c.statement_timeout = parse_duration("timeout", *v);
  std::optional<std::string> secret_file = line.value("secret-file");
  if (!secret_file) {
    if (const char* env = std::getenv("SYNCBUS_SECRET_FILE"); env != nullptr && *env != '\0') {
      secret_file = env;
    }
  }
  if (secret_file) {
    std::ifstream in(*secret_file);
    if (!in) throw usage_error("cannot read the secret file " + *secret_file);
    for (std::string secret; std::getline(in, secret);) {
      if (!secret.empty() && secret.back() == '\r') secret.pop_back();
      if (!secret.empty()) c.secrets.push_back(secret);
    }
    if (c.secrets.empty()) throw usage_error("the secret file " + *secret_file + " is empty");
  }
  return c;
}

std::unique_ptr<detail::Session> open_session(const Connection& where,
                                              const std::string& application_name,
                                              detail::ConnectLimits limits) {
  auto session = detail::open_session(where.conninfo, application_name, limits);
  try {
    // Set here rather than through the conninfo's `options`, which the
    // user's connection string may already use; with search_path, as the
    // library's own sessions are (pg_session.hpp).
    detail::configure_session(*session, where.statement_timeout);
  } catch (...) {
    detail::rethrow_as_syncbus_error("setting up the session (--timeout)");
  }
  return session;
}

PostgresBusOptions bus_options(const Connection& where) {
  PostgresBusOptions options;
  options.conninfo = where.conninfo;
  options.channel = where.channel;
  options.spill_schema = where.schema;
  options.spill_table = where.table;
  options.secrets = where.secrets;
  return options;
}

void check_bus_options(const PostgresBusOptions& options) {
  try {
    detail::BusConfig::resolve(options);
  } catch (const configuration_error& e) {
    std::string what = in_command_line_terms(e.what());
    if (what.rfind("syncbus: ", 0) == 0) what.erase(0, 9);
    throw usage_error(what);
  }
}

std::vector<std::pair<std::string, std::string>> identifiers(const Connection& where) {
  // Named as the user gave them: by their flags.
  return {{"--channel", where.channel}, {"--schema", where.schema}, {"--table", where.table}};
}

void check_identifiers(const Connection& where) {
  for (const auto& [flag, value] : identifiers(where)) {
    try {
      detail::check_identifier(flag, value);
    } catch (const configuration_error& e) {
      // The command line is at fault: say so as usage errors do.
      std::string what = e.what();
      if (what.rfind("syncbus: ", 0) == 0) what.erase(0, 9);
      throw usage_error(what);
    }
  }
}

std::string in_command_line_terms(std::string message) {
  // The library names its options; the tool's user gave flags.
  static const std::pair<const char*, const char*> flags[] = {
      {"PostgresBusOptions::conninfo", "--db (or DATABASE_URL, or libpq's PG* environment)"},
      {"PostgresBusOptions::channel", "--channel"},
      {"PostgresBusOptions::spill_schema", "--schema"},
      {"PostgresBusOptions::spill_table", "--table"},
      {"PostgresBusOptions::secrets", "--secret-file"},
      {"PostgresBusOptions::max_message_bytes", "--max-bytes"},
      {"PostgresBusOptions::instance_id", "--name"},
      {"PostgresBusOptions::create_spill_table is false",
       "this command creates no table (a bus or a migration does: docs/OPERATIONS.md)"},
      {"PostgresBusOptions::query_timeout", "--timeout"},
      {"PostgresBusOptions::publish_timeout", "--timeout"},
  };
  for (const auto& [option, flag] : flags) {
    for (auto at = message.find(option); at != std::string::npos; at = message.find(option, at)) {
      message.replace(at, std::strlen(option), flag);
      at += std::strlen(flag);
    }
  }
  return message;
}

}  // namespace syncbus::cli
