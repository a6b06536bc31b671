#pragma once
// How long to wait before trying again: a pause that doubles with each
// failure in a row, from a first one up to a longest one. Every retry loop
// of syncbus uses one of the schedules below, so their numbers live here.

#include <algorithm>
#include <chrono>

namespace syncbus::detail {

struct Backoff {
  std::chrono::milliseconds first;
  std::chrono::milliseconds longest;

  /// The pause after `failures` failures in a row (1: the first pause).
  constexpr std::chrono::milliseconds after(unsigned failures) const {
    auto pause = first;
    for (unsigned i = 1; i < failures && pause < longest; ++i) pause *= 2;
    return std::min(pause, longest);
  }
};

/// Reconnecting to the server (the listener, `syncbus tail`): back within
/// about a second of the server, while making at most a few attempts a
/// second during a long outage. The listener jitters it (jittered()).
inline constexpr Backoff reconnect_backoff{std::chrono::milliseconds(50),
                                           std::chrono::milliseconds(1000)};

/// A publish retried on a new connection: short pauses, as the publish
/// timeout bounds the whole.
inline constexpr Backoff publish_retry_backoff{std::chrono::milliseconds(20),
                                               std::chrono::milliseconds(500)};

/// A read of the spill table that failed on the server (a lock, a
/// statement_timeout, a body being written): the rows are there, and
/// waiting costs only time.
inline constexpr Backoff table_read_backoff{std::chrono::milliseconds(100),
                                            std::chrono::milliseconds(5000)};

/// `pause` with full jitter over [pause/2, pause]: instances that lost the
/// server together do not come back in lockstep.
std::chrono::milliseconds jittered(std::chrono::milliseconds pause);

}  // namespace syncbus::detail
