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

std::string serialize_body(const nlohmann::json& body, bool ascii_only) {
  try {
    return body.dump(-1, ' ', ascii_only, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    throw invalid_message(
        fmt::format("syncbus: cannot publish this body: {}. Strings in a message body must "
                    "be valid UTF-8; nothing was sent",
                    e.what()));
  }
}

std::string encode_inline(std::string_view origin, std::uint64_t sequence,
                          std::string_view body_json) {
  // Origins are plain ASCII (checked_instance_id), so no escaping is needed;
  // building the text directly avoids copying the body into a JSON object.
  std::string out;
  out.reserve(body_json.size() + origin.size() + 48);
  out += R"({"v":1,"origin":")";
  out += origin;
  out += R"(","seq":)";
  out += std::to_string(sequence);
  out += R"(,"body":)";
  out += body_json;
  out += '}';
  return out;
}

std::string encode_spill_pointer(std::string_view origin, std::uint64_t sequence) {
  return fmt::format(R"({{"v":1,"origin":"{}","seq":{},"spilled":true}})", origin, sequence);
}

std::string encode_heartbeat(std::string_view origin, std::uint64_t last_sequence) {
  return fmt::format(R"({{"v":1,"origin":"{}","seq":{},"heartbeat":true}})", origin, last_sequence);
}

Envelope decode_envelope(std::string_view payload) {
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
  const auto is_true = [&doc](const char* field) {
    const auto it = doc.find(field);
    return it != doc.end() && it->is_boolean() && it->get<bool>();
  };
  const bool spilled = is_true("spilled");
  const bool heartbeat = is_true("heartbeat");
  if ((body != doc.end()) + spilled + heartbeat != 1) {
    reject(payload, "needs exactly one of \"body\", \"spilled\":true or \"heartbeat\":true");
  }
  if (body != doc.end()) {
    envelope.kind = Envelope::Kind::inline_body;
    envelope.body = std::move(*body);
  } else {
    envelope.kind = spilled ? Envelope::Kind::spill_pointer : Envelope::Kind::heartbeat;
  }
  return envelope;
}

nlohmann::json parse_body(std::string_view body_json) {
  auto body = nlohmann::json::parse(body_json, nullptr, false);
  if (body.is_discarded()) {
    throw protocol_error(
        fmt::format("syncbus: a spilled message body is not valid JSON: {}", excerpt(body_json)));
  }
  return body;
}

}  // namespace syncbus::detail
