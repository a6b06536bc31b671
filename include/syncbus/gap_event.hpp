#pragma once
/// \file gap_event.hpp
/// What a bus reports when it knows it missed messages.

#include <cstdint>
#include <functional>
#include <string>

namespace syncbus {

/// Messages a bus did not receive. An engine reacts by telling its clients
/// to resync (or by re-reading its own change log) for what the gap covers.
///
/// Two kinds:
/// - a known range: `origin`'s messages first_missing..last_missing (inclusive)
///   never arrived; found when a later message or a heartbeat of that origin
///   arrives with a higher sequence number;
/// - unknown (range_known() is false, origin empty): the listener's connection
///   was lost and re-established, so messages of any origin committed
///   meanwhile may be missing.
struct GapEvent {
  std::string origin;
  std::uint64_t first_missing = 0;
  std::uint64_t last_missing = 0;

  bool range_known() const noexcept { return first_missing != 0; }
  /// Number of missing messages; 0 when the range is unknown.
  std::uint64_t count() const noexcept {
    return range_known() ? last_missing - first_missing + 1 : 0;
  }
};

/// Called on the bus's delivery thread, in stream order: before the first
/// message that follows the gap.
using GapHandler = std::function<void(const GapEvent&)>;

}  // namespace syncbus
