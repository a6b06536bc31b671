#pragma once
// The syncbus command line: a subcommand's options, parsed the same way for
// every subcommand, and the settings they share (which database, which
// channel, which spill table, which secrets).

#include <syncbus/postgres_bus.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "pg_session.hpp"

namespace syncbus::cli {

/// Exit codes, the same for every subcommand.
enum ExitCode : int {
  exit_ok = 0,
  /// The command ran and found a problem (a failed check, a failed publish,
  /// an unreachable server): the message says which.
  exit_problem = 1,
  /// The command line itself is wrong: the message says what to change.
  exit_usage = 2,
};

/// A command line error: printed with the subcommand's usage, exit_usage.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The options of one subcommand: `--name value`, `--name=value`, flags,
/// and positional arguments, checked against what the subcommand accepts.
class CommandLine {
 public:
  /// `valued`: options that take a value (may repeat); `flags`: options that
  /// do not. Throws usage_error for anything else.
  CommandLine(const std::vector<std::string>& args, const std::vector<std::string>& valued,
              const std::vector<std::string>& flags);

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  /// The last value given to `name`, if any.
  std::optional<std::string> value(const std::string& name) const;
  std::vector<std::string> values(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

/// Parses "500ms", "60s", "5m", "2h", "1d" (a bare number is seconds).
/// Throws usage_error naming `option` when it cannot.
std::chrono::milliseconds parse_duration(const std::string& option, const std::string& text);

/// What every subcommand that talks to PostgreSQL needs.
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

/// The names a Connection gives PostgreSQL, each with its flag (--channel).
std::vector<std::pair<std::string, std::string>> identifiers(const Connection& where);
/// Throws configuration_error naming the first of them that PostgreSQL would
/// not keep exactly (detail::check_identifier).
void check_identifiers(const Connection& where);
/// The lines of --help that describe them.
extern const char* const connection_help;

}  // namespace syncbus::cli
