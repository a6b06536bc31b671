#pragma once
// The delivery stage shared by every bus: a thread of its own that runs the
// handlers, fed by a queue, so that a slow handler never stalls the transport
// (the PostgreSQL listener keeps draining its socket whatever handlers do).
// It is also where sequence numbers are checked: duplicates are dropped and
// gaps reported, in stream order, before the message that follows them.

#include <syncbus/cluster_bus.hpp>
#include <syncbus/gap_event.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sequence_tracker.hpp"
#include "stats_counters.hpp"

namespace syncbus::detail {

using ErrorSink = std::function<void(const std::exception&)>;

/// Calls `sink` with `e`, swallowing whatever the sink throws: an error
/// handler must never take down a thread the library owns.
void report(const ErrorSink& sink, const std::exception& e) noexcept;

/// The error sink a bus hands its parts: counts the error in `stats` (and
/// keeps its message as the last error), then reports it to `user`.
ErrorSink counting_errors(std::shared_ptr<StatsCounters> stats, ErrorSink user);

/// The set of handlers of one bus. Shared with every Subscription it hands
/// out, so a Subscription may outlive its bus.
class HandlerRegistry : public std::enable_shared_from_this<HandlerRegistry> {
 public:
  Subscription add(MessageHandler handler);
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
  std::mutex entries_mutex_;
  std::vector<std::shared_ptr<Entry>> entries_;
};

/// What the transport hands to the delivery stage.
struct Inbound {
  enum class Kind {
    message,           // deliver `message` (after the sequence check)
    heartbeat,         // message.origin's last sequence is message.sequence
    connection_reset,  // the transport reconnected: report a gap of unknown range
    dropped,           // message.origin's sequences first_dropped..message.sequence were dropped
  };
  Kind kind = Kind::message;
  ClusterMessage message;
  std::uint64_t first_dropped = 0;  // for Kind::dropped
};

/// A FIFO of inbound items and the thread that delivers them.
class DeliveryQueue {
 public:
  /// Holds at most `capacity` items; when full, new messages are dropped and
  /// later reported as gaps (QueueFullPolicy::drop_and_report_gap).
  DeliveryQueue(ErrorSink on_error, GapHandler on_gap, std::shared_ptr<StatsCounters> stats,
                std::size_t capacity);
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

 private:
  void run();
  /// Queues one item, or records it as dropped when the queue is full.
  /// Called with mutex_ held.
  void enqueue(Inbound&& item);
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
  std::size_t capacity_;
  std::deque<Inbound> queue_;
  // Per origin, the range of messages dropped since the last batch was taken.
  std::unordered_map<std::string, std::pair<std::uint64_t, std::uint64_t>> dropped_;
  bool delivering_ = false;
  bool stopping_ = false;
  // Mirrors stopping_ for the handler loop, which runs without the mutex.
  std::atomic<bool> cancelled_{false};
  std::thread thread_;
};

}  // namespace syncbus::detail
