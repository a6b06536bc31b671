#pragma once
// Running one statement under a client-side deadline, with its failure
// translated: timeout_error when the deadline cut it, closed_error when its
// owner stopping cut it, else the syncbus error for what libpqxx threw.
// Every statement the library makes goes through it.

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <chrono>

#include "deadline_timer.hpp"
#include "pg_session.hpp"

namespace syncbus::detail {

/// Runs work() with `socket` armed to be cut at now + `timeout`. `describe()`
/// says what was being done ("pinging the server"); it is only called on
/// failure, so building it costs nothing on the hot path. `owner` groups the
/// deadline for DeadlineTimer::cut_all().
template <typename Work, typename Describe>
auto run_with_deadline(DeadlineTimer& timer, int socket, std::chrono::milliseconds timeout,
                       const void* owner, Work&& work, Describe&& describe) {
  const auto guard = timer.arm(socket, DeadlineTimer::Clock::now() + timeout, owner);
  try {
    return work();
  } catch (...) {
    if (guard.cut_for_stop()) {
      // Stopped by close(), not by the server: no timeout to report (found
      // from outside: a close() racing a resume said "no answer within
      // 10000 ms" after half a millisecond).
      throw closed_error(fmt::format("syncbus: the bus was closed while {}", describe()));
    }
    if (guard.expired()) {
      throw timeout_error(fmt::format(
          "syncbus: no answer from PostgreSQL within {} ms while {}; the connection was "
          "dropped and is replaced. Is the server frozen or unreachable, or was the statement "
          "waiting for a lock another session holds (see pg_locks)?",
          timeout.count(), describe()));
    }
    rethrow_as_syncbus_error(describe());
  }
}

}  // namespace syncbus::detail
