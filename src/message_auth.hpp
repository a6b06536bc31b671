#pragma once
// Message authentication (PostgresBusOptions::secrets): HMAC-SHA256, computed
// by OpenSSL's libcrypto, over every envelope and every spilled body.
//
// PostgreSQL channels have no privileges: any role that can connect can
// NOTIFY on the bus. With shared secrets, a receiver drops anything not
// signed with one of them before it reaches the sequence check, so a forged
// envelope can neither be delivered nor make a genuine one look like a
// duplicate. Keys rotate: sign with the first, accept any of them.
//
// Wire format (docs/PROTOCOL.md): a signed envelope ends with
// `,"mac":"<64 hex digits>"}`; the MAC covers "syncbus-envelope", NUL, the
// channel, NUL, and the envelope's bytes before `,"mac":`. A spilled body's
// MAC (column `mac`) covers "syncbus-row-2", NUL, channel, NUL, origin, NUL,
// the sequence in decimal, NUL, born in decimal, NUL, sent in decimal, NUL,
// and the body's bytes; a row written by syncbus 0.1 (no born, no sent) was
// signed "syncbus-row", NUL, channel, NUL, origin, NUL, sequence, NUL, body.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace syncbus::detail {

class MessageAuth {
 public:
  /// Bytes a signature adds to an envelope: `,"mac":"` + 64 + `"`.
  static constexpr std::size_t envelope_overhead = 73;
  /// The shortest key accepted.
  static constexpr std::size_t min_key_bytes = 16;

  /// No keys: authentication is off (sign_envelope returns its input,
  /// verify_envelope accepts anything). Throws configuration_error for a key
  /// shorter than min_key_bytes (without showing it).
  explicit MessageAuth(std::vector<std::string> keys);

  bool enabled() const noexcept { return !keys_.empty(); }

  /// `envelope` (a JSON object's text) with the MAC field appended, under the
  /// first key.
  std::string sign_envelope(std::string_view channel, std::string_view envelope) const;

  /// The envelope within `payload` when its MAC verifies under one of the
  /// keys (written to `unsigned_envelope`); throws protocol_error saying
  /// whether it was unsigned or wrongly signed. With authentication off,
  /// returns `payload` unchanged.
  std::string_view verify_envelope(std::string_view channel, std::string_view payload,
                                   std::string& unsigned_envelope) const;

  /// What a row records besides its key and body, which its MAC covers
  /// too: the origin's birth transaction, and when the row was signed.
  struct RowStamp {
    std::uint64_t born = 0;
    std::uint64_t sent_ms = 0;
  };

  /// What a row's MAC covers. Without `stamp`: as syncbus 0.1 signed rows.
  struct SignedRow {
    std::string_view channel;
    std::string_view origin;
    std::uint64_t sequence = 0;
    std::optional<RowStamp> stamp;
    std::string_view body;  // JSON text
  };

  /// The MAC of a spilled body, as 64 lowercase hex digits, under the first
  /// key.
  std::string row_mac(const SignedRow& row) const;

  /// True when `mac` is a row MAC of this row under one of the keys.
  bool row_mac_valid(const SignedRow& row, std::string_view mac) const;

 private:
  std::vector<std::string> keys_;
};

}  // namespace syncbus::detail
