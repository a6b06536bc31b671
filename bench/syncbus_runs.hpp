#pragma once
// The runs of syncbus itself: one PostgresClusterBus published to by
// threads (publish_async with a window of messages in flight each, or
// blocking publish()), delivering to two other buses.

#include <cstddef>
#include <optional>

#include "arguments.hpp"
#include "measures.hpp"

namespace syncbus::bench {

/// What one run sends: `size`-byte messages from `threads` senders
/// (`blocking`: publish(), else publish_async), at saturation or at `rate`
/// per second.
struct SyncbusLoad {
  std::size_t size = 0;
  int threads = 1;
  std::optional<int> rate;
  bool blocking = false;
};

/// One run. `postmaster`: the server's process, for its CPU (0: none).
Result run_syncbus(const Config& config, const SyncbusLoad& load, int postmaster);

}  // namespace syncbus::bench
