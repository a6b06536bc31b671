#pragma once
/// \file bus_stats.hpp
/// Counters of a bus, cheap enough to poll (a few atomic loads).

#include <array>
#include <cstdint>
#include <string>

namespace syncbus {

/// How long messages took to reach this bus's handlers, counted in buckets:
/// from when their publisher sent them to PostgreSQL (just before their
/// transaction committed) to when they were handed to the handlers. Both
/// ends are read on the server's clock as each bus estimates it (read every
/// 10 s, to within half a round trip, in milliseconds): lags of a few
/// milliseconds are as exact as that. Covers every message that says when
/// it was sent (every envelope and row of syncbus 0.3 or later; read back
/// from the table too, so a catch-up's lag shows), this bus's own included,
/// and counted with `delivered`, at the same moment (so `count` is never
/// ahead of it). A `sent` that is not a positive integer, later than this
/// bus's estimate of now by more than 2 s, or more than ten years ago, is
/// no time: the message counts in `delivered` only.
struct DeliveryLag {
  /// The buckets' upper bounds, in milliseconds; a last bucket holds what
  /// took longer than the last bound.
  static constexpr std::array<std::uint32_t, 14> bounds_ms{
      1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 60000};
  /// Messages per bucket (not cumulative): buckets[i] counts the lags over
  /// bounds_ms[i - 1] and up to bounds_ms[i]; buckets.back() the rest.
  std::array<std::uint64_t, bounds_ms.size() + 1> buckets{};
  /// Messages measured (the buckets' sum).
  std::uint64_t count = 0;
  /// Their lags added up, in milliseconds.
  double sum_ms = 0;
};

/// A snapshot of a bus's counters since it was created.
struct BusStats {
  /// Messages this bus published (committed).
  std::uint64_t published = 0;
  /// Of those, how many went through the spill table.
  std::uint64_t spilled = 0;
  /// Transactions those messages were committed in: under load, publishes
  /// that arrive while one is in flight share the next (group commit).
  std::uint64_t publish_batches = 0;
  /// Messages handed to this bus's handlers, each counted once its handlers
  /// are done (and counted all the same when no handler is subscribed).
  std::uint64_t delivered = 0;
  /// How long they took to get there (see DeliveryLag).
  DeliveryLag delivery_lag;
  /// Gap events reported (known and unknown range), each counted once
  /// on_gap has returned.
  std::uint64_t gaps = 0;
  /// Messages inside the gaps of known range (counted with `gaps`).
  std::uint64_t messages_missing = 0;
  /// Messages received again and not delivered a second time.
  std::uint64_t duplicates_dropped = 0;
  /// Messages dropped because the delivery queue was full: each is inside a
  /// reported gap, or (QueueFullPolicy::drop_and_reread) read back later.
  std::uint64_t dropped_queue_full = 0;
  /// Messages read back from the spill table after the delivery queue was
  /// full (QueueFullPolicy::drop_and_reread).
  std::uint64_t reread_from_table = 0;
  /// Times the listener's connection was re-established (in
  /// SpillMode::always: and it had caught up on what it missed).
  std::uint64_t reconnects = 0;
  /// Origins (publishing buses) this bus keeps sequence numbers for now: a
  /// few dozen bytes each. An origin is forgotten when it says goodbye (its
  /// bus closed) or after about half an hour of silence.
  std::uint64_t origins_tracked = 0;
  /// The last pg_notification_queue_usage() seen (0 to 1): how full the
  /// server-wide NOTIFY queue is. Near 0 in a healthy cluster.
  double notification_queue_usage = 0;
  /// Stuck listener sessions the watchdog terminated.
  std::uint64_t stuck_listeners_terminated = 0;
  /// Errors reported to on_error.
  std::uint64_t errors = 0;
  /// The last of those errors' messages ("" when none).
  std::string last_error;
};

}  // namespace syncbus
