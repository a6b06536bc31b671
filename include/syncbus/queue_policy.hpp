#pragma once
/// \file queue_policy.hpp
/// What a bus does when handlers fall behind the traffic.

#include <cstddef>

namespace syncbus {

/// Between a bus's transport (the PostgreSQL listener, or the in-memory hub)
/// and its handlers sits a bounded queue. This is what happens when it is full.
enum class QueueFullPolicy {
  /// drop_and_reread with SpillMode::always (every message is in the spill
  /// table), drop_and_report_gap otherwise.
  automatic,
  /// Drop newly arriving messages and, once the handlers catch up, report them
  /// as gaps with their exact range per origin. The transport is never slowed
  /// down: a PostgreSQL listener that stopped reading its socket would block
  /// the server-wide NOTIFY queue, and then every NOTIFY on the server fails.
  drop_and_report_gap,
  /// SpillMode::always only: drop newly arriving messages, and once the
  /// handlers have made room read them back from the spill table, in order.
  /// Nothing is lost and no gap is reported (unless the rows were vacuumed
  /// first: then the exact gap is). Messages of an origin that arrive while
  /// its earlier ones wait to be re-read are re-read too, so order holds.
  drop_and_reread,
};

/// Default capacity of a bus's delivery queue, in messages. Memory in use is
/// bounded by about twice this many messages (the queue, plus the batch the
/// handlers are working through).
inline constexpr std::size_t default_delivery_queue_capacity = 65536;

/// Default bound of a PostgresClusterBus's delivery queue in bytes of bodies:
/// 65,536 messages of 200 bytes are 13 MB, of 20 KB 1.3 GB. Whichever bound
/// comes first makes the queue full.
inline constexpr std::size_t default_delivery_queue_bytes = 64 * 1024 * 1024;

}  // namespace syncbus
