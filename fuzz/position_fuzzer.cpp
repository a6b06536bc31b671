// libFuzzer target for positions (position_token.hpp): a client hands one
// back to a bus as it pleases, so the decoder may only return or throw
// syncbus::invalid_position, whatever the text; and a position spells one
// way only: what decodes encodes back to the very same text.
//
//   scripts/fuzz.sh [SECONDS]
#include <syncbus/errors.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "position_token.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace syncbus::detail;
  static const auto key = position_channel_key({"", "public", "sync_cluster_spill", "fuzz"});
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  try {
    const auto position = decode_position(key, input);
    if (encode_position(key, position.snapshot, position.cursors) != input) __builtin_trap();
  } catch (const syncbus::invalid_position&) {
  }
  return 0;
}
