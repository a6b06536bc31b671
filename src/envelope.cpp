#include "envelope.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <simdjson.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>

#include "instance_id.hpp"
#include "json_writer.hpp"

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
  // Most texts hold fewer brackets than the limit, and so cannot nest deeper
  // than it: counting them with memchr (vectorised in libc) settles those.
  std::size_t openings = 0;
  for (const char bracket : {'[', '{'}) {
    const char* at = json_text.data();
    const char* const end = at + json_text.size();
    while (openings <= max_depth && at != end &&
           (at = static_cast<const char*>(std::memchr(at, bracket, end - at))) != nullptr) {
      ++openings;
      ++at;
    }
  }
  if (openings <= max_depth) return false;
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
  write_json(text, body, ascii_only, max_body_depth);
  return text;
}

namespace {

// {"v":1,"origin":"<origin>","seq":<n>[,"born":<b>][,"pid":<p>][,"sent":<t>]
std::size_t header_size(const EnvelopeHeader& header) {
  constexpr std::size_t fixed = sizeof(R"({"v":1,"origin":"","seq":)") - 1;
  std::size_t size = fixed + header.origin.size() + std::to_string(header.sequence).size();
  if (header.born != 0) size += sizeof(R"(,"born":)") - 1 + std::to_string(header.born).size();
  if (header.pid != 0) size += sizeof(R"(,"pid":)") - 1 + std::to_string(header.pid).size();
  if (header.sent_ms != 0)
    size += sizeof(R"(,"sent":)") - 1 + std::to_string(header.sent_ms).size();
  return size;
}

// Origins are plain ASCII (new_instance_id), so no escaping is needed;
// building the text directly avoids copying a body into a JSON object.
void append_header(std::string& out, const EnvelopeHeader& header) {
  out += R"({"v":1,"origin":")";
  out += header.origin;
  out += R"(","seq":)";
  out += std::to_string(header.sequence);
  if (header.born != 0) {
    out += R"(,"born":)";
    out += std::to_string(header.born);
  }
  if (header.pid != 0) {
    out += R"(,"pid":)";
    out += std::to_string(header.pid);
  }
  if (header.sent_ms != 0) {
    out += R"(,"sent":)";
    out += std::to_string(header.sent_ms);
  }
}

}  // namespace

std::string encode_inline(const EnvelopeHeader& header, std::string_view body_json) {
  std::string out;
  out.reserve(inline_envelope_size(header, body_json.size()));
  append_header(out, header);
  out += R"(,"body":)";
  out += body_json;
  out += '}';
  return out;
}

std::string encode_spill_pointer(const EnvelopeHeader& header, std::uint64_t count) {
  std::string out;
  append_header(out, header);
  out += R"(,"spilled":true)";
  if (count != 1) {
    out += R"(,"count":)";
    out += std::to_string(count);
  }
  out += '}';
  return out;
}

std::size_t inline_envelope_size(const EnvelopeHeader& header, std::size_t body_size) {
  // <header>,"body":<body>}
  constexpr std::size_t fixed = sizeof(R"(,"body":})") - 1;
  return header_size(header) + fixed + body_size;
}

std::size_t batch_envelope_size(const EnvelopeHeader& header, std::size_t count,
                                std::size_t bodies_size) {
  // <header>,"bodies":[<b>,<b>]}
  constexpr std::size_t fixed = sizeof(R"(,"bodies":[]})") - 1;
  return header_size(header) + fixed + bodies_size + (count - 1);
}

std::string encode_batch(const EnvelopeHeader& header,
                         const std::vector<std::string_view>& bodies_json) {
  if (bodies_json.size() == 1) return encode_inline(header, bodies_json[0]);
  std::size_t bodies_size = 0;
  for (const auto body : bodies_json) bodies_size += body.size();
  std::string out;
  out.reserve(batch_envelope_size(header, bodies_json.size(), bodies_size));
  append_header(out, header);
  out += R"(,"bodies":[)";
  for (std::size_t i = 0; i < bodies_json.size(); ++i) {
    if (i > 0) out += ',';
    out += bodies_json[i];
  }
  out += "]}";
  return out;
}

std::string encode_heartbeat(const EnvelopeHeader& header, bool goodbye) {
  std::string out;
  append_header(out, header);
  out += goodbye ? R"(,"heartbeat":true,"goodbye":true})" : R"(,"heartbeat":true})";
  return out;
}

namespace {

using Element = simdjson::dom::element;
using Type = simdjson::dom::element_type;

// One parser per thread: it keeps its buffers between documents, which is
// what makes it fast. A document over a megabyte gets a parser of its own,
// so that one huge spilled body does not pin its buffers for ever.
constexpr std::size_t reused_parser_limit = 1 << 20;

simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

// Parses `text`, then calls `use` with the root element while the parser
// still holds it; calls `invalid` (which must throw) with simdjson's reason
// when `text` is not JSON.
template <typename Use, typename Invalid>
auto with_document(std::string_view text, Use&& use, Invalid&& invalid)
    -> decltype(use(std::declval<Element>())) {
  std::optional<simdjson::dom::parser> own;
  simdjson::dom::parser* parser = &thread_parser();
  if (text.size() > reused_parser_limit) {
    own.emplace();
    parser = &*own;
  }
  Element root;
  // Copies the text into the parser's padded buffer (simdjson reads past
  // the end of what it is given).
  if (const auto error = parser->parse(text.data(), text.size(), true).get(root)) {
    invalid(simdjson::error_message(error));
  }
  return use(root);
}

// The JSON value of `element`, as nlohmann's own parser would have built it
// (non-negative integers unsigned, the last of repeated keys). Recursion is
// bounded: every caller has checked the nesting first (nesting_exceeds).
nlohmann::json to_json(Element element) {
  switch (element.type()) {
    case Type::OBJECT: {
      nlohmann::json object(nlohmann::json::value_t::object);
      simdjson::dom::object fields = element.get_object().value_unsafe();
      for (const auto field : fields) object[std::string(field.key)] = to_json(field.value);
      return object;
    }
    case Type::ARRAY: {
      nlohmann::json array(nlohmann::json::value_t::array);
      simdjson::dom::array items = element.get_array().value_unsafe();
      auto& values = array.get_ref<nlohmann::json::array_t&>();
      values.reserve(items.size());
      for (const auto item : items) values.push_back(to_json(item));
      return array;
    }
    case Type::STRING:
      return std::string(element.get_string().value_unsafe());
    case Type::INT64: {
      const auto value = element.get_int64().value_unsafe();
      if (value >= 0) return static_cast<std::uint64_t>(value);
      return value;
    }
    case Type::UINT64:
      return element.get_uint64().value_unsafe();
    case Type::DOUBLE:
      return element.get_double().value_unsafe();
    case Type::BOOL:
      return element.get_bool().value_unsafe();
    case Type::NULL_VALUE:
      return nullptr;
  }
  return nullptr;
}

// An unsigned integer field: INT64 >= 0 or UINT64.
std::optional<std::uint64_t> unsigned_of(Element element) {
  if (element.type() == Type::UINT64) return element.get_uint64().value_unsafe();
  if (element.type() == Type::INT64 && element.get_int64().value_unsafe() >= 0) {
    return static_cast<std::uint64_t>(element.get_int64().value_unsafe());
  }
  return std::nullopt;
}

}  // namespace

Envelope decode_envelope(std::string_view payload, std::string_view skip_bodies_of) {
  if (payload.size() >= notify_payload_limit) {
    reject(payload, fmt::format("{} bytes; a NOTIFY payload is shorter than {}", payload.size(),
                                notify_payload_limit));
  }
  // The envelope and the bodies array add two levels to a body's own.
  if (nesting_exceeds(payload, max_body_depth + 2)) {
    reject(payload, fmt::format("nested deeper than {} levels", max_body_depth));
  }
  return with_document(
      payload,
      [&](Element root) {
        if (root.type() != Type::OBJECT) reject(payload, "not a JSON object");
        // One pass over the fields; a known field given twice is refused
        // rather than guessed at.
        std::optional<Element> version, origin, sequence, body, bodies, spilled, heartbeat, count,
            born, pid, sent, goodbye;
        simdjson::dom::object fields = root.get_object().value_unsafe();
        for (const auto field : fields) {
          std::optional<Element>* slot = nullptr;
          const auto key = field.key;
          if (key == "v") {
            slot = &version;
          } else if (key == "origin") {
            slot = &origin;
          } else if (key == "seq") {
            slot = &sequence;
          } else if (key == "body") {
            slot = &body;
          } else if (key == "bodies") {
            slot = &bodies;
          } else if (key == "spilled") {
            slot = &spilled;
          } else if (key == "heartbeat") {
            slot = &heartbeat;
          } else if (key == "count") {
            slot = &count;
          } else if (key == "born") {
            slot = &born;
          } else if (key == "pid") {
            slot = &pid;
          } else if (key == "sent") {
            slot = &sent;
          } else if (key == "goodbye") {
            slot = &goodbye;
          } else {
            continue;  // unknown fields are for later minor versions
          }
          if (*slot) reject(payload, fmt::format("\"{}\" appears twice", key));
          *slot = field.value;
        }

        if (!version || (version->type() != Type::INT64 && version->type() != Type::UINT64)) {
          reject(payload, "no integer \"v\" (protocol version)");
        }
        if (unsigned_of(*version) != std::optional<std::uint64_t>(protocol_version)) {
          throw protocol_error(
              fmt::format("syncbus: ignored an envelope of protocol version {} (this build "
                          "speaks version {}); upgrade syncbus on every instance of the cluster",
                          simdjson::minify(*version), protocol_version));
        }

        Envelope envelope;
        if (!origin || origin->type() != Type::STRING) reject(payload, "no string \"origin\"");
        // Origins are instance ids; anything else did not come from a
        // syncbus bus, and must not reach the dedupe state or a query.
        const std::string_view origin_text = origin->get_string().value_unsafe();
        if (!is_plain_instance_id(origin_text)) {
          reject(payload, "\"origin\" is not 1 to 64 characters of A-Z a-z 0-9 . _ : -");
        }
        envelope.origin = std::string(origin_text);

        // The spill table keeps sequences as bigint: at most 2^63 - 1.
        const auto seq = sequence ? unsigned_of(*sequence) : std::nullopt;
        if (!seq || *seq == 0 || *seq > static_cast<std::uint64_t>(INT64_MAX)) {
          reject(payload, "no \"seq\" from 1 to 2^63-1");
        }
        envelope.sequence = *seq;
        // A transaction id, a process id: positive.
        for (const auto& [field, name, out] : {std::make_tuple(&born, "born", &envelope.born),
                                               std::make_tuple(&pid, "pid", &envelope.pid)}) {
          if (!*field) continue;
          const auto value = unsigned_of(**field);
          if (!value || *value == 0)
            reject(payload, fmt::format("\"{}\" is not a positive integer", name));
          *out = value;
        }
        // A time in milliseconds: one that is not a positive integer is no
        // time (the message is delivered, and left out of the lag; signed,
        // it is refused for want of one).
        if (sent) {
          const auto value = unsigned_of(*sent);
          if (value && *value != 0) envelope.sent_ms = value;
        }

        const auto is_true = [](const std::optional<Element>& flag) {
          return flag && flag->type() == Type::BOOL && flag->get_bool().value_unsafe();
        };
        const bool is_spilled = is_true(spilled);
        const bool is_heartbeat = is_true(heartbeat);
        if (body.has_value() + bodies.has_value() + is_spilled + is_heartbeat != 1) {
          reject(payload,
                 "needs exactly one of \"body\", \"bodies\", \"spilled\":true or "
                 "\"heartbeat\":true");
        }
        const auto fits = [&envelope](std::uint64_t n) {
          return n >= 1 && n <= max_messages_per_envelope &&
                 n - 1 <= static_cast<std::uint64_t>(INT64_MAX) - envelope.sequence;
        };
        const bool build = skip_bodies_of.empty() || envelope.origin != skip_bodies_of;
        if (body) {
          // The envelope adds one level to a lone body's own (a batch two,
          // checked above): a body may nest max_body_depth levels however
          // it travels, inline, in a batch or spilled.
          if (nesting_exceeds(payload, max_body_depth + 1)) {
            reject(payload, fmt::format("nested deeper than {} levels", max_body_depth));
          }
          envelope.kind = Envelope::Kind::inline_body;
          if (build) envelope.bodies.push_back(to_json(*body));
        } else if (bodies) {
          if (bodies->type() != Type::ARRAY) {
            reject(payload, "\"bodies\" is not an array of 1 or more messages within 2^63-1");
          }
          simdjson::dom::array items = bodies->get_array().value_unsafe();
          if (!fits(items.size())) {
            reject(payload, "\"bodies\" is not an array of 1 or more messages within 2^63-1");
          }
          envelope.kind = Envelope::Kind::inline_body;
          envelope.count = items.size();
          if (build) {
            envelope.bodies.reserve(items.size());
            for (const auto item : items) envelope.bodies.push_back(to_json(item));
          }
        } else if (is_spilled) {
          envelope.kind = Envelope::Kind::spill_pointer;
          if (count) {
            const auto n = unsigned_of(*count);
            if (!n || !fits(*n)) {
              reject(payload, fmt::format("\"count\" is not from 1 to {} within 2^63-1",
                                          max_messages_per_envelope));
            }
            envelope.count = *n;
          }
        } else {
          envelope.kind = Envelope::Kind::heartbeat;
          envelope.goodbye = is_true(goodbye);
        }
        return envelope;
      },
      [&](const char* why) { reject(payload, fmt::format("not JSON: {}", why)); });
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
  return with_document(body_json, to_json, [&](const char* why) {
    throw protocol_error(fmt::format("syncbus: a spilled message body is not valid JSON ({}): {}",
                                     why, excerpt(body_json)));
  });
}

}  // namespace syncbus::detail
