#pragma once
/// \file postgres_bus.hpp
/// The production ClusterBus: PostgreSQL LISTEN/NOTIFY carries the messages,
/// a spill table carries those too large for a NOTIFY payload.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <syncbus/bus_stats.hpp>
#include <syncbus/cluster_bus.hpp>
#include <syncbus/postgres_bus_options.hpp>
#include <syncbus/spill_mode.hpp>

namespace syncbus {

/// ClusterBus over PostgreSQL LISTEN/NOTIFY.
///
/// The constructor connects twice: one connection publishes (pg_notify, with
/// group commit: messages published while a transaction is in flight share
/// the next one, packed into batch envelopes), and a listener thread owns a
/// second connection that LISTENs on the channel; messages go from it, through
/// a bounded queue, to a delivery thread that runs the handlers (while idle,
/// the delivery thread waits on the listener's socket and reads it itself,
/// which saves a thread wake-up per message at low load). A timer
/// thread sends heartbeats and watches the NOTIFY queue, and a deadline thread
/// enforces the client-side timeouts; publish_async() starts one more thread,
/// which sends for its callers. Construction returns once the bus is
/// listening, so it hears every message committed after that. The destructor
/// (or close()) stops and joins all of them.
///
/// Thread safety: as ClusterBus; vacuum() may also be called from any thread.
class SYNCBUS_API PostgresClusterBus final : public ClusterBus {
 public:
  /// PostgreSQL rejects NOTIFY payloads of this many bytes or more (the same
  /// as syncbus::notify_payload_limit).
  static constexpr std::size_t notify_payload_limit = syncbus::notify_payload_limit;

  /// Connects, creates the spill table if needed and starts listening.
  /// Throws configuration_error for invalid options, connection_error when the
  /// server cannot be reached, database_error when setup statements fail.
  explicit PostgresClusterBus(PostgresBusOptions options);
  ~PostgresClusterBus() override;

  const std::string& instance_id() const override;
  using ClusterBus::publish;  // and the refusal of text (ClusterBus)
  using ClusterBus::publish_async;
  void publish(const nlohmann::json& body) override;
  /// Queues `body` and returns at once. The future becomes ready once the
  /// message is committed, or holds the error publish() would have thrown
  /// (refusals included). Messages keep the order of the calls.
  /// Waits only when the publish queue is full (PostgresBusOptions::
  /// publish_queue_bytes).
  [[nodiscard]] std::future<void> publish_async(const nlohmann::json& body) override;
  [[nodiscard]] Subscription subscribe(MessageHandler handler) override;
  /// See ClusterBus::subscribe_from. In SpillMode::always, on any bus of the
  /// channel: the messages the position leaves out are read from the spill
  /// table, on a connection of the bus's own (one, whatever the number of
  /// subscriptions resuming: they take turns), while live ones wait for the
  /// seam; docs/PROTOCOL.md, "Resuming from a position". Checking the
  /// position borrows the publishing connection for a round trip, and waits
  /// at most 100 ms for a lock on the removal log; past that, the read makes
  /// the check (an expired position is then reported to on_error, as
  /// position_expired). Refused
  /// (configuration_error) in overflow and never, and when the table has no
  /// removal log (a table made by syncbus 0.2, whose bus role may not add
  /// it: the error gives the SQL).
  [[nodiscard]] Subscription subscribe_from(std::string_view position,
                                            MessageHandler handler) override;
  void close() override;

  /// Deletes this channel's spill rows older than `older_than` and returns how
  /// many it deleted (0 when no message ever spilled). Rows are not deleted
  /// on delivery because every bus on the channel reads them: schedule
  /// vacuum() with an age well above your listeners' worst lag. It deletes
  /// in batches of 10,000 rows, each its own transaction under query_timeout,
  /// between which the bus goes on publishing; if it throws part way, what
  /// it deleted stays deleted.
  /// Throws configuration_error for a negative age, closed_error after
  /// close().
  std::int64_t vacuum(std::chrono::milliseconds older_than);

  /// The channel this bus publishes and listens on.
  const std::string& channel() const noexcept;

  /// This bus's counters; cheap enough to poll.
  BusStats stats() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace syncbus
