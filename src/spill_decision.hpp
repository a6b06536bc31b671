#pragma once
// Where a message goes: inline in the NOTIFY payload, or through the spill
// table. A pure function of the mode and the envelope's size in bytes.

#include <syncbus/postgres_bus.hpp>

#include <cstddef>

namespace syncbus::detail {

enum class Route { inline_payload, spill_table };

/// Chooses the route for an inline envelope of `inline_envelope_bytes` bytes
/// (its signature included, when messages are signed).
/// PostgreSQL rejects payloads of PostgresClusterBus::notify_payload_limit
/// bytes or more. Throws payload_too_large under SpillMode::never when the
/// envelope does not fit.
Route choose_route(SpillMode mode, std::size_t inline_envelope_bytes);

}  // namespace syncbus::detail
