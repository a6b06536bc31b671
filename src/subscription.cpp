#include <syncbus/cluster_bus.hpp>

#include <utility>

namespace syncbus {

Subscription::Subscription(std::function<void()> cancel) noexcept : cancel_(std::move(cancel)) {}

Subscription::~Subscription() { unsubscribe(); }

Subscription::Subscription(Subscription&& other) noexcept
    : cancel_(std::exchange(other.cancel_, nullptr)) {}

Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    unsubscribe();
    cancel_ = std::exchange(other.cancel_, nullptr);
  }
  return *this;
}

void Subscription::unsubscribe() noexcept {
  if (auto cancel = std::exchange(cancel_, nullptr)) {
    try {
      cancel();
    } catch (...) {
      // Cancelling only flips a flag and takes a lock; nothing to report.
    }
  }
}

}  // namespace syncbus
