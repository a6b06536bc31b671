#include "bus_connection.hpp"

#include <syncbus/errors.hpp>

namespace syncbus::detail {

BusConnection::BusConnection(std::unique_ptr<Session> first, Settings settings,
                             DeadlineTimer& deadlines, Setup setup,
                             std::chrono::milliseconds timeout)
    : settings_(std::move(settings)), deadlines_(deadlines), setup_(std::move(setup)) {
  run_with_deadline(
      deadlines_, first->sock(), timeout, this, [&] { setup_(*first); },
      [] { return std::string("setting up the bus's connection"); });
  session_ = std::move(first);
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
