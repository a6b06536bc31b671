#pragma once
// The envelope: what travels in a NOTIFY payload (docs/PROTOCOL.md).
// Pure functions, no I/O: easy to unit-test and to fuzz.
//
//   inline:    {"v":1,"origin":"a1","seq":7,"body":<JSON>}
//   pointer:   {"v":1,"origin":"a1","seq":7,"spilled":true}
//   heartbeat: {"v":1,"origin":"a1","seq":7,"heartbeat":true}  (7: last sent)
//
// A pointer names the spill row by (channel, origin, seq), the row's unique
// key, so a receiver can only ever follow it into its own channel's rows.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace syncbus::detail {

inline constexpr int protocol_version = 1;

/// Serialises a message body to compact JSON text. With `ascii_only`, every
/// non-ASCII character is written as a \u escape (for databases whose
/// encoding is neither UTF8 nor SQL_ASCII). Throws invalid_message for a body
/// that is not valid UTF-8.
std::string serialize_body(const nlohmann::json& body, bool ascii_only);

/// The inline envelope around an already serialised body.
std::string encode_inline(std::string_view origin, std::uint64_t sequence,
                          std::string_view body_json);

/// The envelope that points at a spill row.
std::string encode_spill_pointer(std::string_view origin, std::uint64_t sequence);

/// A heartbeat: `sequence` is the origin's last published sequence number.
std::string encode_heartbeat(std::string_view origin, std::uint64_t last_sequence);

/// A decoded envelope.
struct Envelope {
  enum class Kind { inline_body, spill_pointer, heartbeat };
  Kind kind = Kind::inline_body;
  std::string origin;
  std::uint64_t sequence = 0;
  /// The body when kind is inline_body.
  nlohmann::json body;
  bool spilled() const noexcept { return kind == Kind::spill_pointer; }
};

/// Decodes a NOTIFY payload. Throws protocol_error, naming what is wrong, for
/// anything that is not a valid version-1 envelope.
Envelope decode_envelope(std::string_view payload);

/// Parses a spilled body's JSON text. Throws protocol_error when invalid.
nlohmann::json parse_body(std::string_view body_json);

}  // namespace syncbus::detail
