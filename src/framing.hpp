#pragma once
// Framing: what one statement of the publisher sends for a batch of bodies.
// Pure functions (no connection, clock or lock), in two steps, because the
// second one is done again when a batch is retried on a new session:
//
//   plan_batch   numbers the messages and routes each one (inline, or the
//                spill table), or refuses it (too large for
//                SpillMode::never: it then uses no sequence number);
//   frame_batch  packs consecutive inline messages into batch envelopes
//                under the NOTIFY payload limit, gives consecutive spilled
//                ones one range pointer, and signs both and the rows.
//
// (And frame_heartbeat, for the heartbeats and the goodbye.)
//
// Routes are chosen with the widest header a sender can write (its process
// id and time at their longest), so a message that fit inline still fits
// when framed again for another session. Unit-tested at the byte boundaries
// (test_framing.cpp) and fuzzed (fuzz/framing_fuzzer.cpp).

#include <syncbus/spill_mode.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "envelope.hpp"
#include "failure.hpp"
#include "message_auth.hpp"

namespace syncbus::detail {

enum class Route { inline_payload, spill_table };

/// The route of a message whose inline envelope is `inline_envelope_bytes`
/// bytes (its signature included, when signed). PostgreSQL rejects payloads
/// of notify_payload_limit bytes or more. Throws payload_too_large under
/// SpillMode::never when the envelope does not fit.
Route choose_route(SpillMode mode, std::size_t inline_envelope_bytes);

/// Who sends: everything of an envelope's header but the sequence, and the
/// keys that sign (authentication off: nothing is signed, and `pid` is not
/// written).
struct Sender {
  std::string_view channel;
  std::string_view origin;
  std::uint64_t born = 0;
  const MessageAuth& auth;
  /// The sending session's server process (pg_backend_pid()), when signing.
  std::uint64_t pid = 0;
  /// When the envelopes are sent (and signed, when signing): the server's
  /// clock, in ms since the epoch, as this process estimates it (0: not
  /// known yet, not written).
  std::uint64_t sent_ms = 0;

  EnvelopeHeader header(std::uint64_t sequence) const;
  /// header(sequence) with the widest process id and time any session
  /// could write.
  EnvelopeHeader widest_header(std::uint64_t sequence) const;
  /// `envelope` signed, when signing.
  std::string sign(std::string envelope) const;
  /// Bytes a signature adds to an envelope (0 when not signing).
  std::size_t signature_bytes() const noexcept;
};

/// A batch's messages, numbered and routed.
struct BatchPlan {
  struct Message {
    std::size_t index;  // in the bodies given to plan_batch
    std::uint64_t sequence;
    Route route;
  };
  struct Refusal {
    std::size_t index;
    Failure failure;
  };
  /// In order, numbered consecutively from the last sequence + 1.
  std::vector<Message> accepted;
  std::vector<Refusal> refused;
  /// The origin's last sequence number once these are sent.
  std::uint64_t last_sequence = 0;
};

/// Numbers and routes `bodies_json` (serialised bodies, in publish order),
/// sent by `sender` after `last_sequence` under `mode`.
BatchPlan plan_batch(const Sender& sender, SpillMode mode, std::uint64_t last_sequence,
                     const std::vector<std::string_view>& bodies_json);

/// What one statement sends: the NOTIFY payloads, in order, and the rows to
/// insert into the spill table first (their bodies are views of the
/// caller's).
struct Frames {
  std::vector<std::string> payloads;
  std::vector<std::uint64_t> spilled_sequences;
  std::vector<std::string_view> spilled_bodies;
  /// Each spilled row's MAC, when signing.
  std::vector<std::string> spilled_macs;
};

/// Frames `plan.accepted` (their bodies in `bodies_json`, as given to
/// plan_batch) for `sender`. Every payload is under notify_payload_limit.
Frames frame_batch(const Sender& sender, const BatchPlan& plan,
                   const std::vector<std::string_view>& bodies_json);

/// The heartbeat of `sender`, whose last sequence number is
/// `last_sequence` (with `goodbye`: its last word), signed when signing.
std::string frame_heartbeat(const Sender& sender, std::uint64_t last_sequence,
                            bool goodbye = false);

}  // namespace syncbus::detail
