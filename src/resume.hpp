#pragma once
// One subscribe_from(): a subscription that first gets, from the spill
// table, what a position leaves out and its bus has delivered, then goes
// live with nothing lost and nothing repeated at the seam
// (docs/PROTOCOL.md, "Resuming from a position").
//
// Three threads share it, each with its own part:
// - the caller of subscribe_from() makes it (the position checked), and
//   may end() it (unsubscribing) at any time;
// - the delivery thread (DeliveryQueue) owns `stage` and the buffer: at the
//   seam (an Inbound::Kind::resume_seam item, queued after the handler was
//   registered) it sets the first target, the bus's position at that point
//   of the stream; live messages after it are buffered, the read ones
//   handed on, and at each Inbound::Kind::resume_done it either goes live
//   (the buffer first) or, when the buffer overflowed or the bus lagged
//   the position, sets a new target;
// - the ResumeReader owns from(): it reads (from, target] from the table,
//   in one snapshot per round, and posts what it read as
//   Inbound::Kind::resume_read items. (The in-memory bus reads at the seam
//   instead, on the delivery thread: read_now.)

#include <syncbus/cluster_bus.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pg_snapshot.hpp"
#include "position_token.hpp"

namespace syncbus::detail {

class Resume {
 public:
  Resume(DecodedPosition from, MessageHandler handler, std::string given)
      : token(std::move(given)), from_(std::move(from)), handler_(std::move(handler)) {}

  /// The position resumed from, as given (for position_expired).
  const std::string token;

  // ---- the delivery thread's -------------------------------------------
  enum class Stage { before_seam, reading, live };
  Stage stage = Stage::before_seam;
  /// Set while the delivery thread hands this subscription what it read
  /// (or what it buffered): the handler then passes it on.
  bool handing_read = false;
  /// Live messages that arrived while reading, in order; dropped (and read
  /// from the table in another round) past max_buffered.
  std::vector<ClusterMessage> buffered;
  bool overflowed = false;
  /// Set by the reader before it posts a round's end: the bus had not yet
  /// delivered everything the position names (it lags the bus the position
  /// came from), so the round read nothing; another round is wanted, from
  /// a later point of the stream.
  bool behind = false;
  static constexpr std::size_t max_buffered = 10'000;
  /// The subscription's number in the HandlerRegistry.
  std::uint64_t subscription = 0;
  /// A transport that reads at once (the in-memory hub's log) sets this:
  /// at the seam, the delivery thread asks it for what `target` names and
  /// from() does not (with their positions), and hands them on there and
  /// then; none when the bus lags from() (it is asked again after the
  /// next item the bus delivers).
  std::function<std::optional<std::vector<ClusterMessage>>(Resume&, const DecodedPosition& target)>
      read_now;

  /// What the registry calls, on the delivery thread.
  void on_message(const ClusterMessage& message) {
    if (ended_.load()) return;
    switch (stage) {
      case Stage::before_seam:
        return;  // at or before the seam: the read covers it
      case Stage::reading:
        if (handing_read) {
          handler_(message);
        } else if (!overflowed) {
          if (buffered.size() >= max_buffered) {
            overflowed = true;
            buffered.clear();
            buffered.shrink_to_fit();
          } else {
            buffered.push_back(message);
          }
        }
        return;
      case Stage::live:
        handler_(message);
        return;
    }
  }

  // ---- between the delivery thread and the reader ------------------------
  /// A target to read up to (the delivery thread sets it).
  void set_target(DecodedPosition target) {
    std::lock_guard<std::mutex> lock(mutex_);
    target_ = std::move(target);
    changed_.notify_all();
  }
  /// The subscription is live (or ended): the reader is done with it.
  void finish() {
    std::lock_guard<std::mutex> lock(mutex_);
    finished_ = true;
    changed_.notify_all();
  }
  /// The reader waits for a target, or the end; none when it ended.
  std::optional<DecodedPosition> next_target() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return target_.has_value() || finished_; });
    if (finished_) return std::nullopt;
    auto target = std::move(*target_);
    target_.reset();
    return target;
  }

  /// The subscription ends: unsubscribed, or its position expired while
  /// reading. Its handler is called no more; the reader stops reading.
  void end() {
    ended_.store(true);
    finish();
  }
  bool ended() const noexcept { return ended_.load(); }

  // ---- the reader's -------------------------------------------------------
  /// Where the subscription stands: the position it resumed from, moved on
  /// by each read message it was handed (ClusterMessage::position of it).
  DecodedPosition& from() { return from_; }

 private:
  DecodedPosition from_;
  MessageHandler handler_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<DecodedPosition> target_;
  bool finished_ = false;
  std::atomic<bool> ended_{false};
};

}  // namespace syncbus::detail
