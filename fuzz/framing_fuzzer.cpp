// libFuzzer target for the publisher's framing (src/framing.hpp): whatever
// batch it is given (how many bodies, their sizes around the NOTIFY payload
// limit, the mode, signing, the sequence numbers' width, the sender's
// process id), what it frames must decode back to exactly the messages it
// accepted, each payload under the limit, packed as full as allowed, and a
// refusal only for what cannot fit (tests/framing_check.hpp). A violation
// traps, and libFuzzer keeps the input.
//
//   scripts/fuzz.sh [SECONDS]      build with clang and run (default 60 s)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "framing.hpp"
#include "framing_check.hpp"

namespace {

// Reads the input a byte at a time; 0 once it runs out.
struct Input {
  const std::uint8_t* data;
  std::size_t size;
  std::uint8_t byte() { return size > 0 ? (--size, *data++) : 0; }
  std::uint32_t u16() { return static_cast<std::uint32_t>(byte()) << 8 | byte(); }
};

// A JSON body of exactly `size` bytes (at least 1), in one of a few shapes.
std::string body_of(std::size_t size, std::uint8_t shape) {
  if (size < 2) return "7";
  if (shape % 3 == 0 || size < 8) return '"' + std::string(size - 2, 'x') + '"';
  if (shape % 3 == 1) {  // [1,1,...,1], with a space first to make an even size
    const auto inner = size - 2;
    std::string out = inner % 2 == 0 ? "[ 1" : "[1";
    for (std::size_t i = 0; i < (inner - 1) / 2; ++i) out += ",1";
    return out + "]";
  }
  return R"({"k":")" + std::string(size - 8, 'y') + "\"}";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace syncbus::detail;
  static const MessageAuth unsigned_auth({});
  static const MessageAuth signing_auth({"a fuzzing secret of some length"});
  Input in{data, size};

  const auto flags = in.byte();
  const auto mode = static_cast<syncbus::SpillMode>(flags % 3);
  const auto& auth = flags & 4 ? signing_auth : unsigned_auth;
  const std::string origin(1 + in.byte() % 64, 'o');
  static constexpr std::uint64_t widths[] = {
      0, 8, 9, 98, 99, 999'999, 4'294'967'295, 9'223'372'036'854'775'000ULL};
  const auto last_sequence = widths[in.byte() % 8];
  const Sender sender{"fuzz",
                      origin,
                      in.u16(),
                      auth,
                      in.u16() * 65536ULL + in.u16(),
                      1'700'000'000'000ULL + in.u16()};

  std::vector<std::string> bodies(1 + in.byte() % 64);
  for (auto& body : bodies) {
    // Sizes cluster where the limit is; now and then a large one.
    const auto pick = in.byte();
    const auto raw = in.u16();
    const std::size_t body_size = pick % 4 == 0   ? 7700 + raw % 400
                                  : pick % 4 == 1 ? 1 + raw % 300
                                  : pick % 4 == 2 ? 1 + raw % 8100
                                                  : 1 + raw * 4;
    body = body_of(body_size, pick >> 2);
  }
  const std::vector<std::string_view> views(bodies.begin(), bodies.end());
  const auto plan = plan_batch(sender, mode, last_sequence, views);
  const auto frames = frame_batch(sender, plan, views);
  const auto wrong = testing::check_framing(sender, mode, last_sequence, views, plan, frames);
  if (!wrong.empty()) {
    std::fprintf(stderr, "framing_fuzzer: %s\n", wrong.c_str());
    __builtin_trap();
  }
  return 0;
}
