#include "delivery_queue.hpp"

#include <syncbus/errors.hpp>

#include <algorithm>
#include <utility>

namespace syncbus::detail {

void report(const ErrorSink& sink, const std::exception& e) noexcept {
  if (!sink) return;
  try {
    sink(e);
  } catch (...) {
    // Documented: exceptions from the error handler are ignored.
  }
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

DeliveryQueue::DeliveryQueue(ErrorSink on_error)
    : on_error_(std::move(on_error)), thread_([this] { run(); }) {}

DeliveryQueue::~DeliveryQueue() {
  stop();
  if (thread_.joinable()) thread_.join();
}

Subscription DeliveryQueue::subscribe(MessageHandler handler) {
  return handlers_->add(std::move(handler));
}

void DeliveryQueue::post(std::vector<ClusterMessage> messages) {
  if (messages.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    for (auto& m : messages) queue_.push_back(std::move(m));
  }
  wake_.notify_one();
}

void DeliveryQueue::post(ClusterMessage message) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    queue_.push_back(std::move(message));
  }
  wake_.notify_one();
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
  }
  wake_.notify_all();
  idle_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) {
    thread_.join();
  }
}

void DeliveryQueue::run() {
  std::vector<ClusterMessage> batch;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
    queue_.clear();
    delivering_ = true;
    lock.unlock();
    handlers_->deliver(batch, on_error_, cancelled_);
    batch.clear();
    lock.lock();
    delivering_ = false;
    if (queue_.empty()) idle_.notify_all();
  }
}

}  // namespace syncbus::detail
