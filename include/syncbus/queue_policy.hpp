#pragma once
/// \file queue_policy.hpp
/// What a bus does when handlers fall behind the traffic.

#include <cstddef>

namespace syncbus {

/// Between a bus's transport (the PostgreSQL listener, or the in-memory hub)
/// and its handlers sits a bounded queue. This is what happens when it is full.
enum class QueueFullPolicy {
  /// Drop newly arriving messages and, once the handlers catch up, report them
  /// as gaps with their exact range per origin. The transport is never slowed
  /// down: a PostgreSQL listener that stopped reading its socket would block
  /// the server-wide NOTIFY queue, and then every NOTIFY on the server fails.
  drop_and_report_gap,
};

/// Default capacity of a bus's delivery queue, in messages. Memory in use is
/// bounded by about twice this many messages (the queue, plus the batch the
/// handlers are working through).
inline constexpr std::size_t default_delivery_queue_capacity = 65536;

}  // namespace syncbus
