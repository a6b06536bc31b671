#pragma once
/// \file in_memory_bus.hpp
/// An in-process ClusterBus: for single-process apps, and for engine unit
/// tests that simulate a cluster of several instances without a database.

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include <syncbus/bus_stats.hpp>
#include <syncbus/cluster_bus.hpp>
#include <syncbus/gap_event.hpp>
#include <syncbus/queue_policy.hpp>

namespace syncbus {

class InMemoryClusterBus;

/// The shared "server" of an in-process cluster. Every InMemoryClusterBus
/// built with the same hub hears every other one, like PostgresClusterBus
/// instances on one channel. Create it with std::make_shared.
/// Thread-safe: all members may be called from any thread.
class SYNCBUS_API InMemoryHub {
 public:
  /// Messages the hub keeps for subscribe_from() by default.
  static constexpr std::size_t default_log_capacity = 100'000;

  /// `log_capacity`: how many of the latest messages the hub keeps, so that
  /// a bus can resume a subscription from a position (ClusterMessage::
  /// position) that far back: the in-process stand-in for the spill table
  /// and its vacuum. Older positions raise position_expired.
  explicit InMemoryHub(std::size_t log_capacity = default_log_capacity);
  ~InMemoryHub();
  InMemoryHub(const InMemoryHub&) = delete;
  InMemoryHub& operator=(const InMemoryHub&) = delete;

  /// Blocks until every message published on this hub so far has been handed
  /// to the handlers of every open bus (and those handlers returned), or until
  /// `timeout` passes. Returns false on timeout. Do not call from a handler.
  /// Tests use it instead of sleeping.
  bool wait_idle(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  /// Number of open buses on this hub.
  std::size_t bus_count() const;

  /// Sends every open bus a heartbeat from every bus that has published (its
  /// last sequence number), as a PostgresClusterBus does when idle: a bus
  /// that lost the last messages of a burst then reports the gap.
  void send_heartbeats();

 private:
  friend class InMemoryClusterBus;
  struct state;
  std::shared_ptr<state> state_;
};

/// Options of an InMemoryClusterBus; every field has a usable default.
struct InMemoryBusOptions {
  /// A readable name for the bus; instance_id() is this name followed by '.'
  /// and 8 random hex digits (see PostgresBusOptions::instance_id). Empty: 14
  /// random hex digits.
  std::string instance_id;
  /// Receives exceptions thrown by handlers (called on the delivery thread).
  /// Empty: they are swallowed after delivery continues.
  std::function<void(const std::exception&)> on_error;
  /// Receives gap events (see GapEvent), on the delivery thread.
  GapHandler on_gap;
  /// Messages the delivery queue holds while handlers are busy (at least 1;
  /// counted in messages only, as bodies here are never serialised, unlike
  /// PostgresBusOptions::delivery_queue_bytes), and what happens when it is
  /// full (an in-memory bus keeps no table to re-read from: automatic means
  /// drop_and_report_gap, and drop_and_reread is refused).
  std::size_t delivery_queue_capacity = default_delivery_queue_capacity;
  QueueFullPolicy queue_full_policy = QueueFullPolicy::automatic;
};

/// ClusterBus over an InMemoryHub, with the same delivery semantics as
/// PostgresClusterBus: publish() returns once the message is in the hub; each
/// bus delivers on its own delivery thread, in publish order per origin, to
/// its own subscribers too; duplicates are dropped and gaps reported. Messages
/// have no size limit.
///
/// Faults can be simulated, so that an engine can test its gap handling
/// without PostgreSQL: lost and duplicated deliveries, and a disconnection.
///
/// Thread-safe as described in ClusterBus; the fault and stats calls may also
/// be made from any thread.
class SYNCBUS_API InMemoryClusterBus final : public ClusterBus {
 public:
  /// A cluster of one: a bus with a hub of its own.
  InMemoryClusterBus();
  /// A bus joining `hub`'s cluster. Throws configuration_error for a null hub.
  explicit InMemoryClusterBus(std::shared_ptr<InMemoryHub> hub, InMemoryBusOptions options = {});
  ~InMemoryClusterBus() override;

  const std::string& instance_id() const override;
  using ClusterBus::publish;  // and the refusal of text (ClusterBus)
  void publish(const nlohmann::json& body) override;
  [[nodiscard]] Subscription subscribe(MessageHandler handler) override;
  /// See ClusterBus::subscribe_from: from a position that a bus of the same
  /// hub gave (every message carries one here), the messages after it that
  /// the hub still keeps (InMemoryHub's log_capacity), then live ones.
  [[nodiscard]] Subscription subscribe_from(std::string_view position,
                                            MessageHandler handler) override;
  void close() override;

  /// The hub this bus belongs to.
  const std::shared_ptr<InMemoryHub>& hub() const noexcept;

  /// This bus's counters.
  BusStats stats() const;

  /// Fault: the next `count` messages on their way to this bus are lost.
  void drop_next_deliveries(std::size_t count = 1);
  /// Fault: the next `count` messages reach this bus twice (the bus must
  /// deliver each once: the copies show up in stats().duplicates_dropped).
  void duplicate_next_deliveries(std::size_t count = 1);
  /// Fault: this bus hears nothing until reconnect(); it may still publish.
  void disconnect();
  /// Ends disconnect(). Like a PostgreSQL listener that reconnected, the bus
  /// reports a gap of unknown range, then hears messages again.
  void reconnect();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace syncbus
