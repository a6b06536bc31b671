#include "delivery_queue.hpp"

#include <syncbus/errors.hpp>

#include <algorithm>
#include <utility>

#include "envelope.hpp"
#include "resume.hpp"

namespace syncbus::detail {
namespace {

// How long the delivery thread lets messages that nobody will hear gather
// before taking them (anything urgent ends the wait).
constexpr std::chrono::milliseconds lazy_wake{50};

// The most messages the delivery thread's two buffers keep room for
// between batches (about 1 MB each).
constexpr std::size_t kept_room = 4096;

// The tracker forgets origins silent for this many sweeps, one a minute:
// far above any heartbeat interval (PostgresBusOptions allows at most 5
// minutes), and above the freshness window of signed envelopes, so that a
// replay is still recognised as one (docs/GUARANTEES.md).
constexpr std::chrono::minutes sweep_every{1};
constexpr unsigned forget_after_sweeps = static_cast<unsigned>(origin_memory / sweep_every);

// Origins a full queue remembers one by one what it turned away from:
// beyond, a gap of unknown range (only a flood of made-up origins, on a
// channel without secrets, gets there).
constexpr std::size_t max_turned_away = 100'000;

bool carries_a_sequence(Inbound::Kind kind) {
  return kind != Inbound::Kind::connection_reset && kind != Inbound::Kind::dropped &&
         kind != Inbound::Kind::mark && kind != Inbound::Kind::resume_seam &&
         kind != Inbound::Kind::resume_read && kind != Inbound::Kind::resume_done;
}

}  // namespace

DeliveryQueue::DeliveryQueue(ErrorSink on_error, GapHandler on_gap,
                             std::shared_ptr<StatsCounters> stats, Capacity capacity,
                             QueueFullPolicy policy, bool forget_on_goodbye,
                             std::function<void(const Inbound&)> tap, std::string position_key)
    : on_error_(std::move(on_error)),
      on_gap_(std::move(on_gap)),
      tap_(std::move(tap)),
      stats_(std::move(stats)),
      tracker_(forget_on_goodbye),
      position_key_(std::move(position_key)),
      capacity_(capacity),
      policy_(policy) {
  thread_.start([this] { run(); });
}

DeliveryQueue::~DeliveryQueue() { stop(); }

Subscription DeliveryQueue::subscribe(MessageHandler handler) {
  return handlers_->add(std::move(handler));
}

Subscription DeliveryQueue::subscribe_resuming(const std::shared_ptr<Resume>& resume) {
  std::uint64_t number = 0;
  auto subscription = std::make_shared<Subscription>(handlers_->add(
      [resume](const ClusterMessage& message) { resume->on_message(message); }, &number));
  resume->subscription = number;
  // After the subscription: whatever is queued after the seam has it in
  // its audience (post() reads the audience under the same lock).
  Inbound seam{Inbound::Kind::resume_seam, {}};
  seam.resume = resume;
  post(std::move(seam));
  return Subscription([resume, subscription] {
    resume->end();
    subscription->unsubscribe();
  });
}

void DeliveryQueue::post_read(const std::shared_ptr<Resume>& resume,
                              std::vector<ClusterMessage> messages, bool done) {
  std::vector<Inbound> items;
  items.reserve(messages.size() + 1);
  for (auto& message : messages) {
    items.emplace_back(Inbound::Kind::resume_read, std::move(message));
    items.back().resume = resume;
  }
  if (done) {
    items.emplace_back(Inbound::Kind::resume_done, ClusterMessage{});
    items.back().resume = resume;
  }
  post(std::move(items));
}

bool DeliveryQueue::wait_for_room() {
  std::unique_lock<std::mutex> lock(mutex_);
  drained_.wait(lock, [this] {
    return stopping_ ||
           (queued_messages_ <= capacity_.messages / 2 && queued_bytes_ <= capacity_.bytes / 2);
  });
  return !stopping_;
}

void DeliveryQueue::post(std::vector<Inbound> items) {
  if (items.empty()) return;
  bool wake = false;
  bool reading_idle = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    reading_idle = reading_idle_;
    // Who may hear these: the handlers subscribed now (HandlerRegistry),
    // read under the lock, so that what is queued after a resuming
    // subscription's seam has it in its audience. Messages nobody will
    // hear (a publishing bus's own, typically) are only tracked: they need
    // no prompt delivery, so they wake the thread at most once per
    // lazy_wake instead of once per post.
    const auto audience = handlers_->audience();
    wake = queue_.empty();
    for (auto& item : items) {
      item.audience = audience;
      if (audience != 0 || item.kind != Inbound::Kind::message) urgent_ = true;
      enqueue(std::move(item));
    }
    // Lazy, but never so lazy that the queue fills and drops.
    if (half_full()) urgent_ = true;
    wake = wake || urgent_;
  }
  if (!wake) return;
  if (!reading_idle) {
    wake_.notify_one();
  } else if (!runs_on_this_thread()) {
    // It waits on its reader's socket and this fd; from the reader itself
    // (on this thread), it will look at the queue next anyway.
    idle_wake_.signal();
  }
}

void DeliveryQueue::post(Inbound item) {
  std::vector<Inbound> items;
  items.push_back(std::move(item));
  post(std::move(items));
}

bool DeliveryQueue::absorbed(const Inbound& item) {
  if (!carries_a_sequence(item.kind)) return false;
  const auto why = withheld_.absorb(item.message.origin, item.message.sequence);
  if (!why) return false;
  if (item.kind == Inbound::Kind::message && *why == WithheldOrigins::Why::queue_full) {
    StatsCounters::add(stats_->dropped_queue_full);
  }
  return true;
}

void DeliveryQueue::enqueue(Inbound&& item) {
  if (item.kind == Inbound::Kind::resume_seam || item.kind == Inbound::Kind::resume_read ||
      item.kind == Inbound::Kind::resume_done) {
    push(std::move(item));  // never dropped: the reader waits for room
    return;
  }
  if (item.kind == Inbound::Kind::mark) {
    // Never dropped, and no bytes. What is held back now comes after it:
    // the position keeps those origins' cursors below their holds.
    item.mark->holds = withheld_.held_from();
    for (const auto& [origin, away] : turned_away_) {
      if (away.first != 0) item.mark->holds.emplace_back(origin, away.first);
    }
    push(std::move(item));
    return;
  }
  const auto now = WithheldOrigins::Clock::now();
  // Held back behind the messages to read back; a heartbeat would report
  // them as a gap (it is remembered instead: see WithheldOrigins).
  if (absorbed(item)) return;
  if (item.kind == Inbound::Kind::unfetched) {
    withheld_.withhold(item.message.origin, item.message.sequence,
                       WithheldOrigins::Why::fetch_failed, now);
    withholding_.store(true);
    return;
  }
  const bool is_loss = item.kind == Inbound::Kind::message || item.kind == Inbound::Kind::lost;
  const bool is_heartbeat =
      item.kind == Inbound::Kind::heartbeat || item.kind == Inbound::Kind::goodbye;
  const auto turn_away = [&]() -> TurnedAway* {
    auto found = turned_away_.find(item.message.origin);
    if (found != turned_away_.end()) return &found->second;
    if (turned_away_.size() >= max_turned_away) {
      turned_away_overflowed_ = true;
      return nullptr;
    }
    return &turned_away_[item.message.origin];
  };
  // An origin that dropped a message since the last batch keeps dropping,
  // so that its gap is reported after everything of it that was queued.
  if (is_loss || is_heartbeat) {
    const auto found = turned_away_.find(item.message.origin);
    if (found != turned_away_.end() && (found->second.first != 0 || is_heartbeat)) {
      auto& away = found->second;
      if (is_heartbeat) {
        away.heartbeat = std::max(away.heartbeat, item.message.sequence);
        away.goodbye = away.goodbye || item.kind == Inbound::Kind::goodbye;
        away.origin_is_new = away.origin_is_new || item.origin_is_new;
      } else {
        StatsCounters::add(stats_->dropped_queue_full);
        away.last = std::max(away.last, item.message.sequence);
      }
      return;
    }
  }
  // Resets are rare and tiny: never dropped, or the gap would go unreported.
  if (fits(item) || item.kind == Inbound::Kind::connection_reset) {
    push(std::move(item));
    return;
  }
  if (is_heartbeat) {
    // Not dropped: a heartbeat or goodbye may be the only word of a loss at
    // an origin's tail. Delivered after what was queued.
    if (auto* away = turn_away()) {
      away->heartbeat = item.message.sequence;
      away->goodbye = item.kind == Inbound::Kind::goodbye;
      away->origin_is_new = item.origin_is_new;
    }
    return;
  }
  // A stale refusal says nothing the sequence check needs.
  if (!is_loss) return;
  StatsCounters::add(stats_->dropped_queue_full);
  const auto sequence = item.message.sequence;
  if (policy_ == QueueFullPolicy::drop_and_reread) {
    withheld_.withhold(item.message.origin, sequence, WithheldOrigins::Why::queue_full, now);
    withholding_.store(true);
    return;
  }
  if (auto* away = turn_away()) {
    away->first = sequence;
    away->last = sequence;
    away->origin_is_new = item.origin_is_new;
  }
}

bool DeliveryQueue::fits(const Inbound& item) const {
  // A lone message always fits, however large: the bound is on what waits
  // behind the handlers, and a bus refuses bodies over its own limit before
  // they get here.
  return queue_.empty() ||
         (queued_messages_ < capacity_.messages && queued_bytes_ <= capacity_.bytes &&
          item.body_bytes <= capacity_.bytes - queued_bytes_);
}

void DeliveryQueue::push(Inbound&& item) {
  queued_bytes_ += item.body_bytes;
  // Marks are bookkeeping, not messages: they take no room.
  if (item.kind != Inbound::Kind::mark) ++queued_messages_;
  queue_.push_back(std::move(item));
}

bool DeliveryQueue::half_full() const {
  return queued_messages_ >= capacity_.messages / 2 || queued_bytes_ >= capacity_.bytes / 2;
}

bool DeliveryQueue::drop_if_withheld(const std::string& origin, std::uint64_t sequence) {
  // Without the lock when nothing is withheld (nearly always): the
  // listener's early look, which enqueue() makes again under the lock.
  if (!withholding_.load()) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  return absorbed(Inbound{Inbound::Kind::message, {origin, sequence, {}, {}}});
}

std::optional<DeliveryQueue::RereadRequest> DeliveryQueue::next_reread() {
  if (!withholding_.load()) return std::nullopt;
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_ || withheld_.empty() || queued_messages_ >= capacity_.messages ||
      queued_bytes_ >= capacity_.bytes) {
    return std::nullopt;
  }
  auto read = withheld_.next(WithheldOrigins::Clock::now());
  if (!read) return std::nullopt;
  return RereadRequest{std::move(*read), capacity_.messages - queued_messages_,
                       capacity_.bytes - queued_bytes_};
}

WithheldOrigins::Clock::time_point DeliveryQueue::next_reread_due() {
  if (!withholding_.load()) return WithheldOrigins::Clock::time_point::max();
  std::lock_guard<std::mutex> lock(mutex_);
  return withheld_.next_due();
}

void DeliveryQueue::post_reread(const RereadRequest& request, std::vector<Inbound> messages,
                                std::uint64_t read_past, bool reached_end) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    const auto audience = handlers_->audience();
    auto next = request.read.from;
    bool all_fitted = true;
    for (auto& item : messages) {
      if (item.message.sequence < next) continue;
      if (!fits(item)) {
        all_fitted = false;  // the rest waits for more room
        break;
      }
      next = item.message.sequence + 1;
      item.audience = audience;
      push(std::move(item));
      StatsCounters::add(stats_->reread_from_table);
    }
    if (all_fitted) next = std::max(next, read_past);
    const auto settled = withheld_.settle(request.read, next, reached_end && all_fitted,
                                          WithheldOrigins::Clock::now());
    withholding_.store(!withheld_.empty());
    if (settled.lost) {
      // Known, and not in the table: vacuumed, or a publish that failed.
      push(Inbound{Inbound::Kind::dropped,
                   {request.read.origin, settled.lost->second, {}, {}},
                   settled.lost->first});
    }
    urgent_ = true;
  }
  wake_.notify_one();
}

std::chrono::milliseconds DeliveryQueue::reread_failed(const RereadRequest& request) {
  std::lock_guard<std::mutex> lock(mutex_);
  return withheld_.failed(request.read, WithheldOrigins::Clock::now());
}

void DeliveryQueue::on_room_for_reread(std::function<void()> notify) {
  std::lock_guard<std::mutex> lock(mutex_);
  notify_room_ = std::move(notify);
}

bool DeliveryQueue::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return idle_cv_.wait_for(lock, timeout,
                           [this] { return stopping_ || (queue_.empty() && !delivering_); });
}

void DeliveryQueue::stop() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    cancelled_.store(true);
    queue_.clear();
    queued_bytes_ = 0;
    queued_messages_ = 0;
  }
  wake_.notify_all();
  idle_wake_.signal();
  idle_cv_.notify_all();
  drained_.notify_all();
  thread_.join_unless_current();
}

void DeliveryQueue::set_idle_reader(IdleReader* reader) {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_reader_ = reader;
  if (reader != nullptr) return;
  idle_read_offered_ = false;
  if (runs_on_this_thread()) return;
  idle_wake_.signal();
  idle_read_over_.wait(lock, [this] { return !reading_idle_; });
}

void DeliveryQueue::offer_idle_read() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (idle_reader_ == nullptr || idle_read_offered_) return;
    idle_read_offered_ = true;
  }
  wake_.notify_one();
}

void DeliveryQueue::run() {
  std::vector<Inbound> batch;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    // Awake at least once a sweep period, so that origins are forgotten on
    // time (and origins_tracked says so) on a channel gone quiet.
    const auto sweep_due = last_sweep_ + sweep_every;
    if (queue_.empty()) idle_.store(true);
    wake_.wait_until(lock, sweep_due, [this] {
      return stopping_ || !queue_.empty() || (idle_read_offered_ && idle_reader_ != nullptr);
    });
    if (stopping_) return;
    if (queue_.empty() && idle_read_offered_ && idle_reader_ != nullptr) {
      // Nothing to deliver: wait on the transport's input, and read it here
      // (IdleReader), one wake-up less per message than being handed it.
      auto* reader = idle_reader_;
      reading_idle_ = true;
      lock.unlock();
      const auto most = std::chrono::duration_cast<std::chrono::milliseconds>(
          sweep_due - std::chrono::steady_clock::now());
      const bool again =
          reader->read_while_idle(idle_wake_.fd(), std::max(most, std::chrono::milliseconds(0)));
      lock.lock();
      reading_idle_ = false;
      // A signal that came meanwhile is for this wait, over now.
      idle_wake_.consume();
      idle_read_offered_ = again && idle_reader_ != nullptr;
      idle_read_over_.notify_all();
      if (queue_.empty()) {
        lock.unlock();
        sweep_if_due();
        lock.lock();
      }
      continue;
    }
    if (queue_.empty()) {
      lock.unlock();
      sweep_if_due();
      lock.lock();
      continue;
    }
    idle_.store(false);
    if (!urgent_) wake_.wait_for(lock, lazy_wake, [this] { return stopping_ || urgent_; });
    if (stopping_) return;
    urgent_ = false;
    batch.swap(queue_);  // batch was empty: queue_ gets its room
    queued_bytes_ = 0;
    queued_messages_ = 0;
    // What an origin dropped arrived after everything of it that was
    // queued (it drops all it sends once it has dropped one).
    for (auto& [origin, away] : turned_away_) {
      if (away.first != 0) {
        batch.push_back(Inbound{Inbound::Kind::dropped, {origin, away.last, {}, {}}, away.first});
        batch.back().origin_is_new = away.origin_is_new;
      }
      if (away.heartbeat != 0) {
        batch.push_back(Inbound{away.goodbye ? Inbound::Kind::goodbye : Inbound::Kind::heartbeat,
                                {origin, away.heartbeat, {}, {}}});
        batch.back().origin_is_new = away.origin_is_new;
      }
    }
    turned_away_.clear();
    if (turned_away_overflowed_) {
      batch.push_back(Inbound{Inbound::Kind::connection_reset, {}});
      turned_away_overflowed_ = false;
    }
    if (!withheld_.empty() && notify_room_) notify_room_();
    delivering_ = true;
    lock.unlock();
    deliver(batch);
    batch.clear();
    // Room a burst made is given back rather than kept idle: a full queue
    // (65,536 messages by default) would keep 14 MB in each buffer.
    if (batch.capacity() > kept_room) batch = std::vector<Inbound>();
    sweep_if_due();
    lock.lock();
    delivering_ = false;
    if (queue_.empty()) idle_cv_.notify_all();
    drained_.notify_all();
  }
}

void DeliveryQueue::count_delivered(
    const std::optional<std::chrono::steady_clock::time_point>& sent_at,
    std::chrono::steady_clock::time_point handed_at) noexcept {
  std::optional<std::chrono::microseconds> lag;
  if (sent_at) lag = std::chrono::duration_cast<std::chrono::microseconds>(handed_at - *sent_at);
  stats_->record_delivery(lag);
}

void DeliveryQueue::sweep_if_due() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_sweep_ >= sweep_every) {
    last_sweep_ = now;
    tracker_.sweep(forget_after_sweeps);
  }
  stats_->origins_tracked.store(tracker_.origins(), std::memory_order_relaxed);
}

void DeliveryQueue::deliver(std::vector<Inbound>& batch) {
  // Consecutive messages go to the handlers together (one lock, one snapshot
  // of the handler list); a gap is reported between the messages it
  // separates.
  std::vector<Delivery> run;
  const auto flush = [&] {
    if (run.empty()) return;
    handlers_->deliver(run, on_error_, cancelled_,
                       [this](const Delivery& d, std::chrono::steady_clock::time_point handed_at) {
                         count_delivered(d.sent_at, handed_at);
                       });
    run.clear();
  };
  const auto gap = [&](const std::optional<GapEvent>& found) {
    if (!found) return;
    flush();
    pass(*found);
    report_gap(*found);
  };
  // Seams that found the bus lagging go again behind what came since.
  auto parked = std::move(parked_);
  parked_.clear();
  if (!parked.empty()) {
    std::vector<Inbound> seams;
    for (auto& resume : parked) {
      if (resume->ended()) continue;
      seams.emplace_back(Inbound::Kind::resume_seam, ClusterMessage{});
      seams.back().resume = std::move(resume);
    }
    post(std::move(seams));
  }
  for (auto& item : batch) {
    if (cancelled_.load(std::memory_order_relaxed)) return;
    const auto& origin = item.message.origin;
    const auto sequence = item.message.sequence;
    switch (item.kind) {
      case Inbound::Kind::message: {
        const auto verdict = tracker_.on_message(origin, sequence, item.origin_is_new,
                                                 item.signature_predates, item.replay_suspect);
        gap(verdict.gap);
        if (!verdict.deliver) {
          if (!verdict.gap) StatsCounters::add(stats_->duplicates_dropped);
          continue;
        }
        if (item.before_start) continue;  // counted, and named by the start
        show_tap(item);
        if (gives_positions()) position_.delivered(origin, sequence, item.xid);
        if (item.audience == 0) {
          // To every handler there was: none.
          count_delivered(item.sent_at, std::chrono::steady_clock::now());
          continue;
        }
        if (item.body_text) {
          try {
            item.message.body = parse_body(*item.body_text, item.body_text->size());
          } catch (const std::exception& e) {
            flush();
            report(on_error_, e);
            report_gap({origin, sequence, sequence});  // passed: delivered as a gap
            continue;
          }
        }
        if (gives_positions() && position_.started()) {
          item.message.position = position_.token(position_key_);
        }
        run.push_back({std::move(item.message), item.audience, item.sent_at});
        break;
      }
      case Inbound::Kind::heartbeat:
        gap(tracker_.on_heartbeat(origin, sequence, item.origin_is_new,
                                  item.signature_predates || item.replay_suspect));
        show_tap(item);
        break;
      case Inbound::Kind::goodbye:
        gap(tracker_.on_goodbye(origin, sequence, item.origin_is_new));
        show_tap(item);
        break;
      case Inbound::Kind::connection_reset:
        flush();
        if (!item.keep_freshness) tracker_.connection_reset();
        report_gap(GapEvent{});
        break;
      case Inbound::Kind::dropped:
        gap(tracker_.on_dropped(origin, item.first_dropped, sequence, item.origin_is_new));
        break;
      case Inbound::Kind::lost:
        gap(tracker_.on_dropped(origin, sequence, sequence, item.origin_is_new));
        break;
      case Inbound::Kind::stale:
        gap(tracker_.on_stale(origin, sequence));
        break;
      case Inbound::Kind::unfetched:
        break;  // taken by enqueue(), never queued
      case Inbound::Kind::resume_seam:
      case Inbound::Kind::resume_read:
      case Inbound::Kind::resume_done:
        flush();
        resume_step(item);
        break;
      case Inbound::Kind::mark:
        if (!gives_positions()) break;
        if (position_.started()) {
          position_.settle(item.mark->snapshot, item.mark->holds);
        } else {
          position_.start(item.mark->snapshot);
        }
        break;
    }
  }
  flush();
}

void DeliveryQueue::resume_step(const Inbound& item) {
  auto& resume = *item.resume;
  const auto deliver_read = [&](const std::vector<ClusterMessage>& messages) {
    resume.handing_read = true;
    handlers_->deliver_to(resume.subscription, messages, on_error_, cancelled_);
    resume.handing_read = false;
  };
  switch (item.kind) {
    case Inbound::Kind::resume_seam:
      if (resume.read_now) {
        // Read at once, here: nothing comes between the read and live.
        auto read = resume.read_now(resume, {position_.snapshot(), position_.cursors()});
        if (!read) {
          parked_.push_back(item.resume);
          break;
        }
        resume.stage = Resume::Stage::reading;
        deliver_read(*read);
        resume.stage = Resume::Stage::live;
        resume.finish();
        break;
      }
      // Everything before this point of the stream is read for it; what
      // follows is buffered until the read is done.
      resume.stage = Resume::Stage::reading;
      resume.set_target({position_.snapshot(), position_.cursors()});
      break;
    case Inbound::Kind::resume_read:
      deliver_read({item.message});
      break;
    case Inbound::Kind::resume_done:
      if (resume.overflowed || resume.behind) {
        // What it dropped is in the table: one more round, up to here. (Or
        // the bus had not caught up with the position: try again from here,
        // where it has gone further; what was buffered is before it.)
        resume.overflowed = false;
        resume.behind = false;
        resume.buffered.clear();
        resume.set_target({position_.snapshot(), position_.cursors()});
        break;
      }
      deliver_read(resume.buffered);
      resume.buffered.clear();
      resume.stage = Resume::Stage::live;
      resume.finish();
      break;
    default:
      break;
  }
}

void DeliveryQueue::pass(const GapEvent& gap) {
  if (gives_positions() && gap.range_known()) position_.passed(gap.origin, gap.last_missing);
}

void DeliveryQueue::show_tap(const Inbound& item) {
  if (tap_) call_reporting(on_error_, "the channel tap", [&] { tap_(item); });
}

void DeliveryQueue::report_gap(const GapEvent& gap) {
  if (on_gap_) call_reporting(on_error_, "the on_gap handler", [&] { on_gap_(gap); });
  // Counted once reported, as a message is once its handlers have it: what
  // stats() counts, on_gap has been told.
  StatsCounters::add(stats_->gaps);
  StatsCounters::add_saturating(stats_->messages_missing, gap.count());
}

}  // namespace syncbus::detail
