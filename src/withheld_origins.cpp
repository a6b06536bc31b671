#include "withheld_origins.hpp"

#include <algorithm>

#include "backoff.hpp"

namespace syncbus::detail {
namespace {

std::chrono::milliseconds pause_after(unsigned failures) {
  return table_read_backoff.after(failures);
}

}  // namespace

void WithheldOrigins::withhold(const std::string& origin, std::uint64_t sequence, Why why,
                               Clock::time_point now) {
  auto [hold, created] = holds_.try_emplace(origin);
  auto& h = hold->second;
  if (created) {
    h.from = sequence;
    h.known_to = sequence;
    h.why = why;
    h.due = why == Why::fetch_failed ? now + pause_after(1) : now;
    h.failures = why == Why::fetch_failed ? 1 : 0;
    return;
  }
  h.from = std::min(h.from, sequence);
  h.known_to = std::max(h.known_to, sequence);
}

std::optional<WithheldOrigins::Why> WithheldOrigins::absorb(const std::string& origin,
                                                            std::uint64_t sequence) {
  const auto hold = holds_.find(origin);
  if (hold == holds_.end() || sequence < hold->second.from) return std::nullopt;
  hold->second.known_to = std::max(hold->second.known_to, sequence);
  return hold->second.why;
}

std::vector<std::pair<std::string, std::uint64_t>> WithheldOrigins::held_from() const {
  std::vector<std::pair<std::string, std::uint64_t>> out;
  out.reserve(holds_.size());
  for (const auto& [origin, hold] : holds_) out.emplace_back(origin, hold.from);
  return out;
}

std::optional<WithheldOrigins::Read> WithheldOrigins::next(Clock::time_point now) {
  if (holds_.empty()) return std::nullopt;
  // Round robin in name order, starting after the origin served last, so
  // that an origin whose reads keep failing does not starve the others.
  auto start = holds_.upper_bound(last_served_);
  for (std::size_t i = 0; i < holds_.size(); ++i, ++start) {
    if (start == holds_.end()) start = holds_.begin();
    if (start->second.due <= now) {
      last_served_ = start->first;
      return Read{start->first, start->second.from, start->second.known_to};
    }
  }
  return std::nullopt;
}

WithheldOrigins::Clock::time_point WithheldOrigins::next_due() const noexcept {
  auto due = Clock::time_point::max();
  for (const auto& [origin, hold] : holds_) due = std::min(due, hold.due);
  return due;
}

WithheldOrigins::Settled WithheldOrigins::settle(const Read& read, std::uint64_t next,
                                                 bool reached_end, Clock::time_point now) {
  Settled settled;
  const auto hold = holds_.find(read.origin);
  if (hold == holds_.end()) return settled;
  auto& h = hold->second;
  h.from = std::max(h.from, next);
  h.failures = 0;
  h.due = now;
  if (!reached_end) return settled;
  // The read began after everything up to read.known_to was known: what it
  // did not find of that is not in the table.
  if (next <= read.known_to) settled.lost = std::make_pair(next, read.known_to);
  h.from = std::max(h.from, read.known_to + 1);
  if (h.known_to < h.from) {
    holds_.erase(hold);
    settled.lifted = true;
  }
  return settled;
}

std::chrono::milliseconds WithheldOrigins::failed(const Read& read, Clock::time_point now) {
  const auto hold = holds_.find(read.origin);
  if (hold == holds_.end()) return std::chrono::milliseconds(0);
  auto& h = hold->second;
  const auto pause = pause_after(++h.failures);
  h.due = now + pause;
  return pause;
}

}  // namespace syncbus::detail
