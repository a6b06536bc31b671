#include "sequence_tracker.hpp"

#include <algorithm>

namespace syncbus::detail {

SequenceTracker::Origin& SequenceTracker::entry(const std::string& origin, std::uint64_t baseline,
                                                bool& created) {
  auto [found, inserted] = origins_.try_emplace(origin);
  created = inserted;
  if (inserted) found->second.last = baseline;
  found->second.heard_in = period_;
  return found->second;
}

SequenceTracker::Verdict SequenceTracker::on_message(const std::string& origin,
                                                     std::uint64_t sequence, bool origin_is_new) {
  Verdict verdict;
  bool created = false;
  // An origin older than this bus: nothing is known of what came before.
  // One born after it: everything from sequence 1 on should have arrived.
  auto& known = entry(origin, origin_is_new ? 0 : sequence - 1, created);
  if (sequence <= known.last) {
    verdict.deliver = false;
    return verdict;
  }
  if (sequence > known.last + 1) verdict.gap = GapEvent{origin, known.last + 1, sequence - 1};
  known.last = sequence;
  return verdict;
}

std::optional<GapEvent> SequenceTracker::on_heartbeat(const std::string& origin,
                                                      std::uint64_t last_sequence,
                                                      bool origin_is_new) {
  bool created = false;
  auto& known = entry(origin, origin_is_new ? 0 : last_sequence, created);
  if (last_sequence <= known.last) return std::nullopt;
  GapEvent gap{origin, known.last + 1, last_sequence};
  known.last = last_sequence;
  return gap;
}

std::optional<GapEvent> SequenceTracker::on_goodbye(const std::string& origin,
                                                    std::uint64_t last_sequence,
                                                    bool origin_is_new) {
  auto gap = on_heartbeat(origin, last_sequence, origin_is_new);
  if (forget_on_goodbye_) origins_.erase(origin);
  return gap;
}

std::optional<GapEvent> SequenceTracker::on_dropped(const std::string& origin, std::uint64_t first,
                                                    std::uint64_t last) {
  bool created = false;
  auto& known = entry(origin, first - 1, created);
  if (last <= known.last) return std::nullopt;
  GapEvent gap{origin, std::max(first, known.last + 1), last};
  known.last = last;
  return gap;
}

std::optional<GapEvent> SequenceTracker::on_stale(const std::string& origin,
                                                  std::uint64_t sequence) {
  const auto found = origins_.find(origin);
  if (found == origins_.end()) return std::nullopt;
  return on_dropped(origin, sequence, sequence);
}

std::size_t SequenceTracker::sweep(unsigned idle_sweeps) {
  ++period_;
  std::size_t forgotten = 0;
  for (auto it = origins_.begin(); it != origins_.end();) {
    if (period_ - it->second.heard_in > idle_sweeps) {
      it = origins_.erase(it);
      ++forgotten;
    } else {
      ++it;
    }
  }
  return forgotten;
}

}  // namespace syncbus::detail
