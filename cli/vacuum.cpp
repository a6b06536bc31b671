// syncbus vacuum: deletes a channel's spill rows older than an age and
// prints how many, for cron or a Kubernetes CronJob. Needs only DELETE (and
// SELECT) on the table: no bus is started.
#include <syncbus/errors.hpp>

#include <unistd.h>

#include <iostream>

#include "commands.hpp"
#include "connection.hpp"
#include "interrupt.hpp"
#include "pg_session.hpp"
#include "spill_store.hpp"

namespace syncbus::cli {
namespace {

constexpr const char* usage = R"(usage: syncbus vacuum --older-than AGE [options]

Deletes the channel's spill rows older than AGE (e.g. 60s, 5m, 1h) and
prints how many it deleted. Choose an AGE well above your listeners' worst
lag: a row deleted before a slow listener read it is a lost message (which
that listener reports as a gap). It deletes in batches of 10,000 rows, each
committed on its own (and each under --timeout), showing its progress on a
terminal: stopped part way (Ctrl-C, an error), what it deleted stays deleted
and it says how many. Exit 0 on success, 1 if it failed or was stopped.

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
  interrupt_fd();  // Ctrl-C stops between batches, not in one
  const bool progress = ::isatty(STDERR_FILENO) != 0;
  std::int64_t deleted = 0;
  try {
    const auto cutoff = store.vacuum_cutoff(*session, older_than);
    // What it deletes is noted, for positions (docs/PROTOCOL.md), where the
    // table has its removal log.
    const bool note_removed = store.has_removal_log(*session);
    for (auto batch = detail::SpillStore::vacuum_batch_rows;
         batch == detail::SpillStore::vacuum_batch_rows;) {
      if (interrupted()) {
        std::cerr << "syncbus vacuum: interrupted: " << deleted
                  << " row(s) deleted, those left remain\n";
        std::cout << deleted << '\n';
        return exit_problem;
      }
      batch =
          store.vacuum_batch(*session, cutoff, detail::SpillStore::vacuum_batch_rows, note_removed);
      deleted += batch;
      if (progress) std::cerr << "\rsyncbus vacuum: " << deleted << " row(s) deleted" << std::flush;
    }
    if (progress) std::cerr << '\n';
  } catch (...) {
    if (progress) std::cerr << '\n';
    if (deleted > 0) {
      std::cerr << "syncbus vacuum: " << deleted
                << " row(s) were deleted before the error below; they stay deleted\n";
    }
    detail::rethrow_as_syncbus_error("vacuuming the spill table " + store.qualified_name());
  }
  std::cout << deleted << '\n';
  return exit_ok;
}

}  // namespace syncbus::cli
