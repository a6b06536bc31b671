#include "framing.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <exception>
#include <limits>

namespace syncbus::detail {

Route choose_route(SpillMode mode, std::size_t inline_envelope_bytes) {
  constexpr std::size_t limit = notify_payload_limit;
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

EnvelopeHeader Sender::header(std::uint64_t sequence) const {
  return {origin, sequence, born, auth.enabled() ? pid : 0, sent_ms};
}

EnvelopeHeader Sender::widest_header(std::uint64_t sequence) const {
  auto widest = header(sequence);
  if (auth.enabled()) widest.pid = std::numeric_limits<std::uint32_t>::max();
  widest.sent_ms = 9'999'999'999'999;  // 13 digits: until the year 2286
  return widest;
}

std::string Sender::sign(std::string envelope) const {
  if (!auth.enabled()) return envelope;
  return auth.sign_envelope(channel, envelope);
}

std::size_t Sender::signature_bytes() const noexcept {
  return auth.enabled() ? MessageAuth::envelope_overhead : 0;
}

BatchPlan plan_batch(const Sender& sender, SpillMode mode, std::uint64_t last_sequence,
                     const std::vector<std::string_view>& bodies_json) {
  BatchPlan plan;
  plan.accepted.reserve(bodies_json.size());
  for (std::size_t i = 0; i < bodies_json.size(); ++i) {
    const auto sequence = last_sequence + 1;
    try {
      const auto route = choose_route(
          mode, inline_envelope_size(sender.widest_header(sequence), bodies_json[i].size()) +
                    sender.signature_bytes());
      plan.accepted.push_back({i, sequence, route});
      last_sequence = sequence;
    } catch (...) {
      plan.refused.push_back({i, Failure::of(std::current_exception())});
    }
  }
  plan.last_sequence = last_sequence;
  return plan;
}

Frames frame_batch(const Sender& sender, const BatchPlan& plan,
                   const std::vector<std::string_view>& bodies_json) {
  Frames frames;
  const auto& accepted = plan.accepted;
  const auto signature_bytes = sender.signature_bytes();
  const MessageAuth::RowStamp stamp{sender.born, sender.sent_ms};
  for (std::size_t first = 0; first < accepted.size();) {
    std::size_t end = first + 1;
    if (accepted[first].route == Route::spill_table) {
      // Consecutive spilled messages: rows, and one range pointer.
      while (end < accepted.size() && accepted[end].route == Route::spill_table) ++end;
      for (auto i = first; i < end; ++i) {
        const auto body = bodies_json[accepted[i].index];
        frames.spilled_sequences.push_back(accepted[i].sequence);
        frames.spilled_bodies.push_back(body);
        if (sender.auth.enabled()) {
          frames.spilled_macs.push_back(sender.auth.row_mac(
              {sender.channel, sender.origin, accepted[i].sequence, stamp, body}));
        }
      }
      frames.payloads.push_back(
          sender.sign(encode_spill_pointer(sender.header(accepted[first].sequence), end - first)));
    } else {
      // Consecutive inline messages: one envelope, up to the payload limit.
      const auto header = sender.header(accepted[first].sequence);
      std::vector<std::string_view> bodies{bodies_json[accepted[first].index]};
      std::size_t bodies_size = bodies.back().size();
      while (end < accepted.size() && accepted[end].route == Route::inline_payload) {
        const auto next = bodies_json[accepted[end].index];
        if (batch_envelope_size(header, bodies.size() + 1, bodies_size + next.size()) +
                signature_bytes >=
            notify_payload_limit) {
          break;
        }
        bodies.push_back(next);
        bodies_size += next.size();
        ++end;
      }
      frames.payloads.push_back(sender.sign(encode_batch(header, bodies)));
    }
    first = end;
  }
  return frames;
}

std::string frame_heartbeat(const Sender& sender, std::uint64_t last_sequence, bool goodbye) {
  return sender.sign(encode_heartbeat(sender.header(last_sequence), goodbye));
}

}  // namespace syncbus::detail
