#include "stream_position.hpp"

#include <algorithm>

#include "position_token.hpp"

namespace syncbus::detail {

void StreamPosition::start(const PgSnapshot& snapshot) {
  started_ = true;
  snapshot_ = snapshot;
  cursors_.clear();
}

void StreamPosition::delivered(const std::string& origin, std::uint64_t sequence,
                               std::uint64_t xid) {
  auto& cursor = cursors_[origin];
  if (sequence < cursor.sequence) return;  // a duplicate changes nothing
  cursor.sequence = sequence;
  cursor.xid = xid;
}

void StreamPosition::passed(const std::string& origin, std::uint64_t sequence) {
  auto& cursor = cursors_[origin];
  if (sequence <= cursor.sequence) return;
  cursor.sequence = sequence;
  cursor.xid = 0;
}

void StreamPosition::settle(const PgSnapshot& snapshot, const std::vector<Hold>& holds) {
  snapshot_ = snapshot;
  for (const auto& [origin, from] : holds) {
    // Delivered up to the hold, nothing from it: the rest comes from the
    // table later, whatever the snapshot says.
    auto& cursor = cursors_[origin];
    cursor.sequence = std::max(cursor.sequence, from - 1);
    cursor.xid = 0;
  }
  for (auto it = cursors_.begin(); it != cursors_.end();) {
    if (it->second.xid != 0 && snapshot_.visible(it->second.xid)) {
      it = cursors_.erase(it);
    } else {
      ++it;
    }
  }
}

std::map<std::string, std::uint64_t> StreamPosition::cursors() const {
  std::map<std::string, std::uint64_t> out;
  for (const auto& [origin, cursor] : cursors_)
    out.emplace_hint(out.end(), origin, cursor.sequence);
  return out;
}

std::string StreamPosition::token(std::string_view channel_key) const {
  PositionEncoder encoder(channel_key, snapshot_, cursors_.size());
  for (const auto& [origin, cursor] : cursors_) encoder.cursor(origin, cursor.sequence);
  return encoder.finish();
}

}  // namespace syncbus::detail
