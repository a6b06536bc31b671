#include "delivery_queue.hpp"

#include <syncbus/errors.hpp>

#include <algorithm>
#include <utility>

#include "envelope.hpp"

namespace syncbus::detail {

void report(const ErrorSink& sink, const std::exception& e) noexcept {
  if (!sink) return;
  try {
    sink(e);
  } catch (...) {
    // Documented: exceptions from the error handler are ignored.
  }
}

ErrorSink counting_errors(std::shared_ptr<StatsCounters> stats, ErrorSink user, Logger log) {
  return [stats = std::move(stats), user = std::move(user),
          log = std::move(log)](const std::exception& e) {
    stats->record_error(e);
    log(LogLevel::error, "{}", e.what());
    report(user, e);
  };
}

Subscription HandlerRegistry::add(MessageHandler handler) {
  if (!handler) {
    throw configuration_error("syncbus: subscribe() was given an empty handler; pass a callable");
  }
  auto entry = std::make_shared<Entry>();
  entry->handler = std::move(handler);
  {
    std::lock_guard<std::mutex> lock(entries_mutex_);
    entries_.push_back(entry);
  }
  std::weak_ptr<HandlerRegistry> weak_self = weak_from_this();
  return Subscription([weak_self, entry] {
    entry->active.store(false);
    if (auto self = weak_self.lock()) self->remove(entry);
  });
}

bool HandlerRegistry::empty() const {
  std::lock_guard<std::mutex> lock(entries_mutex_);
  return entries_.empty();
}

void HandlerRegistry::remove(const std::shared_ptr<Entry>& entry) {
  std::lock_guard<std::recursive_mutex> wait_for_delivery(delivering_);
  std::lock_guard<std::mutex> lock(entries_mutex_);
  entries_.erase(std::remove(entries_.begin(), entries_.end(), entry), entries_.end());
}

void HandlerRegistry::deliver(const std::vector<ClusterMessage>& messages, const ErrorSink& sink,
                              const std::atomic<bool>& cancel) {
  std::lock_guard<std::recursive_mutex> delivering(delivering_);
  std::vector<std::shared_ptr<Entry>> snapshot;
  {
    std::lock_guard<std::mutex> lock(entries_mutex_);
    snapshot = entries_;
  }
  for (const auto& message : messages) {
    for (const auto& entry : snapshot) {
      if (cancel.load(std::memory_order_relaxed)) return;
      if (!entry->active.load()) continue;
      try {
        entry->handler(message);
      } catch (const std::exception& e) {
        report(sink,
               error("syncbus: a message handler threw while handling "
                     "message " +
                     message.origin + "#" + std::to_string(message.sequence) + ": " + e.what()));
      } catch (...) {
        report(sink, error("syncbus: a message handler threw a non-std "
                           "exception while handling message " +
                           message.origin + "#" + std::to_string(message.sequence)));
      }
    }
  }
}

DeliveryQueue::DeliveryQueue(ErrorSink on_error, GapHandler on_gap,
                             std::shared_ptr<StatsCounters> stats, Capacity capacity,
                             QueueFullPolicy policy)
    : on_error_(std::move(on_error)),
      on_gap_(std::move(on_gap)),
      stats_(std::move(stats)),
      capacity_(capacity),
      policy_(policy) {
  thread_.start([this] { run(); });
}

DeliveryQueue::~DeliveryQueue() { stop(); }

Subscription DeliveryQueue::subscribe(MessageHandler handler) {
  return handlers_->add(std::move(handler));
}

void DeliveryQueue::post(std::vector<Inbound> items) {
  if (items.empty()) return;
  // Messages that arrive while no handler is subscribed (a publishing bus's
  // own, typically) are only tracked: they need no prompt delivery, so they
  // wake the thread at most once per lazy_wake instead of once per post.
  const bool unheard = handlers_->empty();
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    wake = queue_.empty();
    for (auto& item : items) {
      if (unheard && item.kind == Inbound::Kind::message) {
        item.unheard = true;
      } else {
        urgent_ = true;
      }
      enqueue(std::move(item));
    }
    // Lazy, but never so lazy that the queue fills and drops.
    if (half_full()) urgent_ = true;
    wake = wake || urgent_;
  }
  if (wake) wake_.notify_one();
}

void DeliveryQueue::post(Inbound item) {
  std::vector<Inbound> items;
  items.push_back(std::move(item));
  post(std::move(items));
}

void DeliveryQueue::enqueue(Inbound&& item) {
  if (policy_ == QueueFullPolicy::drop_and_reread && item.kind != Inbound::Kind::connection_reset) {
    // Held back behind the messages to re-read; a heartbeat would report them
    // as a gap.
    const auto held = withheld_.find(item.message.origin);
    if (held != withheld_.end() && item.message.sequence >= held->second) {
      if (item.kind == Inbound::Kind::message) StatsCounters::add(stats_->dropped_queue_full);
      return;
    }
  }
  // Resets are rare and tiny: never dropped, or the gap would go unreported.
  if (fits(item) || item.kind == Inbound::Kind::connection_reset) {
    queued_bytes_ += item.body_bytes;
    queue_.push_back(std::move(item));
    return;
  }
  // A dropped heartbeat says nothing that the next one will not; a dropped
  // loss is a loss all the same.
  if (item.kind != Inbound::Kind::message && item.kind != Inbound::Kind::lost) return;
  StatsCounters::add(stats_->dropped_queue_full);
  const auto sequence = item.message.sequence;
  if (policy_ == QueueFullPolicy::drop_and_reread) {
    // Not withheld yet (checked above), or withheld from a later sequence.
    auto [held, first] = withheld_.try_emplace(std::move(item.message.origin), sequence);
    if (!first) held->second = std::min(held->second, sequence);
    return;
  }
  const auto [entry, first] =
      dropped_.try_emplace(std::move(item.message.origin), sequence, sequence);
  if (!first) {
    entry->second.first = std::min(entry->second.first, sequence);
    entry->second.second = std::max(entry->second.second, sequence);
  }
}

bool DeliveryQueue::fits(const Inbound& item) const {
  // A lone message always fits, however large: the bound is on what waits
  // behind the handlers, and a bus refuses bodies over its own limit before
  // they get here.
  return queue_.empty() ||
         (queue_.size() < capacity_.messages && queued_bytes_ <= capacity_.bytes &&
          item.body_bytes <= capacity_.bytes - queued_bytes_);
}

bool DeliveryQueue::half_full() const {
  return queue_.size() >= capacity_.messages / 2 || queued_bytes_ >= capacity_.bytes / 2;
}

bool DeliveryQueue::drop_if_withheld(const std::string& origin, std::uint64_t sequence) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto held = withheld_.find(origin);
  if (held == withheld_.end() || sequence < held->second) return false;
  StatsCounters::add(stats_->dropped_queue_full);
  return true;
}

std::optional<DeliveryQueue::RereadRequest> DeliveryQueue::next_reread() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_ || withheld_.empty() || queue_.size() >= capacity_.messages ||
      queued_bytes_ >= capacity_.bytes) {
    return std::nullopt;
  }
  const auto& [origin, from] = *withheld_.begin();
  return RereadRequest{origin, from, capacity_.messages - queue_.size(),
                       capacity_.bytes - queued_bytes_};
}

void DeliveryQueue::post_reread(const std::string& origin, std::vector<Inbound> messages,
                                std::uint64_t next_sequence, bool reached_end) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto held = withheld_.find(origin);
    if (stopping_ || held == withheld_.end()) return;
    bool all_fitted = true;
    for (auto& item : messages) {
      if (item.message.sequence < held->second) continue;
      if (!fits(item)) {
        held->second = item.message.sequence;  // the rest waits for more room
        all_fitted = false;
        break;
      }
      held->second = item.message.sequence + 1;
      queued_bytes_ += item.body_bytes;
      queue_.push_back(std::move(item));
      StatsCounters::add(stats_->reread_from_table);
    }
    urgent_ = true;
    if (all_fitted) {
      held->second = std::max(held->second, next_sequence);
      if (reached_end) withheld_.erase(held);
    }
  }
  wake_.notify_one();
}

void DeliveryQueue::on_room_for_reread(std::function<void()> notify) {
  std::lock_guard<std::mutex> lock(mutex_);
  notify_room_ = std::move(notify);
}

bool DeliveryQueue::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return idle_.wait_for(lock, timeout,
                        [this] { return stopping_ || (queue_.empty() && !delivering_); });
}

void DeliveryQueue::stop() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    cancelled_.store(true);
    queue_.clear();
    queued_bytes_ = 0;
  }
  wake_.notify_all();
  idle_.notify_all();
  thread_.join_unless_current();
}

// How long the delivery thread lets unheard messages gather before taking
// them (anything urgent ends the wait).
constexpr std::chrono::milliseconds lazy_wake{50};

void DeliveryQueue::run() {
  std::vector<Inbound> batch;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (!urgent_) wake_.wait_for(lock, lazy_wake, [this] { return stopping_ || urgent_; });
    if (stopping_) return;
    urgent_ = false;
    batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
    queue_.clear();
    queued_bytes_ = 0;
    // Everything dropped arrived after everything queued (dropping only
    // happens while the queue is full, and this takes it whole).
    for (auto& [origin, range] : dropped_) {
      batch.push_back(Inbound{Inbound::Kind::dropped, {origin, range.second, {}}, range.first});
    }
    dropped_.clear();
    if (!withheld_.empty() && notify_room_) notify_room_();
    delivering_ = true;
    lock.unlock();
    deliver(batch);
    batch.clear();
    lock.lock();
    delivering_ = false;
    if (queue_.empty()) idle_.notify_all();
  }
}

void DeliveryQueue::deliver(std::vector<Inbound>& batch) {
  // Consecutive messages go to the handlers together (one lock, one snapshot
  // of the handler list); a gap is reported between the messages it
  // separates.
  std::vector<ClusterMessage> run;
  const auto flush = [&] {
    if (run.empty()) return;
    handlers_->deliver(run, on_error_, cancelled_);
    StatsCounters::add(stats_->delivered, run.size());
    run.clear();
  };
  for (auto& item : batch) {
    if (cancelled_.load(std::memory_order_relaxed)) return;
    switch (item.kind) {
      case Inbound::Kind::message: {
        const auto verdict = tracker_.on_message(item.message.origin, item.message.sequence);
        if (verdict.gap) {
          flush();
          report_gap(*verdict.gap);
        }
        if (!verdict.deliver) {
          StatsCounters::add(stats_->duplicates_dropped);
          continue;
        }
        if (item.unheard) {
          StatsCounters::add(stats_->delivered);  // to every handler there was: none
          continue;
        }
        if (item.body_text && !handlers_->empty()) {
          try {
            item.message.body = parse_body(*item.body_text, item.body_text->size());
          } catch (const std::exception& e) {
            flush();
            report(on_error_, e);
            report_gap({item.message.origin, item.message.sequence, item.message.sequence});
            continue;
          }
        }
        run.push_back(std::move(item.message));
        break;
      }
      case Inbound::Kind::heartbeat:
        if (auto gap = tracker_.on_heartbeat(item.message.origin, item.message.sequence)) {
          flush();
          report_gap(*gap);
        }
        break;
      case Inbound::Kind::connection_reset:
        flush();
        report_gap(GapEvent{});
        break;
      case Inbound::Kind::dropped:
        if (auto gap = tracker_.on_dropped(item.message.origin, item.first_dropped,
                                           item.message.sequence)) {
          flush();
          report_gap(*gap);
        }
        break;
      case Inbound::Kind::lost:
        if (auto gap = tracker_.on_dropped(item.message.origin, item.message.sequence,
                                           item.message.sequence)) {
          flush();
          report_gap(*gap);
        }
        break;
    }
  }
  flush();
}

void DeliveryQueue::report_gap(const GapEvent& gap) {
  StatsCounters::add(stats_->gaps);
  StatsCounters::add(stats_->messages_missing, gap.count());
  if (!on_gap_) return;
  try {
    on_gap_(gap);
  } catch (const std::exception& e) {
    report(on_error_, error(std::string("syncbus: the on_gap handler threw: ") + e.what()));
  } catch (...) {
    report(on_error_, error("syncbus: the on_gap handler threw a non-std exception"));
  }
}

}  // namespace syncbus::detail
