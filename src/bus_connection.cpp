#include "bus_connection.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>

namespace syncbus::detail {

BusConnection::BusConnection(std::unique_ptr<Session> first, Settings settings,
                             DeadlineTimer& deadlines, Setup setup,
                             std::chrono::milliseconds timeout)
    : settings_(std::move(settings)), deadlines_(deadlines), setup_(std::move(setup)) {
  run_with_deadline(
      deadlines_, first->sock(), timeout, this,
      [&] {
        identify(*first);
        setup_(*first);
      },
      [] { return std::string("setting up the bus's connection"); });
  session_ = std::move(first);
}

void BusConnection::identify(Session& session) {
  const auto row = pqxx::nontransaction(session).exec1(
      "SELECT pg_backend_pid(), backend_start::text FROM pg_stat_activity WHERE pid = "
      "pg_backend_pid()");
  backend_ = {row[0].as<int>(), row[1].as<std::string>()};
}

void BusConnection::end_abandoned(Session& session, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  const auto& old = *abandoned_;
  pqxx::nontransaction(session).exec_params(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND "
      "backend_start = $2::timestamptz",
      old.pid, old.started);
  // Termination is a signal: the process ends (rolling back what it had not
  // committed) a moment later.
  for (;;) {
    const bool alive = pqxx::nontransaction(session)
                           .exec_params1(
                               "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND "
                               "backend_start = $2::timestamptz",
                               old.pid, old.started)[0]
                           .as<int>() > 0;
    if (!alive) break;
    if (std::chrono::steady_clock::now() >= until || !pause(std::chrono::milliseconds(5))) {
      throw connection_error(fmt::format(
          "syncbus: the server process {} of the bus's previous session, ended because a "
          "statement on it did not finish in time, is still running; the bus waits for it to "
          "end before it sends more (what it was doing must not commit after what comes next)",
          old.pid));
    }
  }
  abandoned_.reset();
}

Session& BusConnection::open(std::chrono::milliseconds timeout) {
  if (session_) return *session_;
  // Bounded by the caller's deadline, and cut short by close().
  auto fresh = open_session(settings_.conninfo, settings_.application_name,
                            {std::chrono::steady_clock::now() + timeout, closing_wake_.fd()});
  run_with_deadline(
      deadlines_, fresh->sock(), timeout, this,
      [&] {
        configure_session(*fresh, settings_.statement_timeout);
        if (abandoned_) end_abandoned(*fresh, timeout);
        identify(*fresh);
        setup_(*fresh);
      },
      [] { return std::string("setting up a new session of the bus's connection"); });
  session_ = std::move(fresh);
  return *session_;
}

void BusConnection::close() noexcept {
  closing_.store(true);
  closing_wake_.signal();    // a connection attempt or pause ends at once
  deadlines_.cut_all(this);  // a statement in flight fails at once
}

}  // namespace syncbus::detail
