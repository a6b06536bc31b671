#include <syncbus/in_memory_bus.hpp>

#include <syncbus/errors.hpp>

#include <algorithm>
#include <mutex>
#include <vector>

#include "delivery_queue.hpp"
#include "instance_id.hpp"

namespace syncbus {

// The hub is the in-process stand-in for the database: it fans each message
// out to every bus's delivery queue under one lock, so every bus sees the same
// global order, as PostgreSQL delivers in commit order.
struct InMemoryHub::state {
  mutable std::mutex mutex;
  std::vector<std::shared_ptr<detail::DeliveryQueue>> members;

  void fan_out(const ClusterMessage& message) {
    for (const auto& member : members) member->post(message);
  }
};

InMemoryHub::InMemoryHub() : state_(std::make_shared<state>()) {}
InMemoryHub::~InMemoryHub() = default;

bool InMemoryHub::wait_idle(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::shared_ptr<detail::DeliveryQueue>> members;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    members = state_->members;
  }
  for (const auto& member : members) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!member->wait_idle(std::max(left, std::chrono::milliseconds(0)))) {
      return false;
    }
  }
  return true;
}

std::size_t InMemoryHub::bus_count() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->members.size();
}

struct InMemoryClusterBus::impl {
  std::shared_ptr<InMemoryHub> hub;
  std::string instance_id;
  std::shared_ptr<detail::DeliveryQueue> queue;
  // Guarded by the hub's mutex, which orders publishes cluster-wide.
  std::uint64_t last_sequence = 0;
  bool closed = false;
};

InMemoryClusterBus::InMemoryClusterBus() : InMemoryClusterBus(std::make_shared<InMemoryHub>()) {}

InMemoryClusterBus::InMemoryClusterBus(std::shared_ptr<InMemoryHub> hub,
                                       InMemoryBusOptions options) {
  if (!hub) {
    throw configuration_error(
        "syncbus: InMemoryClusterBus was given a null hub; pass "
        "std::make_shared<syncbus::InMemoryHub>() shared by the buses of one "
        "cluster");
  }
  auto self = std::make_unique<impl>();
  self->instance_id = detail::checked_instance_id(options.instance_id);
  self->queue = std::make_shared<detail::DeliveryQueue>(std::move(options.on_error));
  self->hub = std::move(hub);
  {
    std::lock_guard<std::mutex> lock(self->hub->state_->mutex);
    self->hub->state_->members.push_back(self->queue);
  }
  impl_ = std::move(self);
}

InMemoryClusterBus::~InMemoryClusterBus() { close(); }

const std::string& InMemoryClusterBus::instance_id() const { return impl_->instance_id; }

const std::shared_ptr<InMemoryHub>& InMemoryClusterBus::hub() const noexcept { return impl_->hub; }

void InMemoryClusterBus::publish(const nlohmann::json& body) {
  auto& hub_state = *impl_->hub->state_;
  std::lock_guard<std::mutex> lock(hub_state.mutex);
  if (impl_->closed) {
    throw closed_error(
        "syncbus: publish() on an InMemoryClusterBus that was "
        "closed; create a new bus");
  }
  ClusterMessage message{impl_->instance_id, ++impl_->last_sequence, body};
  hub_state.fan_out(message);
}

Subscription InMemoryClusterBus::subscribe(MessageHandler handler) {
  {
    std::lock_guard<std::mutex> lock(impl_->hub->state_->mutex);
    if (impl_->closed) {
      throw closed_error(
          "syncbus: subscribe() on an InMemoryClusterBus that "
          "was closed; create a new bus");
    }
  }
  return impl_->queue->subscribe(std::move(handler));
}

void InMemoryClusterBus::close() {
  {
    auto& hub_state = *impl_->hub->state_;
    std::lock_guard<std::mutex> lock(hub_state.mutex);
    if (impl_->closed) return;
    impl_->closed = true;
    auto& members = hub_state.members;
    members.erase(std::remove(members.begin(), members.end(), impl_->queue), members.end());
  }
  impl_->queue->stop();
}

}  // namespace syncbus
