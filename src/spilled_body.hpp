#pragma once
// A spilled message's body as a receiver accepts it: within the size cap,
// carrying a valid signature when messages are signed, and valid JSON
// nested no deeper than a body may be. Shared by the bus's listener and the
// `syncbus tail` command.

#include <nlohmann/json.hpp>

#include <string_view>

#include "message_auth.hpp"
#include "spill_store.hpp"

namespace syncbus::detail {

/// The parsed body of `row`, read on `channel`. Throws protocol_error
/// saying why it is refused: over `max_bytes` (and so not even loaded), an
/// absent or wrong signature (when `auth` is enabled), or not JSON.
nlohmann::json accept_spilled_body(const SpillStore::StoredMessage& row, const MessageAuth& auth,
                                   std::string_view channel, std::size_t max_bytes);

}  // namespace syncbus::detail
