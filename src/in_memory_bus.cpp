#include <syncbus/errors.hpp>
#include <syncbus/in_memory_bus.hpp>

#include <algorithm>
#include <mutex>
#include <vector>

#include "delivery_queue.hpp"
#include "instance_id.hpp"
#include "stats_counters.hpp"

namespace syncbus {
namespace {

// One bus as the hub sees it. Guarded by the hub's mutex.
struct Member {
  std::string origin;
  std::shared_ptr<detail::DeliveryQueue> queue;
  std::uint64_t last_sequence = 0;
  // Simulated faults.
  std::size_t drop_next = 0;
  std::size_t duplicate_next = 0;
  bool disconnected = false;
};

detail::Inbound message_item(const ClusterMessage& message) {
  detail::Inbound item{detail::Inbound::Kind::message, message};
  item.sent_at = std::chrono::steady_clock::now();
  return item;
}

}  // namespace

// The hub is the in-process stand-in for the database: it fans each message
// out to every bus's delivery queue under one lock, so every bus sees the same
// global order, as PostgreSQL delivers in commit order.
struct InMemoryHub::state {
  mutable std::mutex mutex;
  std::vector<std::shared_ptr<Member>> members;

  void fan_out(const ClusterMessage& message) {
    for (const auto& member : members) {
      if (member->disconnected) continue;
      if (member->drop_next > 0) {
        --member->drop_next;
        continue;
      }
      if (member->duplicate_next > 0) {
        --member->duplicate_next;
        member->queue->post({message_item(message), message_item(message)});
        continue;
      }
      member->queue->post(message_item(message));
    }
  }
};

InMemoryHub::InMemoryHub() : state_(std::make_shared<state>()) {}
InMemoryHub::~InMemoryHub() = default;

bool InMemoryHub::wait_idle(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::shared_ptr<detail::DeliveryQueue>> queues;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    for (const auto& member : state_->members) queues.push_back(member->queue);
  }
  for (const auto& queue : queues) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!queue->wait_idle(std::max(left, std::chrono::milliseconds(0)))) return false;
  }
  return true;
}

std::size_t InMemoryHub::bus_count() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->members.size();
}

void InMemoryHub::send_heartbeats() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (const auto& sender : state_->members) {
    if (sender->last_sequence == 0) continue;
    for (const auto& receiver : state_->members) {
      if (receiver->disconnected) continue;
      receiver->queue->post(detail::Inbound{detail::Inbound::Kind::heartbeat,
                                            {sender->origin, sender->last_sequence, {}, {}}});
    }
  }
}

struct InMemoryClusterBus::impl {
  std::shared_ptr<InMemoryHub> hub;
  std::shared_ptr<Member> member;  // its fields are guarded by the hub's mutex
  std::shared_ptr<detail::StatsCounters> stats = std::make_shared<detail::StatsCounters>();
  bool closed = false;  // guarded by the hub's mutex

  InMemoryHub::state& hub_state() const { return *hub->state_; }
};

InMemoryClusterBus::InMemoryClusterBus() : InMemoryClusterBus(std::make_shared<InMemoryHub>()) {}

InMemoryClusterBus::InMemoryClusterBus(std::shared_ptr<InMemoryHub> hub,
                                       InMemoryBusOptions options) {
  if (!hub) {
    throw configuration_error(
        "syncbus: InMemoryClusterBus was given a null hub; pass "
        "std::make_shared<syncbus::InMemoryHub>() shared by the buses of one cluster");
  }
  if (options.delivery_queue_capacity == 0) {
    throw configuration_error(
        "syncbus: InMemoryBusOptions::delivery_queue_capacity is 0; it must hold at least one "
        "message");
  }
  if (options.queue_full_policy == QueueFullPolicy::drop_and_reread) {
    throw configuration_error(
        "syncbus: InMemoryBusOptions::queue_full_policy is drop_and_reread, but an in-memory bus "
        "keeps no spill table to re-read from; use drop_and_report_gap (or automatic)");
  }
  auto self = std::make_unique<impl>();
  self->hub = std::move(hub);
  self->member = std::make_shared<Member>();
  self->member->origin = detail::new_instance_id(options.instance_id);
  auto counted_errors = detail::counting_errors(self->stats, std::move(options.on_error));
  self->member->queue = std::make_shared<detail::DeliveryQueue>(
      std::move(counted_errors), std::move(options.on_gap), self->stats,
      detail::DeliveryQueue::Capacity{options.delivery_queue_capacity},
      QueueFullPolicy::drop_and_report_gap);
  {
    std::lock_guard<std::mutex> lock(self->hub_state().mutex);
    self->hub_state().members.push_back(self->member);
  }
  impl_ = std::move(self);
}

InMemoryClusterBus::~InMemoryClusterBus() { close(); }

const std::string& InMemoryClusterBus::instance_id() const { return impl_->member->origin; }

const std::shared_ptr<InMemoryHub>& InMemoryClusterBus::hub() const noexcept { return impl_->hub; }

BusStats InMemoryClusterBus::stats() const { return impl_->stats->snapshot(); }

void InMemoryClusterBus::publish(const nlohmann::json& body) {
  auto& hub_state = impl_->hub_state();
  std::lock_guard<std::mutex> lock(hub_state.mutex);
  if (impl_->closed) {
    throw closed_error(
        "syncbus: publish() on an InMemoryClusterBus that was closed; create a new bus");
  }
  auto& member = *impl_->member;
  hub_state.fan_out(ClusterMessage{member.origin, ++member.last_sequence, body, {}});
  detail::StatsCounters::add(impl_->stats->published);
}

Subscription InMemoryClusterBus::subscribe(MessageHandler handler) {
  {
    std::lock_guard<std::mutex> lock(impl_->hub_state().mutex);
    if (impl_->closed) {
      throw closed_error(
          "syncbus: subscribe() on an InMemoryClusterBus that was closed; create a new bus");
    }
  }
  return impl_->member->queue->subscribe(std::move(handler));
}

void InMemoryClusterBus::close() {
  {
    auto& hub_state = impl_->hub_state();
    std::lock_guard<std::mutex> lock(hub_state.mutex);
    if (impl_->closed) return;
    impl_->closed = true;
    auto& members = hub_state.members;
    members.erase(std::remove(members.begin(), members.end(), impl_->member), members.end());
    // Goodbye, as a closing PostgresClusterBus says it: the others forget
    // this origin (after checking that they had all of it).
    if (impl_->member->last_sequence > 0) {
      for (const auto& receiver : members) {
        if (receiver->disconnected) continue;
        receiver->queue->post(
            detail::Inbound{detail::Inbound::Kind::goodbye,
                            {impl_->member->origin, impl_->member->last_sequence, {}, {}}});
      }
    }
  }
  impl_->member->queue->stop();
}

void InMemoryClusterBus::drop_next_deliveries(std::size_t count) {
  std::lock_guard<std::mutex> lock(impl_->hub_state().mutex);
  impl_->member->drop_next += count;
}

void InMemoryClusterBus::duplicate_next_deliveries(std::size_t count) {
  std::lock_guard<std::mutex> lock(impl_->hub_state().mutex);
  impl_->member->duplicate_next += count;
}

void InMemoryClusterBus::disconnect() {
  std::lock_guard<std::mutex> lock(impl_->hub_state().mutex);
  impl_->member->disconnected = true;
}

void InMemoryClusterBus::reconnect() {
  std::lock_guard<std::mutex> lock(impl_->hub_state().mutex);
  if (!impl_->member->disconnected) return;
  impl_->member->disconnected = false;
  detail::StatsCounters::add(impl_->stats->reconnects);
  impl_->member->queue->post(detail::Inbound{detail::Inbound::Kind::connection_reset, {}});
}

}  // namespace syncbus
