#include "handler_registry.hpp"

#include <syncbus/errors.hpp>

#include <algorithm>
#include <string>

namespace syncbus::detail {

Subscription HandlerRegistry::add(MessageHandler handler, std::uint64_t* number) {
  if (!handler) {
    throw configuration_error("syncbus: subscribe() was given an empty handler; pass a callable");
  }
  auto entry = std::make_shared<Entry>();
  entry->handler = std::move(handler);
  {
    std::lock_guard<std::mutex> lock(entries_mutex_);
    entry->number = ++last_number_;
    if (number != nullptr) *number = entry->number;
    entries_.push_back(entry);
  }
  std::weak_ptr<HandlerRegistry> weak_self = weak_from_this();
  return Subscription([weak_self, entry] {
    entry->active.store(false);
    if (auto self = weak_self.lock()) self->remove(entry);
  });
}

std::uint64_t HandlerRegistry::audience() const {
  std::lock_guard<std::mutex> lock(entries_mutex_);
  return entries_.empty() ? 0 : last_number_;
}

void HandlerRegistry::remove(const std::shared_ptr<Entry>& entry) {
  std::lock_guard<std::recursive_mutex> wait_for_delivery(delivering_);
  std::lock_guard<std::mutex> lock(entries_mutex_);
  entries_.erase(std::remove(entries_.begin(), entries_.end(), entry), entries_.end());
}

void HandlerRegistry::deliver(const std::vector<Delivery>& deliveries, const ErrorSink& sink,
                              const std::atomic<bool>& cancel, const Handed& handed) {
  std::lock_guard<std::recursive_mutex> delivering(delivering_);
  std::vector<std::shared_ptr<Entry>> snapshot;
  {
    std::lock_guard<std::mutex> lock(entries_mutex_);
    snapshot = entries_;
  }
  for (const auto& delivery : deliveries) {
    const auto& message = delivery.message;
    const auto audience = delivery.audience;
    const auto handed_at = std::chrono::steady_clock::now();
    for (const auto& entry : snapshot) {
      if (cancel.load(std::memory_order_relaxed)) return;
      // Entries are in subscription order: the rest came later still.
      if (entry->number > audience) break;
      if (!entry->active.load()) continue;
      call(*entry, message, sink);
    }
    if (handed) handed(delivery, handed_at);
  }
}

void HandlerRegistry::deliver_to(std::uint64_t number, const std::vector<ClusterMessage>& messages,
                                 const ErrorSink& sink, const std::atomic<bool>& cancel) {
  std::lock_guard<std::recursive_mutex> delivering(delivering_);
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(entries_mutex_);
    // In subscription order, so by number: one engine may hold thousands.
    const auto found = std::lower_bound(
        entries_.begin(), entries_.end(), number,
        [](const std::shared_ptr<Entry>& e, std::uint64_t n) { return e->number < n; });
    if (found != entries_.end() && (*found)->number == number) entry = *found;
  }
  if (!entry) return;
  for (const auto& message : messages) {
    if (cancel.load(std::memory_order_relaxed) || !entry->active.load()) return;
    call(*entry, message, sink);
  }
}

void HandlerRegistry::call(const Entry& entry, const ClusterMessage& message,
                           const ErrorSink& sink) {
  try {
    entry.handler(message);
  } catch (const std::exception& e) {
    report(sink, error("syncbus: a message handler threw while handling message " + message.origin +
                       "#" + std::to_string(message.sequence) + ": " + e.what()));
  } catch (...) {
    report(sink, error("syncbus: a message handler threw a non-std exception while handling "
                       "message " +
                       message.origin + "#" + std::to_string(message.sequence)));
  }
}

}  // namespace syncbus::detail
