#pragma once
// The delivery stage shared by every bus: a thread of its own that runs the
// handlers, fed by a queue, so that a slow handler never stalls the transport
// (the PostgreSQL listener keeps draining its socket whatever handlers do).
// It is also where sequence numbers are checked: duplicates are dropped and
// gaps reported, in stream order, before the message that follows them.

#include <syncbus/cluster_bus.hpp>
#include <syncbus/gap_event.hpp>
#include <syncbus/queue_policy.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "logger.hpp"
#include "owned_thread.hpp"
#include "sequence_tracker.hpp"
#include "stats_counters.hpp"

namespace syncbus::detail {

using ErrorSink = std::function<void(const std::exception&)>;

/// Calls `sink` with `e`, swallowing whatever the sink throws: an error
/// handler must never take down a thread the library owns.
void report(const ErrorSink& sink, const std::exception& e) noexcept;

/// The error sink a bus hands its parts: counts the error in `stats` (and
/// keeps its message as the last error), logs it, then reports it to `user`.
ErrorSink counting_errors(std::shared_ptr<StatsCounters> stats, ErrorSink user, Logger log = {});

/// The set of handlers of one bus. Shared with every Subscription it hands
/// out, so a Subscription may outlive its bus.
class HandlerRegistry : public std::enable_shared_from_this<HandlerRegistry> {
 public:
  Subscription add(MessageHandler handler);
  /// True when at least one handler is subscribed (a hint: it may change
  /// right after).
  bool empty() const;
  /// Calls every active handler with each message, in order, until `cancel`
  /// becomes true. Exceptions thrown by handlers go to `sink`.
  void deliver(const std::vector<ClusterMessage>& messages, const ErrorSink& sink,
               const std::atomic<bool>& cancel);

 private:
  struct Entry {
    MessageHandler handler;
    std::atomic<bool> active{true};
  };
  void remove(const std::shared_ptr<Entry>& entry);

  // Held while handlers run. Recursive so that a handler may subscribe or
  // unsubscribe; a cancel from another thread waits on it, which is how
  // unsubscribe() guarantees the handler is not running when it returns.
  std::recursive_mutex delivering_;
  mutable std::mutex entries_mutex_;
  std::vector<std::shared_ptr<Entry>> entries_;
};

/// What the transport hands to the delivery stage.
struct Inbound {
  enum class Kind {
    message,           // deliver `message` (after the sequence check)
    heartbeat,         // message.origin's last sequence is message.sequence
    connection_reset,  // the transport reconnected: report a gap of unknown range
    dropped,           // message.origin's sequences first_dropped..message.sequence were dropped
    lost,              // message.origin's message.sequence is known lost (its spill row is
                       // missing or refused): an exact gap at once, even for a new origin
  };
  Inbound() = default;
  Inbound(Kind kind_, ClusterMessage message_, std::uint64_t first_dropped_ = 0)
      : kind(kind_), message(std::move(message_)), first_dropped(first_dropped_) {}

  Kind kind = Kind::message;
  ClusterMessage message;
  std::uint64_t first_dropped = 0;  // for Kind::dropped
  /// A message whose body is still JSON text (message.body is then unset):
  /// the delivery thread parses it only if a handler is there to see it.
  std::shared_ptr<const std::string> body_text;
  /// No handler was subscribed when it arrived: its sequence is tracked, its
  /// body goes to no one (not even to a handler subscribed before the
  /// delivery thread gets to it), and it is delivered lazily.
  bool unheard = false;
  /// The size of the body's JSON text as it arrived (for a batch envelope,
  /// its share of the payload): what counts against the queue's byte bound.
  std::size_t body_bytes = 0;
};

/// A FIFO of inbound items and the thread that delivers them.
class DeliveryQueue {
 public:
  /// How much the queue holds: at most `messages` items whose body_bytes add
  /// up to at most `bytes` (a lone item is always taken, whatever its size).
  struct Capacity {
    std::size_t messages = 0;
    std::size_t bytes = std::numeric_limits<std::size_t>::max();
  };
  /// When full, new messages are dropped and, by `policy`
  /// (drop_and_report_gap or drop_and_reread, never automatic): reported as
  /// gaps once the handlers catch up, or withheld per origin until the
  /// transport reads them back (next_reread / post_reread).
  DeliveryQueue(ErrorSink on_error, GapHandler on_gap, std::shared_ptr<StatsCounters> stats,
                Capacity capacity, QueueFullPolicy policy);
  ~DeliveryQueue();
  DeliveryQueue(const DeliveryQueue&) = delete;
  DeliveryQueue& operator=(const DeliveryQueue&) = delete;

  Subscription subscribe(MessageHandler handler);
  /// Queues items for delivery, in order; ignored once stopped.
  void post(std::vector<Inbound> items);
  void post(Inbound item);
  /// Waits until the queue is empty and no handler is running.
  bool wait_idle(std::chrono::milliseconds timeout);
  /// Discards undelivered messages and stops the thread; joins it unless
  /// called from a handler (the destructor joins then). Idempotent.
  void stop() noexcept;
  /// True on the delivery thread (where handlers, on_gap and on_error run).
  bool runs_on_this_thread() const noexcept { return thread_.is_current(); }

  // drop_and_reread: an origin whose message was dropped is withheld from
  // that sequence on; everything it sends later is dropped too (so nothing
  // overtakes the messages to re-read) until the transport has read its
  // messages back, in order, up to the newest. The transport is the only
  // poster, so nothing else moves an origin's hold meanwhile.

  /// True (and the message counted as dropped) when `origin`'s `sequence` is
  /// withheld: the transport need not even fetch its body.
  bool drop_if_withheld(const std::string& origin, std::uint64_t sequence);
  struct RereadRequest {
    std::string origin;
    std::uint64_t from_sequence = 0;
    std::size_t room = 0;        // how many messages the queue can take now
    std::size_t room_bytes = 0;  // and how many bytes of bodies
  };
  /// A withheld origin to read back, when the queue has room for some.
  std::optional<RereadRequest> next_reread();
  /// The messages the transport read back for `origin`, in sequence order,
  /// and the sequence after the last row it read (past rows it could not
  /// decode). `reached_end`: no newer rows exist, so the hold is lifted once
  /// all of `messages` fit. What does not fit stays withheld.
  void post_reread(const std::string& origin, std::vector<Inbound> messages,
                   std::uint64_t next_sequence, bool reached_end);
  /// Called, from the delivery thread and under the queue's lock (so it must
  /// be quick and must not call back), whenever it has made room while an
  /// origin is withheld. Empty to stop the calls.
  void on_room_for_reread(std::function<void()> notify);

 private:
  void run();
  /// Queues one item, or records it as dropped when the queue is full.
  /// Called with mutex_ held.
  void enqueue(Inbound&& item);
  /// True when `item` fits in the queue as it is now. Called with mutex_ held.
  bool fits(const Inbound& item) const;
  /// Past half of either bound. Called with mutex_ held.
  bool half_full() const;
  /// Runs one batch through the tracker and the handlers.
  void deliver(std::vector<Inbound>& batch);
  void report_gap(const GapEvent& gap);

  ErrorSink on_error_;
  GapHandler on_gap_;
  std::shared_ptr<StatsCounters> stats_;
  SequenceTracker tracker_;  // used by the delivery thread only
  std::shared_ptr<HandlerRegistry> handlers_ = std::make_shared<HandlerRegistry>();
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  Capacity capacity_;
  QueueFullPolicy policy_;
  std::deque<Inbound> queue_;
  std::size_t queued_bytes_ = 0;  // the body_bytes of what queue_ holds
  // drop_and_reread: per withheld origin, the first sequence to read back.
  std::unordered_map<std::string, std::uint64_t> withheld_;
  std::function<void()> notify_room_;
  // Per origin, the range of messages dropped since the last batch was taken.
  std::unordered_map<std::string, std::pair<std::uint64_t, std::uint64_t>> dropped_;
  bool delivering_ = false;
  bool stopping_ = false;
  // Something queued wants delivering now (not only unheard messages, which
  // can wait for lazy_wake).
  bool urgent_ = false;
  // Mirrors stopping_ for the handler loop, which runs without the mutex.
  std::atomic<bool> cancelled_{false};
  OwnedThread thread_;
};

}  // namespace syncbus::detail
