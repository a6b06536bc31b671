#include "command_line.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include <pqxx/nontransaction>

#include "identifiers.hpp"

namespace syncbus::cli {

CommandLine::CommandLine(const std::vector<std::string>& args,
                         const std::vector<std::string>& valued,
                         const std::vector<std::string>& flags) {
  const auto known = [](const std::vector<std::string>& names, const std::string& name) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& arg = args[i];
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      positional_.push_back(arg);
      continue;
    }
    auto name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (known(flags, name)) {
      if (inline_value) throw usage_error("--" + name + " takes no value");
      values_[name];
    } else if (known(valued, name)) {
      if (!inline_value && i + 1 >= args.size()) throw usage_error("--" + name + " needs a value");
      values_[name].push_back(inline_value ? *inline_value : args[++i]);
    } else {
      throw usage_error("unknown option --" + name);
    }
  }
}

std::optional<std::string> CommandLine::value(const std::string& name) const {
  const auto found = values_.find(name);
  if (found == values_.end() || found->second.empty()) return std::nullopt;
  return found->second.back();
}

std::vector<std::string> CommandLine::values(const std::string& name) const {
  const auto found = values_.find(name);
  return found == values_.end() ? std::vector<std::string>{} : found->second;
}

std::chrono::milliseconds parse_duration(const std::string& option, const std::string& text) {
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const auto unit = text.substr(used);
  const std::map<std::string, double> millis = {{"ms", 1},    {"s", 1000},    {"", 1000},
                                                {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  const auto factor = millis.find(unit);
  if (used == 0 || factor == millis.end() || number < 0) {
    throw usage_error("--" + option + " \"" + text +
                      "\" is not a duration: give a number and a unit, e.g. 500ms, 60s, 5m, 2h");
  }
  return std::chrono::milliseconds(static_cast<long long>(number * factor->second));
}

const std::vector<std::string>& connection_options() {
  static const std::vector<std::string> names = {"db",    "channel",     "schema",
                                                 "table", "secret-file", "timeout"};
  return names;
}

const char* const connection_help =
    "  --db CONNINFO        libpq connection string or URI (default: $DATABASE_URL)\n"
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
    throw usage_error("no database: give --db CONNINFO or set DATABASE_URL");
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

std::vector<std::pair<std::string, std::string>> identifiers(const Connection& where) {
  // Named as the user gave them: by their flags.
  return {{"--channel", where.channel}, {"--schema", where.schema}, {"--table", where.table}};
}

void check_identifiers(const Connection& where) {
  for (const auto& [flag, value] : identifiers(where)) detail::check_identifier(flag, value);
}

}  // namespace syncbus::cli
