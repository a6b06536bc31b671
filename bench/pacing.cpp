#include "pacing.hpp"

#include <random>
#include <vector>

namespace syncbus::bench {

std::function<bool()> stop_requested = [] { return false; };

std::string padding_for(std::size_t size, bool text) {
  // {"t":<19 digits>,"pad":"..."} is about size bytes.
  constexpr std::size_t overhead = 36;
  const std::size_t length = size > overhead ? size - overhead : 1;
  if (!text) return std::string(length, 'x');
  // Words of 2 to 10 letters from a vocabulary of 512, in a fixed
  // pseudo-random order: the same text every run, nothing to escape.
  std::mt19937 random(20261125);
  std::vector<std::string> vocabulary(512);
  for (auto& word : vocabulary) {
    word.resize(2 + random() % 9);
    for (auto& c : word) c = static_cast<char>('a' + random() % 26);
  }
  std::string pad;
  pad.reserve(length + 11);
  while (pad.size() < length) {
    pad += vocabulary[random() % vocabulary.size()];
    pad += ' ';
  }
  pad.resize(length);
  return pad;
}

}  // namespace syncbus::bench
