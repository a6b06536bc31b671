#include "sequence_tracker.hpp"

#include <algorithm>

namespace syncbus::detail {

SequenceTracker::Verdict SequenceTracker::on_message(const std::string& origin,
                                                     std::uint64_t sequence) {
  Verdict verdict;
  const auto [entry, first_sight] = last_seen_.try_emplace(origin, sequence);
  if (first_sight) return verdict;
  std::uint64_t& last = entry->second;
  if (sequence <= last) {
    verdict.deliver = false;
    return verdict;
  }
  if (sequence > last + 1) verdict.gap = GapEvent{origin, last + 1, sequence - 1};
  last = sequence;
  return verdict;
}

std::optional<GapEvent> SequenceTracker::on_heartbeat(const std::string& origin,
                                                      std::uint64_t last_sequence) {
  const auto [entry, first_sight] = last_seen_.try_emplace(origin, last_sequence);
  if (first_sight) return std::nullopt;
  std::uint64_t& last = entry->second;
  if (last_sequence <= last) return std::nullopt;
  GapEvent gap{origin, last + 1, last_sequence};
  last = last_sequence;
  return gap;
}

std::optional<GapEvent> SequenceTracker::on_dropped(const std::string& origin, std::uint64_t first,
                                                    std::uint64_t last) {
  const auto [entry, first_sight] = last_seen_.try_emplace(origin, last);
  if (first_sight) return GapEvent{origin, first, last};
  std::uint64_t& seen = entry->second;
  if (last <= seen) return std::nullopt;
  GapEvent gap{origin, std::max(first, seen + 1), last};
  seen = last;
  return gap;
}

}  // namespace syncbus::detail
