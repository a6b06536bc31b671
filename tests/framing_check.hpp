#pragma once
// What framing (src/framing.hpp) must do, checked from outside by decoding
// what it produced: shared by the unit tests (test_framing.cpp) and the
// fuzzer (fuzz/framing_fuzzer.cpp). check_framing() returns what is wrong,
// or an empty string.

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "envelope.hpp"
#include "framing.hpp"
#include "message_auth.hpp"

namespace syncbus::detail::testing {

inline std::string check_framing(const Sender& sender, SpillMode mode, std::uint64_t last_sequence,
                                 const std::vector<std::string_view>& bodies, const BatchPlan& plan,
                                 const Frames& frames) {
  // Every body is accepted or refused, once, in order; the accepted ones
  // are numbered consecutively after last_sequence.
  std::size_t next_index = 0;
  std::size_t accepted = 0;
  std::size_t refused = 0;
  std::uint64_t sequence = last_sequence;
  while (next_index < bodies.size()) {
    const auto fits =
        inline_envelope_size(sender.widest_header(sequence + 1), bodies[next_index].size()) +
            sender.signature_bytes() <
        notify_payload_limit;
    if (accepted < plan.accepted.size() && plan.accepted[accepted].index == next_index) {
      const auto& message = plan.accepted[accepted];
      if (message.sequence != ++sequence) {
        return fmt::format("message {} numbered {}, expected {}", next_index, message.sequence,
                           sequence);
      }
      const auto expected = mode == SpillMode::always ? Route::spill_table
                            : fits                    ? Route::inline_payload
                                                      : Route::spill_table;
      if (message.route != expected) return fmt::format("message {} routed wrongly", next_index);
      if (mode == SpillMode::never && !fits) {
        return fmt::format("message {} does not fit but was accepted", next_index);
      }
      ++accepted;
    } else if (refused < plan.refused.size() && plan.refused[refused].index == next_index) {
      if (mode != SpillMode::never || fits) {
        return fmt::format("message {} refused needlessly", next_index);
      }
      try {
        plan.refused[refused].failure.raise();
      } catch (const payload_too_large&) {
      } catch (...) {
        return fmt::format("message {} refused with another error", next_index);
      }
      ++refused;
    } else {
      return fmt::format("message {} neither accepted nor refused, or out of order", next_index);
    }
    ++next_index;
  }
  if (accepted != plan.accepted.size() || refused != plan.refused.size()) {
    return "the plan has more messages than were given";
  }
  if (plan.last_sequence != sequence) {
    return fmt::format("last sequence {}, expected {}", plan.last_sequence, sequence);
  }

  // Decoding the payloads gives back exactly the accepted messages, in
  // order: inline ones with their bodies, spilled ones as ranges of rows.
  std::size_t at = 0;          // in plan.accepted
  std::size_t spilled_at = 0;  // in frames.spilled_*
  for (std::size_t p = 0; p < frames.payloads.size(); ++p) {
    const auto& payload = frames.payloads[p];
    if (payload.size() >= notify_payload_limit) {
      return fmt::format("payload {} is {} bytes, not under the limit", p, payload.size());
    }
    Envelope envelope;
    try {
      std::string unsigned_envelope;
      const auto text = sender.auth.verify_envelope(sender.channel, payload, unsigned_envelope);
      if (sender.auth.enabled() && text.size() + MessageAuth::envelope_overhead != payload.size()) {
        return fmt::format("payload {} is not signed", p);
      }
      envelope = decode_envelope(text);
    } catch (const std::exception& e) {
      return fmt::format("payload {} does not decode: {}", p, e.what());
    }
    if (envelope.origin != sender.origin || envelope.born.value_or(0) != sender.born ||
        envelope.pid.value_or(0) != (sender.auth.enabled() ? sender.pid : 0) ||
        envelope.sent_ms.value_or(0) != sender.sent_ms) {
      return fmt::format("payload {} has a wrong header", p);
    }
    if (envelope.kind == Envelope::Kind::heartbeat)
      return fmt::format("payload {} is a heartbeat", p);
    for (std::uint64_t k = 0; k < envelope.count; ++k, ++at) {
      if (at >= plan.accepted.size()) return fmt::format("payload {} carries extra messages", p);
      const auto& message = plan.accepted[at];
      if (envelope.sequence + k != message.sequence) {
        return fmt::format("payload {} carries #{} where #{} was due", p, envelope.sequence + k,
                           message.sequence);
      }
      const auto body = bodies[message.index];
      if (envelope.spilled()) {
        if (message.route != Route::spill_table)
          return fmt::format("#{} spilled", message.sequence);
        if (spilled_at >= frames.spilled_sequences.size() ||
            frames.spilled_sequences[spilled_at] != message.sequence ||
            frames.spilled_bodies[spilled_at] != body) {
          return fmt::format("#{} has no row of its own", message.sequence);
        }
        if (sender.auth.enabled() ? !sender.auth.row_mac_valid(
                                        {sender.channel, sender.origin, message.sequence,
                                         MessageAuth::RowStamp{sender.born, sender.sent_ms}, body},
                                        frames.spilled_macs.at(spilled_at))
                                  : !frames.spilled_macs.empty()) {
          return fmt::format("#{}'s row is signed wrongly", message.sequence);
        }
        ++spilled_at;
      } else {
        if (message.route != Route::inline_payload) {
          return fmt::format("#{} sent inline", message.sequence);
        }
        if (envelope.bodies.at(k) != nlohmann::json::parse(body)) {
          return fmt::format("#{}'s body changed", message.sequence);
        }
      }
    }
    // Packed as full as it can be: the next inline message would not fit.
    if (envelope.kind == Envelope::Kind::inline_body && at < plan.accepted.size() &&
        plan.accepted[at].route == Route::inline_payload) {
      const auto next = bodies[plan.accepted[at].index];
      std::size_t bodies_size = next.size();
      for (std::uint64_t k = 0; k < envelope.count; ++k) {
        bodies_size += bodies[plan.accepted[at - 1 - k].index].size();
      }
      if (batch_envelope_size(sender.header(envelope.sequence), envelope.count + 1, bodies_size) +
              sender.signature_bytes() <
          notify_payload_limit) {
        return fmt::format("payload {} stopped before #{}, which would have fit", p,
                           plan.accepted[at].sequence);
      }
    }
  }
  if (at != plan.accepted.size()) return "some accepted messages are in no payload";
  if (spilled_at != frames.spilled_sequences.size() ||
      frames.spilled_bodies.size() != frames.spilled_sequences.size()) {
    return "rows that no pointer covers";
  }
  return {};
}

}  // namespace syncbus::detail::testing
