#pragma once
/// \file spill_mode.hpp
/// How a PostgresClusterBus carries messages that do not fit in a NOTIFY
/// payload, and PostgreSQL's limit on that payload.

#include <cstddef>

namespace syncbus {

/// PostgreSQL rejects NOTIFY payloads of this many bytes or more.
inline constexpr std::size_t notify_payload_limit = 8000;

/// How messages that do not fit in a NOTIFY payload are handled.
enum class SpillMode {
  /// Inline when the envelope is under the payload limit, else the message
  /// goes into the spill table and the NOTIFY carries only a pointer.
  overflow,
  /// Every message goes through the spill table (durable in the database).
  always,
  /// Never use the table: publish() throws payload_too_large for a message
  /// whose envelope does not fit, and sends nothing.
  never,
};

}  // namespace syncbus
