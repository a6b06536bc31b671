#pragma once
// What the syncbus tool's commands share besides the command line
// (tools/command_line.hpp): which database, which channel, which spill
// table, which secrets, and how to connect.

#include <syncbus/postgres_bus.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "command_line.hpp"
#include "pg_session.hpp"

namespace syncbus::cli {

/// A bus's defaults, as the library defines them.
inline const PostgresBusOptions bus_defaults{};

/// At or above this NOTIFY queue fill, doctor and status report a problem:
/// where a bus warns by default.
inline const double queue_usage_problem = bus_defaults.queue_usage_warning;

struct Connection {
  std::string conninfo;  // --db, else DATABASE_URL
  std::string channel = bus_defaults.channel;
  std::string schema = bus_defaults.spill_schema;
  std::string table = bus_defaults.spill_table;
  std::vector<std::string> secrets;  // --secret-file, else SYNCBUS_SECRET_FILE
  /// --timeout: how long one statement may run, a lock wait included (0: no
  /// limit). An operator's command must not hang behind someone's lock.
  std::chrono::milliseconds statement_timeout{30000};
};

/// The options Connection reads, to pass to CommandLine.
const std::vector<std::string>& connection_options();
/// Reads them (and the environment). Throws usage_error when no database
/// is given or a secret file cannot be read.
Connection connection_from(const CommandLine& line);
/// A session to `where`, named `application_name` in pg_stat_activity, whose
/// statements are cancelled by the server past where.statement_timeout.
std::unique_ptr<detail::Session> open_session(const Connection& where,
                                              const std::string& application_name,
                                              detail::ConnectLimits limits = {});

/// A bus's options for `where`: its database, channel, spill table and
/// secrets (the rest as a bus's defaults).
PostgresBusOptions bus_options(const Connection& where);

/// Checks `options` as a bus would (detail::BusConfig::resolve) before
/// anything connects: what the command line set wrong is a usage_error
/// naming its flag (--name, --max-bytes, ...), not a bus's error.
void check_bus_options(const PostgresBusOptions& options);

/// The names a Connection gives PostgreSQL, each with its flag (--channel).
std::vector<std::pair<std::string, std::string>> identifiers(const Connection& where);
/// Throws usage_error naming the first of them that PostgreSQL would not
/// keep exactly (detail::check_identifier).
void check_identifiers(const Connection& where);

/// What a bus's error says, with each of its options that the tool sets
/// from a flag named by that flag (PostgresBusOptions::conninfo: --db).
std::string in_command_line_terms(std::string message);

/// The conninfo when neither --db nor DATABASE_URL is given: a keyword that
/// changes nothing, so that libpq takes every setting from its environment.
inline const std::string environment_conninfo = "fallback_application_name=syncbus";
/// The lines of --help that describe them.
extern const char* const connection_help;

}  // namespace syncbus::cli
