#include "received_position.hpp"

#include <algorithm>

namespace syncbus::detail {
namespace {

void raise(std::unordered_map<std::string, std::uint64_t>& highest, const std::string& origin,
           std::uint64_t sequence) {
  auto [entry, created] = highest.try_emplace(origin, sequence);
  if (!created) entry->second = std::max(entry->second, sequence);
}

bool covers(const std::unordered_map<std::string, std::uint64_t>& highest,
            const std::string& origin, std::uint64_t sequence) {
  const auto found = highest.find(origin);
  return found != highest.end() && sequence <= found->second;
}

}  // namespace

void ReceivedPosition::start(const PgSnapshot& snapshot, Clock::time_point now) {
  started_ = true;
  start_ = snapshot;
  confirmed_ = snapshot;
  last_sent_ = now;
}

ReceivedPosition::Clock::time_point ReceivedPosition::next_marker_due() const noexcept {
  if (!started_ || in_flight_) return Clock::time_point::max();
  return last_sent_ + (handed_on_since_sent_ ? busy_marker_interval : idle_marker_interval);
}

void ReceivedPosition::marker_sent(std::string token, const PgSnapshot& snapshot,
                                   Clock::time_point now) {
  in_flight_ = Marker{std::move(token), snapshot};
  last_sent_ = now;
  handed_on_since_sent_ = false;
  // What is handed on from now on may be of transactions not visible in
  // this marker's snapshot: remembered apart, kept once the marker returns.
  for (const auto& [origin, sequence] : since_in_flight_) raise(since_confirmed_, origin, sequence);
  since_in_flight_.clear();
}

bool ReceivedPosition::marker_returned(const std::string& token) {
  if (!in_flight_ || in_flight_->token != token) return false;
  confirmed_ = std::move(in_flight_->snapshot);
  in_flight_.reset();
  // What was handed on before the marker was sent is of transactions
  // visible in its snapshot (received, hence committed, before it was
  // taken): no catch-up from this position reads it again.
  since_confirmed_ = std::move(since_in_flight_);
  since_in_flight_.clear();
  return true;
}

void ReceivedPosition::connection_lost() {
  if (!in_flight_) return;
  in_flight_.reset();
  for (const auto& [origin, sequence] : since_in_flight_) raise(since_confirmed_, origin, sequence);
  since_in_flight_.clear();
}

void ReceivedPosition::caught_up(const PgSnapshot& cutoff) {
  confirmed_ = cutoff;
  in_flight_.reset();
  // A catch-up hands on only rows visible in `cutoff`, and nothing else was
  // handed on since it began: from this position, none can be read again.
  since_confirmed_.clear();
  since_in_flight_.clear();
}

void ReceivedPosition::handed_on(const std::string& origin, std::uint64_t sequence) {
  handed_on_since_sent_ = true;
  raise(in_flight_ ? since_in_flight_ : since_confirmed_, origin, sequence);
}

bool ReceivedPosition::already_handed_on(const std::string& origin, std::uint64_t sequence) const {
  return covers(since_confirmed_, origin, sequence) || covers(since_in_flight_, origin, sequence);
}

}  // namespace syncbus::detail
