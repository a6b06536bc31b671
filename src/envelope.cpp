#include "envelope.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <cstdint>

#include "instance_id.hpp"

namespace syncbus::detail {
namespace {

// Quotes a payload for an error message without flooding it.
std::string excerpt(std::string_view payload) {
  constexpr std::size_t max_shown = 120;
  std::string shown(payload.substr(0, max_shown));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  }
  if (payload.size() > max_shown) {
    shown += fmt::format("... ({} bytes)", payload.size());
  }
  return shown;
}

[[noreturn]] void reject(std::string_view payload, std::string_view why) {
  throw protocol_error(
      fmt::format("syncbus: ignored a notification that is not a valid syncbus envelope "
                  "({}): {}. Is another program notifying on this channel?",
                  why, excerpt(payload)));
}

}  // namespace

bool nesting_exceeds(std::string_view json_text, std::size_t max_depth) noexcept {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < json_text.size(); ++i) {
    const char c = json_text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // whatever is escaped cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

std::string serialize_body(const nlohmann::json& body, bool ascii_only) {
  std::string text;
  try {
    text = body.dump(-1, ' ', ascii_only, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    throw invalid_message(
        fmt::format("syncbus: cannot publish this body: {}. Strings in a message body must "
                    "be valid UTF-8; nothing was sent",
                    e.what()));
  }
  if (nesting_exceeds(text, max_body_depth)) {
    throw invalid_message(
        fmt::format("syncbus: cannot publish this body: it nests arrays and objects deeper than "
                    "{} levels, which receivers refuse; nothing was sent",
                    max_body_depth));
  }
  return text;
}

std::string encode_inline(std::string_view origin, std::uint64_t sequence,
                          std::string_view body_json) {
  // Origins are plain ASCII (new_instance_id), so no escaping is needed;
  // building the text directly avoids copying the body into a JSON object.
  std::string out;
  out.reserve(inline_envelope_size(origin, sequence, body_json.size()));
  out += R"({"v":1,"origin":")";
  out += origin;
  out += R"(","seq":)";
  out += std::to_string(sequence);
  out += R"(,"body":)";
  out += body_json;
  out += '}';
  return out;
}

std::string encode_spill_pointer(std::string_view origin, std::uint64_t sequence,
                                 std::uint64_t count) {
  if (count == 1) {
    return fmt::format(R"({{"v":1,"origin":"{}","seq":{},"spilled":true}})", origin, sequence);
  }
  return fmt::format(R"({{"v":1,"origin":"{}","seq":{},"spilled":true,"count":{}}})", origin,
                     sequence, count);
}

std::size_t inline_envelope_size(std::string_view origin, std::uint64_t sequence,
                                 std::size_t body_size) {
  // {"v":1,"origin":"<origin>","seq":<n>,"body":<body>}
  constexpr std::size_t fixed = sizeof(R"({"v":1,"origin":"","seq":,"body":})") - 1;
  return fixed + origin.size() + std::to_string(sequence).size() + body_size;
}

std::size_t batch_envelope_size(std::string_view origin, std::uint64_t first_sequence,
                                std::size_t count, std::size_t bodies_size) {
  // {"v":1,"origin":"<origin>","seq":<n>,"bodies":[<b>,<b>]}
  constexpr std::size_t fixed = sizeof(R"({"v":1,"origin":"","seq":,"bodies":[]})") - 1;
  return fixed + origin.size() + std::to_string(first_sequence).size() + bodies_size + (count - 1);
}

std::string encode_batch(std::string_view origin, std::uint64_t first_sequence,
                         const std::vector<std::string_view>& bodies_json) {
  if (bodies_json.size() == 1) return encode_inline(origin, first_sequence, bodies_json[0]);
  std::size_t bodies_size = 0;
  for (const auto body : bodies_json) bodies_size += body.size();
  std::string out;
  out.reserve(batch_envelope_size(origin, first_sequence, bodies_json.size(), bodies_size));
  out += R"({"v":1,"origin":")";
  out += origin;
  out += R"(","seq":)";
  out += std::to_string(first_sequence);
  out += R"(,"bodies":[)";
  for (std::size_t i = 0; i < bodies_json.size(); ++i) {
    if (i > 0) out += ',';
    out += bodies_json[i];
  }
  out += "]}";
  return out;
}

std::string encode_heartbeat(std::string_view origin, std::uint64_t last_sequence) {
  return fmt::format(R"({{"v":1,"origin":"{}","seq":{},"heartbeat":true}})", origin, last_sequence);
}

Envelope decode_envelope(std::string_view payload) {
  if (payload.size() >= notify_payload_limit) {
    reject(payload, fmt::format("{} bytes; a NOTIFY payload is shorter than {}", payload.size(),
                                notify_payload_limit));
  }
  // The envelope and the bodies array add two levels to a body's own.
  if (nesting_exceeds(payload, max_body_depth + 2)) {
    reject(payload, fmt::format("nested deeper than {} levels", max_body_depth));
  }
  auto doc = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) reject(payload, "not JSON");
  if (!doc.is_object()) reject(payload, "not a JSON object");

  const auto version = doc.find("v");
  if (version == doc.end() || !version->is_number_integer()) {
    reject(payload, "no integer \"v\" (protocol version)");
  }
  if (*version != protocol_version) {
    throw protocol_error(
        fmt::format("syncbus: ignored an envelope of protocol version {} (this build "
                    "speaks version {}); upgrade syncbus on every instance of the cluster",
                    version->dump(), protocol_version));
  }

  Envelope envelope;
  const auto origin = doc.find("origin");
  if (origin == doc.end() || !origin->is_string()) reject(payload, "no string \"origin\"");
  // Origins are instance ids; anything else did not come from a syncbus bus,
  // and must not reach the dedupe state or a spill-table query.
  if (!is_plain_instance_id(origin->get_ref<const std::string&>())) {
    reject(payload, "\"origin\" is not 1 to 64 characters of A-Z a-z 0-9 . _ : -");
  }
  envelope.origin = origin->get<std::string>();

  const auto sequence = doc.find("seq");
  // The spill table keeps sequences as bigint: at most 2^63 - 1.
  if (sequence == doc.end() || !sequence->is_number_unsigned() ||
      sequence->get<std::uint64_t>() == 0 ||
      sequence->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
    reject(payload, "no \"seq\" from 1 to 2^63-1");
  }
  envelope.sequence = sequence->get<std::uint64_t>();

  const auto body = doc.find("body");
  const auto bodies = doc.find("bodies");
  const auto is_true = [&doc](const char* field) {
    const auto it = doc.find(field);
    return it != doc.end() && it->is_boolean() && it->get<bool>();
  };
  const bool spilled = is_true("spilled");
  const bool heartbeat = is_true("heartbeat");
  if ((body != doc.end()) + (bodies != doc.end()) + spilled + heartbeat != 1) {
    reject(payload,
           "needs exactly one of \"body\", \"bodies\", \"spilled\":true or "
           "\"heartbeat\":true");
  }
  const auto fits = [&envelope](std::uint64_t count) {
    return count >= 1 && count <= max_messages_per_envelope &&
           count - 1 <= static_cast<std::uint64_t>(INT64_MAX) - envelope.sequence;
  };
  if (body != doc.end()) {
    envelope.kind = Envelope::Kind::inline_body;
    envelope.bodies.push_back(std::move(*body));
  } else if (bodies != doc.end()) {
    if (!bodies->is_array() || !fits(bodies->size())) {
      reject(payload, "\"bodies\" is not an array of 1 or more messages within 2^63-1");
    }
    envelope.kind = Envelope::Kind::inline_body;
    envelope.count = bodies->size();
    envelope.bodies = std::move(bodies->get_ref<nlohmann::json::array_t&>());
  } else if (spilled) {
    envelope.kind = Envelope::Kind::spill_pointer;
    const auto count = doc.find("count");
    if (count != doc.end()) {
      if (!count->is_number_unsigned() || !fits(count->get<std::uint64_t>())) {
        reject(payload, fmt::format("\"count\" is not from 1 to {} within 2^63-1",
                                    max_messages_per_envelope));
      }
      envelope.count = count->get<std::uint64_t>();
    }
  } else {
    envelope.kind = Envelope::Kind::heartbeat;
  }
  return envelope;
}

nlohmann::json parse_body(std::string_view body_json, std::size_t max_bytes) {
  if (body_json.size() > max_bytes) {
    throw protocol_error(fmt::format(
        "syncbus: a spilled message body of {} bytes is larger than the limit ({} bytes, "
        "PostgresBusOptions::max_message_bytes)",
        body_json.size(), max_bytes));
  }
  if (nesting_exceeds(body_json, max_body_depth)) {
    throw protocol_error(
        fmt::format("syncbus: a spilled message body nests deeper than {} levels", max_body_depth));
  }
  auto body = nlohmann::json::parse(body_json, nullptr, false);
  if (body.is_discarded()) {
    throw protocol_error(
        fmt::format("syncbus: a spilled message body is not valid JSON: {}", excerpt(body_json)));
  }
  return body;
}

}  // namespace syncbus::detail
