// libFuzzer target for everything a peer can put in front of a listener:
// NOTIFY payloads (plain and signed) and spilled bodies. Whatever the input,
// the decoders may only return or throw syncbus::protocol_error; anything
// else (a crash, another exception, a sanitizer report, a hang, unbounded
// memory) is a bug that libFuzzer reports with the input that caused it.
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

  try {
    parse_body(input, 1 << 16);
  } catch (const syncbus::protocol_error&) {
  }
  return 0;
}
