#include "spill_decision.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

namespace syncbus::detail {

Route choose_route(SpillMode mode, std::size_t inline_envelope_bytes) {
  constexpr std::size_t limit = PostgresClusterBus::notify_payload_limit;
  const bool fits = inline_envelope_bytes < limit;
  switch (mode) {
    case SpillMode::always:
      return Route::spill_table;
    case SpillMode::overflow:
      return fits ? Route::inline_payload : Route::spill_table;
    case SpillMode::never:
      if (fits) return Route::inline_payload;
      throw payload_too_large(fmt::format("syncbus: message envelope is {} bytes; a NOTIFY payload "
                                          "must be under {} bytes and this bus uses "
                                          "SpillMode::never. Send a smaller body, or use "
                                          "SpillMode::overflow to carry large messages through "
                                          "the spill table; nothing was sent",
                                          inline_envelope_bytes, limit),
                              inline_envelope_bytes, limit);
  }
  throw configuration_error(
      fmt::format("syncbus: unknown SpillMode value {}", static_cast<int>(mode)));
}

}  // namespace syncbus::detail
