#pragma once
// The delivery stage shared by every bus: a thread of its own that runs the
// handlers, fed by a bounded queue, so that a slow handler never stalls the
// transport (the PostgreSQL listener keeps draining its socket whatever
// handlers do). It is also where sequence numbers are checked: duplicates
// are dropped and gaps reported, in stream order, before the message that
// follows them.
//
// Data flows one way: transports post Inbound items; the queue decides what
// it takes, what it drops (and reports), and which origins it withholds to
// have them read back from the spill table (WithheldOrigins, which it owns);
// the listener asks it what to read back, reads, and posts what it read.

#include <syncbus/gap_event.hpp>
#include <syncbus/queue_policy.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "error_sink.hpp"
#include "handler_registry.hpp"
#include "inbound.hpp"
#include "owned_thread.hpp"
#include "sequence_tracker.hpp"
#include "stats_counters.hpp"
#include "stream_position.hpp"
#include "wake_fd.hpp"
#include "withheld_origins.hpp"

namespace syncbus::detail {

/// What the delivery thread may do while it has nothing to deliver: wait on
/// a transport's input and read it itself (ListenerLoop, SocketTurn).
class IdleReader {
 public:
  /// Called on the delivery thread with nothing queued. Waits up to `most`
  /// for input, reads it and posts what it read; returns at once when
  /// `wake_fd` becomes readable (post() and interrupt_idle_read() signal
  /// it). True to be called again once what was posted is delivered; false
  /// when it cannot read now (it is then called after offer_idle_read()).
  virtual bool read_while_idle(int wake_fd, std::chrono::milliseconds most) = 0;

 protected:
  ~IdleReader() = default;
};

/// A FIFO of inbound items and the thread that delivers them. Every member
/// is thread-safe.
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
  /// `forget_on_goodbye`: see SequenceTracker. `tap` sees what is
  /// delivered (ChannelTap::on_delivered). With a `position_key`
  /// (position_channel_key), each message is given its position
  /// (ClusterMessage::position) once the transport's first mark has come.
  DeliveryQueue(ErrorSink on_error, GapHandler on_gap, std::shared_ptr<StatsCounters> stats,
                Capacity capacity, QueueFullPolicy policy, bool forget_on_goodbye = true,
                std::function<void(const Inbound&)> tap = {}, std::string position_key = {});
  ~DeliveryQueue();
  DeliveryQueue(const DeliveryQueue&) = delete;
  DeliveryQueue& operator=(const DeliveryQueue&) = delete;

  Subscription subscribe(MessageHandler handler);
  /// Subscribes a resuming subscription (resume.hpp) and queues its seam:
  /// it hears what is queued after this, once its reads are done. The
  /// Subscription, when it ends, also ends the resume (its reads stop).
  Subscription subscribe_resuming(const std::shared_ptr<Resume>& resume);
  /// Queues messages read for a resuming subscription, then (when `done`)
  /// the end of its round. Never dropped: the reader waits for room first.
  void post_read(const std::shared_ptr<Resume>& resume, std::vector<ClusterMessage> messages,
                 bool done);
  /// Waits until the queue is at most half full (or stopped: false).
  bool wait_for_room();
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

  // Reading back (see WithheldOrigins). An origin is withheld when its
  // message could not be taken (a full queue under drop_and_reread; a spill
  // row that could not be read, Inbound::Kind::unfetched, under any policy);
  // everything it sends later is dropped on arrival until the transport has
  // read its messages back, in order.

  /// True (and the message remembered) when `origin`'s `sequence` is
  /// withheld: the transport need not even fetch its body.
  bool drop_if_withheld(const std::string& origin, std::uint64_t sequence);

  struct RereadRequest {
    WithheldOrigins::Read read;
    std::size_t room = 0;        // how many messages the queue can take now
    std::size_t room_bytes = 0;  // and how many bytes of bodies
  };
  /// A withheld origin to read back now, when the queue has room for some.
  std::optional<RereadRequest> next_reread();
  /// When a withheld origin is next due to be read back (Clock's max when
  /// none is withheld; due now may still wait for room).
  WithheldOrigins::Clock::time_point next_reread_due();
  /// The messages the transport read back for `request`, in sequence order,
  /// having read the table up to (not including) `read_past` (rows it
  /// refused are left out). `reached_end`: the table holds no more of the
  /// origin than that. What does not fit stays withheld, to be read again.
  void post_reread(const RereadRequest& request, std::vector<Inbound> messages,
                   std::uint64_t read_past, bool reached_end);
  /// The read for `request` failed; it is retried after a pause, returned.
  std::chrono::milliseconds reread_failed(const RereadRequest& request);
  /// Called, from the delivery thread and under the queue's lock (so it must
  /// be quick and must not call back), whenever it has made room while an
  /// origin is withheld. Empty to stop the calls.
  void on_room_for_reread(std::function<void()> notify);

  // Reading while idle (IdleReader).

  /// Sets the reader; with none (nullptr), waits until the delivery thread
  /// is out of it (unless called from that thread), interrupting its wait.
  void set_idle_reader(IdleReader* reader);
  /// The reader can read now: an idle delivery thread calls it.
  void offer_idle_read();
  /// Makes a read_while_idle() in progress return soon.
  void interrupt_idle_read() noexcept { idle_wake_.signal(); }
  /// True while the delivery thread has nothing queued or running.
  bool idle() const noexcept { return idle_.load(); }

 private:
  void run();
  /// Queues one item, or records it as dropped. Called with mutex_ held.
  void enqueue(Inbound&& item);
  /// Withheld (drop_and_reread, or a failed fetch): absorbs `item` when its
  /// origin is withheld at its sequence. Called with mutex_ held.
  bool absorbed(const Inbound& item);
  /// True when `item` fits in the queue as it is now. Called with mutex_ held.
  bool fits(const Inbound& item) const;
  void push(Inbound&& item);
  /// Past half of either bound. Called with mutex_ held.
  bool half_full() const;
  /// Runs one batch through the tracker and the handlers.
  void deliver(std::vector<Inbound>& batch);
  void report_gap(const GapEvent& gap);
  /// A resume_* item, on the delivery thread.
  void resume_step(const Inbound& item);
  /// Resuming subscriptions whose seam found the bus lagging (read_now):
  /// seamed again after the next item delivered. Delivery thread only.
  std::vector<std::shared_ptr<Resume>> parked_;
  void show_tap(const Inbound& item);

  ErrorSink on_error_;
  GapHandler on_gap_;
  std::function<void(const Inbound&)> tap_;
  std::shared_ptr<StatsCounters> stats_;
  SequenceTracker tracker_;  // used by the delivery thread only
  const std::string position_key_;
  /// Without a key, nothing is tracked: a bus that gives no positions pays
  /// nothing for them (and keeps no cursor per origin it ever heard).
  bool gives_positions() const noexcept { return !position_key_.empty(); }
  StreamPosition position_;  // used by the delivery thread only
  /// On the delivery thread: what `gap` says of the stream's position.
  void pass(const GapEvent& gap);
  std::chrono::steady_clock::time_point last_sweep_ = std::chrono::steady_clock::now();
  /// On the delivery thread: lets the tracker forget silent origins, once
  /// a sweep period.
  void sweep_if_due();
  /// Counts a message handed on at `handed_at`, in `delivered` and, when
  /// it says when it was sent, in the lag (BusStats::delivery_lag).
  void count_delivered(const std::optional<std::chrono::steady_clock::time_point>& sent_at,
                       std::chrono::steady_clock::time_point handed_at) noexcept;
  std::shared_ptr<HandlerRegistry> handlers_ = std::make_shared<HandlerRegistry>();
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_cv_;
  std::condition_variable drained_;  // after each batch: room for the reader
  Capacity capacity_;
  QueueFullPolicy policy_;
  // A vector, not a deque: the delivery thread takes it whole, swapping in
  // the batch it has just delivered, so that the two buffers are reused
  // (a deque of 224-byte Inbounds allocated a node for every two).
  std::vector<Inbound> queue_;
  std::size_t queued_bytes_ = 0;     // the body_bytes of what queue_ holds
  std::size_t queued_messages_ = 0;  // what queue_ holds but marks
  WithheldOrigins withheld_;
  // !withheld_.empty(), written under mutex_ whenever that changes, read
  // without it: the listener asks for every message it decodes and on
  // every turn of its loop, and nearly always nothing is withheld (the
  // lock it took each time was one per message, shared with the delivery
  // thread).
  std::atomic<bool> withholding_{false};
  std::function<void()> notify_room_;
  // What a full queue turned away since the last batch was taken, per
  // origin, to report after everything of it that was queued: the range of
  // messages dropped (drop_and_report_gap; once an origin has dropped one,
  // its later ones are dropped too until then), and the newest heartbeat
  // or goodbye (which may be the only word of a loss at its tail).
  struct TurnedAway {
    std::uint64_t first = 0;  // messages first..last dropped (0: none)
    std::uint64_t last = 0;
    std::uint64_t heartbeat = 0;  // 0: none
    bool goodbye = false;
    bool origin_is_new = false;
  };
  std::unordered_map<std::string, TurnedAway> turned_away_;
  // More origins turned away than are remembered one by one (a flood of
  // made-up origins on a channel without secrets): a gap of unknown range.
  bool turned_away_overflowed_ = false;
  bool delivering_ = false;
  bool stopping_ = false;
  // Something queued wants delivering now (not only messages nobody will
  // hear, which can wait for lazy_wake).
  bool urgent_ = false;
  // Mirrors stopping_ for the handler loop, which runs without the mutex.
  std::atomic<bool> cancelled_{false};
  // Reading while idle: the reader, whether it may be called, whether the
  // delivery thread is in it (post() then signals idle_wake_, which it
  // polls, instead of wake_), and whether it is waiting for work.
  IdleReader* idle_reader_ = nullptr;
  bool idle_read_offered_ = false;
  bool reading_idle_ = false;
  std::condition_variable idle_read_over_;
  WakeFd idle_wake_;
  std::atomic<bool> idle_{true};
  OwnedThread thread_;
};

}  // namespace syncbus::detail
