// syncbus vacuum: deletes a channel's spill rows older than an age and
// prints how many, for cron or a Kubernetes CronJob. Needs only DELETE (and
// SELECT) on the table: no bus is started.
#include <syncbus/errors.hpp>

#include <iostream>

#include "commands.hpp"
#include "connection.hpp"
#include "pg_session.hpp"
#include "spill_store.hpp"

namespace syncbus::cli {
namespace {

constexpr const char* usage = R"(usage: syncbus vacuum --older-than AGE [options]

Deletes the channel's spill rows older than AGE (e.g. 60s, 5m, 1h) and
prints how many it deleted. Choose an AGE well above your listeners' worst
lag: a row deleted before a slow listener read it is a lost message (which
that listener reports as a gap). Exit 0 on success, 1 if it failed.

options:
  --older-than AGE     required
)";

}  // namespace

int run_vacuum(const Arguments& args) {
  auto valued = connection_options();
  valued.push_back("older-than");
  const CommandLine line(args, valued, {"help"});
  if (line.has("help")) {
    std::cout << usage << connection_help << "  --help\n";
    return exit_ok;
  }
  const auto age = line.value("older-than");
  if (!age) throw usage_error("--older-than is required, e.g. --older-than 60s");
  const auto older_than = parse_duration("older-than", *age);
  if (!line.positional().empty()) throw usage_error("unexpected argument " + line.positional()[0]);
  const auto where = connection_from(line);
  check_identifiers(where);

  auto session = open_session(where, "syncbus:vacuum");
  detail::SpillStore store(*session, {where.schema, where.table, where.channel, false, 1});
  store.prepare(*session);
  std::int64_t deleted = 0;
  try {
    deleted = store.vacuum(*session, older_than);
  } catch (...) {
    detail::rethrow_as_syncbus_error("vacuuming the spill table " + store.qualified_name());
  }
  std::cout << deleted << '\n';
  return exit_ok;
}

}  // namespace syncbus::cli
