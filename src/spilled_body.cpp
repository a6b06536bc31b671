#include "spilled_body.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include "envelope.hpp"

namespace syncbus::detail {

nlohmann::json accept_spilled_body(const SpillStore::StoredMessage& row, const MessageAuth& auth,
                                   std::string_view channel, std::size_t max_bytes) {
  if (row.too_large > 0) {
    throw protocol_error(
        fmt::format("its body is {} bytes, over this bus's limit of {} (PostgresBusOptions::"
                    "max_message_bytes); it was not loaded",
                    row.too_large, max_bytes));
  }
  // A row signed by syncbus 0.2 records both born and sent; one of 0.1,
  // neither. One without the other was not written by either.
  std::optional<MessageAuth::RowStamp> stamp;
  if (row.born && row.sent_ms) stamp = MessageAuth::RowStamp{*row.born, *row.sent_ms};
  if (auth.enabled() && row.born.has_value() != row.sent_ms.has_value()) {
    throw protocol_error("its row records only one of `born` and `sent` (tampered with)");
  }
  if (auth.enabled() &&
      !auth.row_mac_valid({channel, row.origin, row.sequence, stamp, row.body_json}, row.mac)) {
    throw protocol_error(
        row.mac.empty()
            ? "its row carries no signature (written by a bus without the secrets, or by hand)"
            : "its row's signature matches none of the secrets (forged or tampered with)");
  }
  return parse_body(row.body_json, max_bytes);
}

}  // namespace syncbus::detail
