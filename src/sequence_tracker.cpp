#include "sequence_tracker.hpp"

#include <algorithm>

namespace syncbus::detail {

SequenceTracker::Origin& SequenceTracker::entry(const std::string& origin, std::uint64_t baseline,
                                                bool& created) {
  auto [found, inserted] = origins_.try_emplace(origin);
  created = inserted;
  if (inserted) found->second.last = baseline;
  found->second.heard_in = period_;
  if (inserted && origins_.size() > max_origins) {
    make_room(origin);
    return origins_.at(origin);
  }
  return found->second;
}

void SequenceTracker::make_room(const std::string& keep) {
  const auto target = max_origins / 10 * 9;
  while (origins_.size() > target) {
    auto oldest = period_;
    for (const auto& [name, known] : origins_) oldest = std::min(oldest, known.heard_in);
    for (auto it = origins_.begin(); it != origins_.end() && origins_.size() > target;) {
      // All heard from in this very period: any of them will do.
      if ((it->second.heard_in == oldest) && it->first != keep) {
        it = origins_.erase(it);
      } else {
        ++it;
      }
    }
    if (oldest == period_) break;
  }
}

SequenceTracker::Verdict SequenceTracker::on_message(const std::string& origin,
                                                     std::uint64_t sequence, bool origin_is_new,
                                                     bool signature_predates, bool replay_suspect) {
  Verdict verdict;
  bool created = false;
  // An origin older than this bus: nothing is known of what came before.
  // One born after it: everything from sequence 1 on should have arrived.
  auto& known = entry(origin, origin_is_new ? 0 : sequence - 1, created);
  if (!signature_predates && !replay_suspect) {
    known.fresh = true;
  } else if (!known.fresh || replay_suspect) {
    // Genuine, but perhaps sent again, by someone who recorded it (or wrote
    // its row again): a gap, never a delivery, until the origin speaks for
    // itself.
    verdict.deliver = false;
    if (sequence > known.last) {
      verdict.gap = GapEvent{origin, known.last + 1, sequence};
      known.last = sequence;
    }
    return verdict;
  }
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
                                                      bool origin_is_new, bool signature_predates) {
  bool created = false;
  auto& known = entry(origin, origin_is_new ? 0 : last_sequence, created);
  if (!signature_predates) known.fresh = true;
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
                                                    std::uint64_t last, bool origin_is_new) {
  bool created = false;
  auto& known = entry(origin, origin_is_new ? 0 : first - 1, created);
  if (last <= known.last) return std::nullopt;
  // From what was delivered: what lies between it and `first` never arrived.
  GapEvent gap{origin, known.last + 1, last};
  known.last = last;
  return gap;
}

std::optional<GapEvent> SequenceTracker::on_stale(const std::string& origin,
                                                  std::uint64_t sequence) {
  const auto found = origins_.find(origin);
  if (found == origins_.end()) return std::nullopt;
  return on_dropped(origin, sequence, sequence);
}

void SequenceTracker::connection_reset() {
  for (auto& [name, known] : origins_) known.fresh = false;
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
