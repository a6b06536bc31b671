#pragma once
// The envelope: what travels in a NOTIFY payload (docs/PROTOCOL.md).
// Pure functions, no I/O: easy to unit-test and to fuzz.
//
//   inline:    {"v":1,"origin":"a1","seq":7,"body":<JSON>}
//   batch:     {"v":1,"origin":"a1","seq":7,"bodies":[<JSON>,<JSON>]}  (7, 8)
//   pointer:   {"v":1,"origin":"a1","seq":7,"spilled":true}
//   range:     {"v":1,"origin":"a1","seq":7,"spilled":true,"count":3}  (7..9)
//   heartbeat: {"v":1,"origin":"a1","seq":7,"heartbeat":true}  (7: last sent)
//   goodbye:   {"v":1,"origin":"a1","seq":7,"heartbeat":true,"goodbye":true}
//
// After "seq", a bus writes "born" (the transaction id of its birth, so that
// a receiver tells an origin born after it from an older one), when it
// signs "pid" (the server process of the session that sends it), and
// "sent" (milliseconds since the Unix epoch by the server's clock: for
// BusStats::delivery_lag, and when signed, with "pid", what binds the
// signature to one session and one moment; docs/SECURITY.md, replays):
//
//   {"v":1,"origin":"a1","seq":7,"born":7412,"sent":1764433659123,"body":1}
//   {"v":1,"origin":"a1","seq":7,"born":7412,"pid":4242,"sent":1764433659123,"body":1}
//
// A pointer names spill rows by (channel, origin, seq), the rows' unique
// key, so a receiver can only ever follow it into its own channel's rows.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <syncbus/spill_mode.hpp>

namespace syncbus::detail {

inline constexpr int protocol_version = 1;

/// The deepest nesting of arrays and objects a message body may have. JSON
/// parsers and printers often recurse per level: a peer must not be able to
/// hand an engine a body that overflows its stack when printed.
inline constexpr std::size_t max_body_depth = 256;

/// True when `json_text` nests arrays and objects deeper than `max_depth`
/// (a byte scan, no parsing; the text need not be valid JSON).
bool nesting_exceeds(std::string_view json_text, std::size_t max_depth) noexcept;

/// Serialises a message body to compact JSON text. With `ascii_only`, every
/// non-ASCII character is written as a \u escape (for databases whose
/// encoding is neither UTF8 nor SQL_ASCII). Throws invalid_message for a body
/// that is not valid UTF-8 or nests deeper than max_body_depth.
std::string serialize_body(const nlohmann::json& body, bool ascii_only);

/// What every envelope begins with. `born`, `pid` and `sent_ms` are
/// written only when not 0.
struct EnvelopeHeader {
  std::string_view origin;
  std::uint64_t sequence = 0;
  std::uint64_t born = 0;
  std::uint64_t pid = 0;
  std::uint64_t sent_ms = 0;
};

/// The inline envelope around an already serialised body.
std::string encode_inline(const EnvelopeHeader& header, std::string_view body_json);
inline std::string encode_inline(std::string_view origin, std::uint64_t sequence,
                                 std::string_view body_json) {
  return encode_inline(EnvelopeHeader{origin, sequence}, body_json);
}

/// The most messages one envelope may carry (a batch, or a range of spill
/// rows); the publisher's batches stay well below it.
inline constexpr std::uint64_t max_messages_per_envelope = 10000;

/// The envelope that points at the spill rows of `sequence` ..
/// `sequence + count - 1`.
std::string encode_spill_pointer(const EnvelopeHeader& header, std::uint64_t count = 1);
inline std::string encode_spill_pointer(std::string_view origin, std::uint64_t sequence,
                                        std::uint64_t count = 1) {
  return encode_spill_pointer(EnvelopeHeader{origin, sequence}, count);
}

/// Several consecutive messages in one envelope (the single-message form when
/// there is one).
std::string encode_batch(const EnvelopeHeader& header,
                         const std::vector<std::string_view>& bodies_json);
inline std::string encode_batch(std::string_view origin, std::uint64_t first_sequence,
                                const std::vector<std::string_view>& bodies_json) {
  return encode_batch(EnvelopeHeader{origin, first_sequence}, bodies_json);
}

/// The size of encode_inline()'s envelope, without building it.
std::size_t inline_envelope_size(const EnvelopeHeader& header, std::size_t body_size);
inline std::size_t inline_envelope_size(std::string_view origin, std::uint64_t sequence,
                                        std::size_t body_size) {
  return inline_envelope_size(EnvelopeHeader{origin, sequence}, body_size);
}

/// The size encode_batch() gives `count` (at least 2) bodies totalling
/// `bodies_size` bytes, without building it.
std::size_t batch_envelope_size(const EnvelopeHeader& header, std::size_t count,
                                std::size_t bodies_size);

/// A heartbeat: the header's sequence is the origin's last published
/// sequence number. With `goodbye`, the origin has closed.
std::string encode_heartbeat(const EnvelopeHeader& header, bool goodbye = false);
inline std::string encode_heartbeat(std::string_view origin, std::uint64_t last_sequence) {
  return encode_heartbeat(EnvelopeHeader{origin, last_sequence});
}

/// A decoded envelope: the messages `sequence` .. `sequence + count - 1` of
/// `origin` (a heartbeat: `sequence` is the last one published).
struct Envelope {
  enum class Kind { inline_body, spill_pointer, heartbeat };
  Kind kind = Kind::inline_body;
  std::string origin;
  std::uint64_t sequence = 0;
  std::uint64_t count = 1;
  /// The bodies, in sequence order, when kind is inline_body.
  std::vector<nlohmann::json> bodies;
  /// The origin's birth transaction ("born"), when given.
  std::optional<std::uint64_t> born;
  /// The server process of the session that sent it ("pid").
  std::optional<std::uint64_t> pid;
  /// When it was signed ("sent", ms since the epoch by the server's clock).
  std::optional<std::uint64_t> sent_ms;
  /// A heartbeat from an origin that has closed.
  bool goodbye = false;
  bool spilled() const noexcept { return kind == Kind::spill_pointer; }
};

/// Decodes a NOTIFY payload. Throws protocol_error, naming what is wrong, for
/// anything that is not a valid version-1 envelope: payloads of
/// notify_payload_limit bytes or more and nesting deeper than max_body_depth
/// are rejected before parsing. Never crashes, hangs or allocates beyond a
/// small multiple of the payload's size, whatever the input (fuzzed by
/// fuzz/envelope_fuzzer.cpp). When the origin is `skip_bodies_of`, the
/// bodies are checked as JSON but not built (`bodies` stays empty).
Envelope decode_envelope(std::string_view payload, std::string_view skip_bodies_of = {});

/// Parses a spilled body's JSON text. Throws protocol_error when invalid,
/// larger than `max_bytes`, or nested deeper than max_body_depth.
nlohmann::json parse_body(std::string_view body_json, std::size_t max_bytes);

}  // namespace syncbus::detail
