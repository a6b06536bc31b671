// syncbus: the command-line tool for operators of a syncbus channel. See
// `syncbus help`.
#include <syncbus/errors.hpp>
#include <syncbus/version.hpp>

#include <functional>
#include <iostream>
#include <map>
#include <string_view>

#include "commands.hpp"
#include "connection.hpp"

namespace {

using syncbus::cli::Arguments;

constexpr const char* usage = R"(usage: syncbus COMMAND [options]

commands:
  tail      print every message on a channel as it arrives, one JSON line each
  publish   publish a JSON body (an argument, or stdin; --lines: one per line)
  vacuum    delete spill rows older than --older-than AGE and print how many
  status    the spill table's backlog, the NOTIFY queue, the channel's listeners
  doctor    check a connection string for everything a bus needs
  bench     throughput and latency against raw libpq (docs/BENCHMARKS.md)

Each command takes --db CONNINFO (default $DATABASE_URL, else libpq's PG*
environment) and --channel NAME (default absolutejs_sync_cluster); `syncbus
COMMAND --help` tells the rest. Documentation: `man syncbus`, and the docs/
that messages name, installed in share/doc/syncbus under the prefix.
Exit codes: 0 done, 1 a problem (named on stderr or in the report), 2 a wrong
command line.
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace syncbus::cli;
  const std::map<std::string, std::function<int(const Arguments&)>> commands = {
      {"tail", run_tail},     {"publish", run_publish}, {"vacuum", run_vacuum},
      {"status", run_status}, {"doctor", run_doctor},   {"bench", run_bench}};
  const Arguments args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    (args.empty() ? std::cerr : std::cout) << usage;
    return args.empty() ? exit_usage : exit_ok;
  }
  if (args[0] == "--version" || args[0] == "version") {
    std::cout << "syncbus " << syncbus::version_string << '\n';
    return exit_ok;
  }
  const auto command = commands.find(args[0]);
  if (command == commands.end()) {
    std::cerr << "syncbus: unknown command \"" << args[0] << "\"\n\n" << usage;
    return exit_usage;
  }
  try {
    return command->second(Arguments(args.begin() + 1, args.end()));
  } catch (const usage_error& e) {
    std::cerr << "syncbus " << args[0] << ": " << e.what() << " (see syncbus " << args[0]
              << " --help)\n";
    return exit_usage;
  } catch (const std::exception& e) {
    std::cerr << in_command_line_terms(e.what()) << '\n';
    if (std::string_view(e.what()).find("SQLSTATE 57014") != std::string_view::npos) {
      std::cerr << "(a statement ran past --timeout, most often waiting for a lock another session "
                   "holds: see pg_locks; or give a longer --timeout)\n";
    }
    return exit_problem;
  }
}
