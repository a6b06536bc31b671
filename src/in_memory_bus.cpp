#include <syncbus/errors.hpp>
#include <syncbus/in_memory_bus.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <vector>

#include "delivery_queue.hpp"
#include "error_sink.hpp"
#include "instance_id.hpp"
#include "position_token.hpp"
#include "resume.hpp"
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

// The hub numbers its messages 1, 2, 3, ... in the one order every bus
// sees: a message's number stands for the transaction id of a row, so that
// positions mean here what they mean on PostgreSQL, and the snapshot
// "n+1:n+1:" is everything up to n.
detail::Inbound message_item(const ClusterMessage& message, std::uint64_t number) {
  detail::Inbound item{detail::Inbound::Kind::message, message};
  item.sent_at = std::chrono::steady_clock::now();
  item.xid = number;
  return item;
}

// After message `number` (or, with 0, when a bus joins: after the last one
// so far), everything up to it has been sent on.
detail::Inbound mark_item(std::uint64_t next) {
  detail::Inbound mark{detail::Inbound::Kind::mark, {}};
  mark.mark = std::make_shared<detail::Inbound::Mark>();
  mark.mark->snapshot = detail::PgSnapshot::of(next, next, {});
  return mark;
}

struct LogEntry {
  ClusterMessage message;
  std::uint64_t number = 0;
};

}  // namespace

// The hub is the in-process stand-in for the database: it fans each message
// out to every bus's delivery queue under one lock, so every bus sees the same
// global order, as PostgreSQL delivers in commit order.
struct InMemoryHub::state {
  explicit state(std::size_t capacity)
      : log_capacity(capacity),
        key(detail::position_channel_key({"in-memory", detail::random_hex(16), "", ""})) {}

  mutable std::mutex mutex;
  std::vector<std::shared_ptr<Member>> members;
  // The latest messages, for subscribe_from(); what fell out of it, per
  // origin (the highest sequence) and in all (the highest number).
  const std::size_t log_capacity;
  std::deque<LogEntry> log;
  std::uint64_t next_number = 1;
  std::uint64_t dropped_through = 0;
  std::map<std::string, std::uint64_t> dropped_sequence;
  // Ties positions to this hub (position_token.hpp).
  const std::string key;

  void fan_out(const ClusterMessage& message) {
    const auto number = next_number++;
    log.push_back({message, number});
    if (log.size() > log_capacity) {
      const auto& oldest = log.front();
      dropped_through = oldest.number;
      auto& dropped = dropped_sequence[oldest.message.origin];
      dropped = std::max(dropped, oldest.message.sequence);
      log.pop_front();
    }
    for (const auto& member : members) {
      if (member->disconnected) continue;
      if (member->drop_next > 0) {
        --member->drop_next;
        member->queue->post(mark_item(number + 1));
        continue;
      }
      if (member->duplicate_next > 0) {
        --member->duplicate_next;
        member->queue->post(
            {message_item(message, number), message_item(message, number), mark_item(number + 1)});
        continue;
      }
      member->queue->post({message_item(message, number), mark_item(number + 1)});
    }
  }

  /// A message `position` leaves out that the log has dropped, if any.
  bool outran(const detail::DecodedPosition& position) const {
    for (const auto& [origin, sequence] : dropped_sequence) {
      const auto cursor = position.cursors.find(origin);
      if (cursor != position.cursors.end() && sequence > cursor->second) return true;
    }
    // Conservative for the others: any number dropped at or above the
    // snapshot's xmin may be one it leaves out.
    return dropped_through >= position.snapshot.xmin();
  }

  /// What `target` names and resume.from() does not, with their positions;
  /// none when `target` does not name all that from() does (the bus lags).
  std::optional<std::vector<ClusterMessage>> read(detail::Resume& resume,
                                                  const detail::DecodedPosition& target) const {
    auto& from = resume.from();
    std::vector<const LogEntry*> wanted;
    for (const auto& entry : log) {
      const auto& m = entry.message;
      const bool before = detail::names(from, m.origin, m.sequence, entry.number);
      const bool at_target = detail::names(target, m.origin, m.sequence, entry.number);
      if (before && !at_target) return std::nullopt;
      if (!before && at_target) wanted.push_back(&entry);
    }
    std::vector<ClusterMessage> out;
    out.reserve(wanted.size());
    for (const auto* entry : wanted) {
      from.cursors[entry->message.origin] = entry->message.sequence;
      out.push_back(entry->message);
      out.back().position = detail::encode_position(key, from.snapshot, from.cursors);
    }
    return out;
  }
};

InMemoryHub::InMemoryHub(std::size_t log_capacity)
    : state_(std::make_shared<state>(log_capacity)) {}
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
  detail::ErrorSink on_error;

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
  self->on_error = detail::counting_errors(self->stats, std::move(options.on_error));
  self->member->queue = std::make_shared<detail::DeliveryQueue>(
      self->on_error, std::move(options.on_gap), self->stats,
      detail::DeliveryQueue::Capacity{options.delivery_queue_capacity},
      QueueFullPolicy::drop_and_report_gap, /*forget_on_goodbye=*/true,
      std::function<void(const detail::Inbound&)>{}, self->hub_state().key);
  {
    std::lock_guard<std::mutex> lock(self->hub_state().mutex);
    // Its positions start here: what came before is not its to give.
    self->member->queue->post(mark_item(self->hub_state().next_number));
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

Subscription InMemoryClusterBus::subscribe_from(std::string_view position, MessageHandler handler) {
  if (!handler) {
    throw configuration_error(
        "syncbus: subscribe_from() was given an empty handler; pass a callable");
  }
  auto hub = impl_->hub->state_;
  auto from = detail::decode_position(hub->key, position);
  {
    std::lock_guard<std::mutex> lock(hub->mutex);
    if (impl_->closed) {
      throw closed_error(
          "syncbus: subscribe_from() on an InMemoryClusterBus that was closed; create a new bus");
    }
    if (hub->outran(from)) {
      throw position_expired(
          "syncbus: the position given to subscribe_from() has expired: the hub no longer keeps "
          "messages it leaves out (InMemoryHub's log_capacity). Give the client what it gets "
          "without a position (a fresh snapshot), or keep more",
          std::string(position));
    }
  }
  auto resume =
      std::make_shared<detail::Resume>(std::move(from), std::move(handler), std::string(position));
  resume->read_now =
      [hub, on_error = impl_->on_error](
          detail::Resume& r,
          const detail::DecodedPosition& target) -> std::optional<std::vector<ClusterMessage>> {
    std::lock_guard<std::mutex> lock(hub->mutex);
    if (hub->outran(r.from())) {
      // Overtaken between the check and the seam: said, and ended.
      detail::report(
          on_error, position_expired("syncbus: a position given to subscribe_from() expired before "
                                     "its messages could be read (InMemoryHub's log_capacity)",
                                     r.token));
      r.end();
      return std::vector<ClusterMessage>{};
    }
    return hub->read(r, target);
  };
  return impl_->member->queue->subscribe_resuming(resume);
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
