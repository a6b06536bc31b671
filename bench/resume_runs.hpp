#pragma once
// What resuming costs (--resume): a client away while N messages were
// published comes back, on a bus of its own, with subscribe_from(); how long
// until it has every message it missed, and until the first live one.

#include <cstddef>

#include "arguments.hpp"

namespace syncbus::bench {

struct ResumeResult {
  std::size_t missed = 0;
  std::size_t size = 0;
  double subscribe_ms = 0;   // subscribe_from() returning (the position checked)
  double caught_up_ms = 0;   // the last missed message handed to the handler
  double first_live_ms = 0;  // a message published once subscribe_from() returned
  double read_per_second = 0;
  // The baseline: raw libpq reading the same rows' bodies, in pages of
  // 1,024 by key, on a connection of its own.
  double raw_read_ms = 0;
  bool correct = false;  // every message once, in order, the live one last
};

/// One measurement: `missed` messages of the first --sizes bytes, and the
/// raw read of the same rows.
ResumeResult run_resume(const Config& config, std::size_t missed);

}  // namespace syncbus::bench
