// libFuzzer target for everything a peer can put in front of a listener:
// NOTIFY payloads (plain and signed) and spilled bodies. Whatever the input,
// the decoders may only return or throw syncbus::protocol_error; anything
// else (a crash, another exception, a sanitizer report, a hang, unbounded
// memory) is a bug that libFuzzer reports with the input that caused it. And
// the body parser must agree with nlohmann::json's: never accept what it
// rejects, and build the same value.
//
//   scripts/fuzz.sh [SECONDS]      build with clang and run (default 60 s)
#include <syncbus/errors.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "envelope.hpp"
#include "message_auth.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace syncbus::detail;
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  try {
    const auto envelope = decode_envelope(input);
    // What the listener relies on after a successful decode.
    if (envelope.count == 0 || envelope.origin.empty() || envelope.sequence == 0) __builtin_trap();
    if (envelope.kind == Envelope::Kind::inline_body && envelope.bodies.size() != envelope.count) {
      __builtin_trap();
    }
  } catch (const syncbus::protocol_error&) {
  }

  static const MessageAuth auth({"a fuzzing secret of some length"});
  try {
    std::string unsigned_envelope;
    decode_envelope(auth.verify_envelope("fuzz", input, unsigned_envelope));
  } catch (const syncbus::protocol_error&) {
  }

  // Differential: our parser (simdjson underneath) never accepts what
  // nlohmann::json's own parser rejects, and builds the same value; our
  // writer writes exactly what nlohmann's dump() does.
  try {
    const auto ours = parse_body(input, 1 << 16);
    const auto theirs = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
    if (theirs.is_discarded() || !(ours == theirs)) __builtin_trap();
    for (const bool ascii : {false, true}) {
      if (serialize_body(ours, ascii) !=
          ours.dump(-1, ' ', ascii, nlohmann::json::error_handler_t::strict)) {
        __builtin_trap();
      }
    }
  } catch (const syncbus::protocol_error&) {
  }
  // Strings that are not UTF-8 (which no parser lets through) must be
  // refused by the writer exactly when dump() refuses them.
  {
    const nlohmann::json raw_string = std::string(input);
    bool dump_refused = false, ours_refused = false;
    std::string dumped, ours;
    try {
      dumped = raw_string.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
    } catch (const nlohmann::json::exception&) {
      dump_refused = true;
    }
    try {
      ours = serialize_body(raw_string, false);
    } catch (const syncbus::invalid_message&) {
      ours_refused = true;
    }
    if (dump_refused != ours_refused || (!dump_refused && dumped != ours)) __builtin_trap();
  }
  return 0;
}
