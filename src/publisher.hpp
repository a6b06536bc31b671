#pragma once
// The publishing side of a PostgresClusterBus: one connection, one statement
// per message, serialised by a mutex so that sequence order is commit order.

#include <syncbus/postgres_bus.hpp>

#include <pqxx/connection>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "pg_session.hpp"
#include "spill_store.hpp"

namespace syncbus::detail {

class Publisher {
 public:
  /// Takes a connection on which `store` may be used; prepares statements.
  Publisher(std::unique_ptr<Session> session, const SpillStore& store, std::string channel,
            std::string origin, SpillMode mode);

  /// Sends one message; returns once it is committed. Throws payload_too_large
  /// (SpillMode::never), invalid_message, connection_error or database_error.
  void publish(const nlohmann::json& body);

  std::int64_t vacuum(std::chrono::milliseconds older_than);

  /// Closes the connection; later calls throw closed_error.
  void close() noexcept;

 private:
  std::mutex mutex_;
  std::unique_ptr<Session> session_;
  const SpillStore& store_;
  std::string channel_;
  std::string origin_;
  SpillMode mode_;
  bool ascii_only_ = false;
  // Never reused, even after a failed publish: a failure at COMMIT leaves the
  // outcome unknown, and reusing the number could make receivers drop the
  // next message as a duplicate. A failure shows up as a gap instead.
  std::uint64_t last_sequence_ = 0;
};

}  // namespace syncbus::detail
