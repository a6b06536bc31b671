#pragma once
// Per-origin sequence bookkeeping at a receiver: drops duplicates and finds
// gaps. A pure class (no threads, no I/O): the delivery thread owns one.

#include <syncbus/gap_event.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

namespace syncbus::detail {

class SequenceTracker {
 public:
  struct Verdict {
    /// False for a message already delivered (a duplicate).
    bool deliver = true;
    /// Messages of this origin skipped before this one, if any.
    std::optional<GapEvent> gap;
  };

  /// A message `sequence` of `origin` arrived. The first message seen from an
  /// origin sets its baseline: nothing is known of what came before it.
  Verdict on_message(const std::string& origin, std::uint64_t sequence);

  /// A heartbeat says `origin`'s last published sequence is `last_sequence`:
  /// anything between what we saw and that is missing (a loss at the tail of
  /// a burst, which no later message would reveal).
  std::optional<GapEvent> on_heartbeat(const std::string& origin, std::uint64_t last_sequence);

  /// Messages first..last of `origin` were dropped before delivery: reports
  /// what of that range lies beyond what was delivered, even for an origin
  /// seen for the first time.
  std::optional<GapEvent> on_dropped(const std::string& origin, std::uint64_t first,
                                     std::uint64_t last);

  /// Number of origins tracked.
  std::size_t origins() const noexcept { return last_seen_.size(); }

 private:
  std::unordered_map<std::string, std::uint64_t> last_seen_;
};

}  // namespace syncbus::detail
