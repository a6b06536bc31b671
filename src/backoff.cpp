#include "backoff.hpp"

#include <random>

namespace syncbus::detail {

std::chrono::milliseconds jittered(std::chrono::milliseconds pause) {
  thread_local std::minstd_rand random{std::random_device{}()};
  std::uniform_int_distribution<long> pick(pause.count() / 2, pause.count());
  return std::chrono::milliseconds(pick(random));
}

}  // namespace syncbus::detail
