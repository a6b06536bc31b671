// syncbus status: what an operator wants to know about a channel at a
// glance: the spill table's backlog, how full the server's NOTIFY queue is,
// and which sessions listen on the channel.
#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/nontransaction>
#include <pqxx/result>

#include <iostream>

#include "commands.hpp"
#include "connection.hpp"
#include "pg_session.hpp"
#include "preflight.hpp"
#include "prometheus_text.hpp"
#include "server_admin.hpp"

namespace syncbus::cli {
namespace {

constexpr const char* usage = R"(usage: syncbus status [options]

Reports the channel's spill rows (count, oldest), the server's NOTIFY queue
usage, and the sessions that listen on the channel: every syncbus listener
(a bus's, `syncbus tail`), busy or idle, whose statements name their channel
in pg_stat_activity, and any other session whose last statement was
`LISTEN "<channel>"`. Run it as the buses' role, or one in
pg_read_all_stats, to see other roles' sessions. Exit 0 when all is well; 1
when something is wrong (nothing listens on the channel, the table is
missing or unreadable, the NOTIFY queue is filling, the server is a standby,
the server cannot be reached): each problem is named.

options:
  --json               one JSON object instead of text, on stdout, also when
                       the server cannot be reached: {"error": "...", ...}
  --prometheus         Prometheus metrics instead of text (docs/OPERATIONS.md,
                       "Metrics"), also when the server cannot be reached:
                       syncbus_status_up 0
)";

// SELECT on the spill table, as the role sees it: the counts, or why not.
nlohmann::json spill_table_status(pqxx::connection_base& connection, const std::string& table,
                                  const std::string& channel, std::vector<std::string>& problems) {
  nlohmann::json status = {{"name", table}};
  pqxx::nontransaction query(connection);
  const bool exists = query.exec_params1("SELECT to_regclass($1) IS NOT NULL", table)[0].as<bool>();
  status["exists"] = exists;
  if (!exists) {
    problems.push_back("the spill table " + table +
                       " does not exist (a bus creates it, or a migration: docs/OPERATIONS.md)");
    return status;
  }
  if (!query.exec_params1("SELECT has_table_privilege($1, 'SELECT')", table)[0].as<bool>()) {
    problems.push_back(fmt::format(
        "this role may not read the spill table {0}, which every listener needs: GRANT SELECT "
        "ON TABLE {0} TO {1};",
        table, query.exec1("SELECT quote_ident(current_user)")[0].as<std::string>()));
    return status;
  }
  const auto row = query.exec_params1(
      "SELECT count(*) FILTER (WHERE channel = $1), count(*), "
      "extract(epoch FROM now() - min(created_at) FILTER (WHERE channel = $1)), "
      "coalesce(sum(octet_length(body)) FILTER (WHERE channel = $1), 0) FROM " +
          table,
      channel);
  status["rows_on_channel"] = row[0].as<std::int64_t>();
  status["rows_total"] = row[1].as<std::int64_t>();
  status["oldest_age_seconds"] =
      row[2].is_null() ? nlohmann::json(nullptr) : nlohmann::json(row[2].as<double>());
  status["bytes_on_channel"] = row[3].as<std::int64_t>();
  return status;
}

// The report as Prometheus metrics: the server's view of the channel.
std::string prometheus_text(const nlohmann::json& report, const Connection& where,
                            std::size_t problems) {
  using detail::prometheus_family;
  const PrometheusLabels channel{{"channel", where.channel}};
  std::string out = prometheus_family("syncbus_status_up", "gauge",
                                      "1 when the server answered syncbus status, else 0.",
                                      {{channel, report.empty() ? 0.0 : 1.0}});
  out += prometheus_family("syncbus_status_problems", "gauge",
                           "Problems syncbus status found (it names them with --json).",
                           {{channel, static_cast<double>(problems)}});
  if (report.empty()) return out;
  out += prometheus_family("syncbus_channel_listeners", "gauge",
                           "Sessions that listen on the channel.",
                           {{channel, static_cast<double>(report["listeners"].size())}});
  out += prometheus_family("syncbus_server_notify_queue_usage", "gauge",
                           "pg_notification_queue_usage() of the server, 0 to 1.",
                           {{{}, report["notify_queue_usage"].get<double>()}});
  const auto& spill = report["spill_table"];
  if (spill.contains("rows_on_channel")) {
    const PrometheusLabels table{{"channel", where.channel},
                                 {"table", spill["name"].get<std::string>()}};
    out +=
        prometheus_family("syncbus_spill_rows", "gauge", "The channel's rows in the spill table.",
                          {{table, spill["rows_on_channel"].get<double>()}});
    out += prometheus_family("syncbus_spill_bytes", "gauge",
                             "Bytes of the channel's bodies in the spill table.",
                             {{table, spill["bytes_on_channel"].get<double>()}});
    out += prometheus_family(
        "syncbus_spill_oldest_row_age_seconds", "gauge",
        "Age of the channel's oldest spill row (0 when it has none): vacuum's lag.",
        {{table, spill["oldest_age_seconds"].is_null()
                     ? 0.0
                     : spill["oldest_age_seconds"].get<double>()}});
    out += prometheus_family(
        "syncbus_spill_table_rows", "gauge", "Rows in the spill table, every channel's.",
        {{{{"table", spill["name"].get<std::string>()}}, spill["rows_total"].get<double>()}});
  }
  return out;
}

std::string age_text(const nlohmann::json& seconds) {
  if (seconds.is_null()) return "none";
  const auto s = seconds.get<double>();
  if (s < 120) return fmt::format("{:.1f} s old", s);
  if (s < 7200) return fmt::format("{:.0f} min old", s / 60);
  return fmt::format("{:.1f} h old", s / 3600);
}

// Reads the report, naming each problem in `problems`. Throws a
// syncbus::error when the server cannot be asked.
nlohmann::json read_status(const Connection& where, std::vector<std::string>& problems) {
  auto session = open_session(where, "syncbus:status");
  auto& connection = *session;
  nlohmann::json report;
  try {
    const auto server = detail::read_server_facts(connection);
    const auto queue_usage = detail::notification_queue_usage(connection);
    report["channel"] = where.channel;
    report["server_version"] = server.version;
    report["in_recovery"] = server.in_recovery;
    report["notify_queue_usage"] = queue_usage;
    if (server.in_recovery) {
      problems.push_back("the server is a standby in recovery: buses must use the primary");
    }
    if (queue_usage >= queue_usage_problem) {
      problems.push_back(detail::notify_queue_problem(queue_usage));
    }
    const auto table =
        connection.quote_name(where.schema) + "." + connection.quote_name(where.table);
    report["spill_table"] = spill_table_status(connection, table, where.channel, problems);

    const auto found = detail::sessions_listening(connection, where.channel);
    const auto& listeners = found.sessions;
    report["listeners"] = nlohmann::json::array();
    report["hidden_sessions"] = found.hidden;
    for (const auto& l : listeners) {
      report["listeners"].push_back({{"pid", l.pid},
                                     {"application_name", l.application_name},
                                     {"client", l.client},
                                     {"since", l.since},
                                     {"state", l.state}});
    }
    if (listeners.empty() && found.hidden > 0) {
      // Not "nothing listens": this role cannot tell.
      problems.push_back(fmt::format(
          "cannot tell whether anything listens on channel \"{}\": no session this role can see "
          "listens on it, and it may not see what {} session(s) of other roles run. If the "
          "buses run as another role, run status as that role, or as a member of "
          "pg_read_all_stats; otherwise check the name (buses use \"{}\" unless configured "
          "otherwise)",
          where.channel, found.hidden, bus_defaults.channel));
    } else if (listeners.empty()) {
      problems.push_back(fmt::format(
          "nothing listens on channel \"{}\" (is the name right? buses use \"{}\" unless "
          "configured otherwise)",
          where.channel, bus_defaults.channel));
    }
  } catch (const syncbus::error&) {
    throw;
  } catch (...) {
    detail::rethrow_as_syncbus_error("reading the status of channel \"" + where.channel + "\"");
  }
  return report;
}

}  // namespace

int run_status(const Arguments& args) {
  const CommandLine line(args, connection_options(), {"json", "prometheus", "help"});
  if (line.has("help")) {
    std::cout << usage << connection_help << "  --help\n";
    return exit_ok;
  }
  if (!line.positional().empty()) throw usage_error("unexpected argument " + line.positional()[0]);
  const auto where = connection_from(line);
  check_identifiers(where);

  std::vector<std::string> problems;
  nlohmann::json report;
  try {
    report = read_status(where, problems);
  } catch (const syncbus::error& e) {
    if (line.has("prometheus")) {
      // A scraper reads stdout: the server being away is a metric too.
      std::cerr << in_command_line_terms(e.what()) << '\n';
      std::cout << prometheus_text({}, where, 1);
      return exit_problem;
    }
    if (!line.has("json")) throw;
    // A monitor reading stdout gets JSON whatever happened.
    const auto said = in_command_line_terms(e.what());
    std::cout
        << nlohmann::json{{"channel", where.channel}, {"error", said}, {"problems", {said}}}.dump(2)
        << '\n';
    return exit_problem;
  }
  report["problems"] = problems;

  if (line.has("prometheus")) {
    std::cout << prometheus_text(report, where, problems.size());
  } else if (line.has("json")) {
    std::cout << report.dump(2) << '\n';
  } else {
    std::cout << fmt::format("channel      \"{}\" on PostgreSQL {}{}\n", where.channel,
                             report["server_version"].get<std::string>(),
                             report["in_recovery"].get<bool>() ? " (standby)" : "");
    const auto& spill = report["spill_table"];
    std::cout << fmt::format("spill table  {}", spill["name"].get<std::string>());
    if (spill.contains("rows_on_channel")) {
      std::cout << fmt::format(": {} row(s) on this channel (oldest {}), {} in all",
                               spill["rows_on_channel"].get<std::int64_t>(),
                               age_text(spill["oldest_age_seconds"]),
                               spill["rows_total"].get<std::int64_t>());
    }
    std::cout << fmt::format("\nNOTIFY queue {:.3f}% used\n",
                             report["notify_queue_usage"].get<double>() * 100);
    const auto hidden = report["hidden_sessions"].get<std::size_t>();
    std::cout << fmt::format(
        "listeners    {}{}\n", report["listeners"].size(),
        hidden > 0 ? fmt::format(" (this role cannot see what {} other session(s) run)", hidden)
                   : "");
    for (const auto& l : report["listeners"]) {
      std::cout << fmt::format("  pid {:<7} {:<40} from {} since {}\n", l["pid"].get<int>(),
                               l["application_name"].get<std::string>(),
                               l["client"].get<std::string>(), l["since"].get<std::string>());
    }
    std::cout << (problems.empty() ? "problems     none\n" : "problems\n");
    for (const auto& p : problems) std::cout << "  - " << p << '\n';
  }
  return problems.empty() ? exit_ok : exit_problem;
}

}  // namespace syncbus::cli
