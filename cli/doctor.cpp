// syncbus doctor: checks a connection string for everything a bus needs,
// one line per check, and says what to fix.
#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>

#include <algorithm>
#include <iostream>

#include "commands.hpp"
#include "connection.hpp"
#include "identifiers.hpp"
#include "notify_probe.hpp"
#include "pg_session.hpp"
#include "preflight.hpp"
#include "server_admin.hpp"
#include "spill_store.hpp"

namespace syncbus::cli {
namespace {

constexpr const char* usage = R"(usage: syncbus doctor [options]

Checks that a bus could work with this connection string: the server is
reachable, recent enough and not a standby; LISTEN works and a NOTIFY comes
back (not through a transaction pooler); the spill table exists or can be
created; this role has the privileges each job needs; the NOTIFY queue is
not filling; something listens on the channel. Prints one line per check
and what to do about each failure. Exit 0 when nothing failed, 1 otherwise.

options:
  --jobs LIST          what this role is for, comma-separated (default:
                       listen,publish): listen, publish, vacuum
)";

class Report {
 public:
  void ok(const std::string& what) { line("ok", what); }
  void warn(const std::string& what) { line("warn", what); }
  void fail(const std::string& what) {
    line("FAIL", in_command_line_terms(what));
    ++failures_;
  }
  int failures() const { return failures_; }

 private:
  static void line(const char* verdict, const std::string& what) {
    std::cout << fmt::format("[{:>4}] {}\n", verdict, what) << std::flush;
  }
  int failures_ = 0;
};

// LISTEN on one connection, NOTIFY from another, and see it arrive.
void check_round_trip(const Connection& where, pqxx::connection_base& listener, Report& report) {
  auto notifier = open_session(where, "syncbus:doctor");
  const auto send = [&](const std::string& channel, const std::string& payload) {
    pqxx::nontransaction(*notifier).exec_params("SELECT pg_notify($1, $2)", channel, payload);
  };
  if (detail::notify_reaches_listen(listener, send, std::chrono::seconds(5))) {
    report.ok("LISTEN works and a NOTIFY from another connection arrives");
  } else {
    report.fail(
        "a NOTIFY from another connection did not arrive within 5 s: LISTEN cannot work "
        "through a transaction-pooling proxy (PgBouncer pool_mode=transaction). Connect buses "
        "to PostgreSQL directly, or through a session-pooled port");
  }
}

void check_table(pqxx::connection_base& connection, const Connection& where, bool publish,
                 bool vacuum, bool listen, Report& report) {
  const auto table = connection.quote_name(where.schema) + "." + connection.quote_name(where.table);
  pqxx::nontransaction query(connection);
  const auto role = query.exec1("SELECT quote_ident(current_user)")[0].as<std::string>();
  if (query.exec_params1("SELECT count(*) FROM pg_namespace WHERE nspname = $1", where.schema)[0]
          .as<int>() == 0) {
    report.fail(fmt::format("the schema {} does not exist: create it, or give --schema",
                            connection.quote_name(where.schema)));
    return;
  }
  const auto facts = query.exec_params1(
      "SELECT has_schema_privilege($1, 'USAGE'), has_schema_privilege($1, 'CREATE'), "
      "to_regclass($2) IS NOT NULL",
      where.schema, table);
  if (!facts[0].as<bool>()) {
    report.fail(
        fmt::format("this role lacks USAGE on schema {0}: GRANT USAGE ON SCHEMA {0} TO {1};",
                    connection.quote_name(where.schema), role));
    return;
  }
  if (!facts[2].as<bool>()) {
    if (facts[1].as<bool>()) {
      report.warn(
          fmt::format("the spill table {} does not exist yet; the first bus will create "
                      "it (or create it with a migration: docs/OPERATIONS.md)",
                      table));
    } else {
      report.fail(fmt::format(
          "the spill table {} does not exist and this role may not create it (no CREATE on the "
          "schema): create it with a migration (docs/OPERATIONS.md) and set "
          "create_spill_table = false",
          table));
    }
    return;
  }
  report.ok(fmt::format("the spill table {} exists", table));
  query.commit();  // one statement at a time on a connection (libpqxx)
  const detail::SpillStore store(connection,
                                 {where.schema, where.table, where.channel, !where.secrets.empty(),
                                  bus_defaults.max_message_bytes});
  const auto has = store.privileges(connection);
  const auto check = [&](bool granted, bool needed, const std::string& privilege,
                         const std::string& object, const std::string& job) {
    if (granted) {
      report.ok(fmt::format("this role has {} on {} ({})", privilege, object, job));
    } else if (needed) {
      report.fail(
          fmt::format("this role lacks {0} on {1}, which {2} needs: GRANT {0} ON {1} TO {3};",
                      privilege, object, job, has.role));
    } else {
      report.warn(fmt::format("this role lacks {} on {} ({} only)", privilege, object, job));
    }
  };
  check(has.select, listen || vacuum, "SELECT", "TABLE " + table, "every listener");
  check(has.insert, publish, "INSERT", "TABLE " + table, "publishing buses");
  if (!has.sequence.empty()) {
    check(has.sequence_usage, publish, "USAGE", "SEQUENCE " + has.sequence, "publishing buses");
  }
  check(has.delete_rows, vacuum, "DELETE", "TABLE " + table, "the vacuum job");

  // The removal log: positions (ClusterMessage::position, subscribe_from).
  const auto& log = store.removal_log_name();
  if (!store.has_removal_log(connection)) {
    report.warn(fmt::format(
        "the removal log {} does not exist: durable buses give no positions, and "
        "subscribe_from() is refused, until it does (a bus that owns the spill table makes it; "
        "or run: {})",
        log, store.removal_log_sql()));
    return;
  }
  const auto may =
      pqxx::nontransaction(connection)
          .exec_params1(
              "SELECT has_table_privilege($1, 'SELECT'), has_table_privilege($1, 'INSERT'), "
              "has_table_privilege($1, 'UPDATE')",
              log);
  check(may[0].as<bool>(), vacuum, "SELECT", "TABLE " + log,
        "the vacuum job, and durable listeners for positions");
  check(may[1].as<bool>(), vacuum, "INSERT", "TABLE " + log, "the vacuum job");
  check(may[2].as<bool>(), vacuum, "UPDATE", "TABLE " + log, "the vacuum job");
}

}  // namespace

int run_doctor(const Arguments& args) {
  auto valued = connection_options();
  valued.push_back("jobs");
  const CommandLine line(args, valued, {"help"});
  if (line.has("help")) {
    std::cout << usage << connection_help << "  --help\n";
    return exit_ok;
  }
  if (!line.positional().empty()) throw usage_error("unexpected argument " + line.positional()[0]);
  const auto where = connection_from(line);
  bool listen = false, publish = false, vacuum = false;
  std::string jobs = line.value("jobs").value_or("listen,publish");
  for (std::size_t start = 0; start <= jobs.size();) {
    const auto end = std::min(jobs.find(',', start), jobs.size());
    const auto job = jobs.substr(start, end - start);
    if (job == "listen") {
      listen = true;
    } else if (job == "publish") {
      publish = true;
    } else if (job == "vacuum") {
      vacuum = true;
    } else {
      throw usage_error("--jobs: unknown job \"" + job + "\" (use listen, publish, vacuum)");
    }
    start = end + 1;
  }

  check_identifiers(where);
  Report report;

  std::unique_ptr<detail::Session> connection;
  try {
    connection = open_session(where, "syncbus:doctor");
    report.ok(fmt::format("connected to {} as {}",
                          connection->hostname() ? connection->hostname() : "the server",
                          connection->username()));
  } catch (const std::exception& e) {
    report.fail(e.what());
    return exit_problem;
  }
  try {
    const auto facts = detail::read_server_facts(*connection);
    try {
      detail::check_server(facts);
      report.ok("PostgreSQL " + facts.version + ", a primary");
    } catch (const configuration_error& e) {
      report.fail(e.what());
    }
    if (const auto problem = detail::read_only_problem(facts);
        !problem.empty() && (publish || vacuum)) {
      report.fail(problem);
    }
    check_round_trip(where, *connection, report);
    check_table(*connection, where, publish, vacuum, listen, report);
    const auto queue_usage = detail::notification_queue_usage(*connection);
    if (queue_usage >= queue_usage_problem) {
      report.fail(detail::notify_queue_problem(queue_usage));
    } else {
      report.ok(fmt::format("the NOTIFY queue is {:.3f}% full", queue_usage * 100));
    }
    const auto found = detail::sessions_listening(*connection, where.channel);
    const auto listeners = found.sessions.size();
    if (listeners > 0) {
      report.ok(fmt::format("{} session(s) listen on channel \"{}\"", listeners, where.channel));
    } else if (found.hidden > 0) {
      report.warn(fmt::format(
          "no session this role can see listens on channel \"{}\"; it may not see what {} "
          "session(s) of other roles run (pg_read_all_stats would show them)",
          where.channel, found.hidden));
    } else {
      report.warn(fmt::format(
          "nothing listens on channel \"{}\" yet (fine before the first bus starts; otherwise "
          "check the name: buses use \"{}\" unless configured otherwise)",
          where.channel, bus_defaults.channel));
    }
  } catch (const std::exception& e) {
    report.fail(e.what());
  }
  std::cout << (report.failures() == 0 ? "no problem found\n"
                                       : fmt::format("{} problem(s) found\n", report.failures()));
  return report.failures() == 0 ? exit_ok : exit_problem;
}

}  // namespace syncbus::cli
