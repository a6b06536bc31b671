#pragma once
/// \file in_memory_bus.hpp
/// An in-process ClusterBus: for single-process apps, and for engine unit
/// tests that simulate a cluster of several instances without a database.

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include <syncbus/cluster_bus.hpp>

namespace syncbus {

class InMemoryClusterBus;

/// The shared "server" of an in-process cluster. Every InMemoryClusterBus
/// built with the same hub hears every other one, like PostgresClusterBus
/// instances on one channel. Create it with std::make_shared.
/// Thread-safe: all members may be called from any thread.
class InMemoryHub {
 public:
  InMemoryHub();
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

 private:
  friend class InMemoryClusterBus;
  struct state;
  std::shared_ptr<state> state_;
};

/// Options of an InMemoryClusterBus; every field has a usable default.
struct InMemoryBusOptions {
  /// The bus's identity (ClusterMessage::origin). Empty: a random id.
  std::string instance_id;
  /// Receives exceptions thrown by handlers (called on the delivery thread).
  /// Empty: they are swallowed after delivery continues.
  std::function<void(const std::exception&)> on_error;
};

/// ClusterBus over an InMemoryHub, with the same delivery semantics as
/// PostgresClusterBus: publish() returns once the message is in the hub; each
/// bus delivers on its own delivery thread, in publish order per origin, to
/// its own subscribers too. Messages have no size limit.
/// Thread-safe as described in ClusterBus.
class InMemoryClusterBus final : public ClusterBus {
 public:
  /// A cluster of one: a bus with a hub of its own.
  InMemoryClusterBus();
  /// A bus joining `hub`'s cluster. Throws configuration_error for a null hub.
  explicit InMemoryClusterBus(std::shared_ptr<InMemoryHub> hub, InMemoryBusOptions options = {});
  ~InMemoryClusterBus() override;

  const std::string& instance_id() const override;
  void publish(const nlohmann::json& body) override;
  [[nodiscard]] Subscription subscribe(MessageHandler handler) override;
  void close() override;

  /// The hub this bus belongs to.
  const std::shared_ptr<InMemoryHub>& hub() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace syncbus
