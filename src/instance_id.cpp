#include "instance_id.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <random>

namespace syncbus::detail {

std::string random_instance_id() {
  std::random_device entropy;
  const std::uint64_t high = entropy();
  const std::uint64_t low = entropy();
  return fmt::format("{:016x}", (high << 32) | low);
}

bool is_plain_instance_id(std::string_view id) noexcept {
  constexpr std::size_t max_length = 64;
  if (id.empty() || id.size() > max_length) return false;
  for (const char c : id) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
    if (!allowed) return false;
  }
  return true;
}

std::string checked_instance_id(const std::string& id) {
  if (id.empty()) return random_instance_id();
  if (!is_plain_instance_id(id)) {
    throw configuration_error(
        fmt::format("syncbus: instance_id \"{}\" is invalid: use 1 to 64 characters of "
                    "A-Z a-z 0-9 . _ : - (or leave it empty for a random id)",
                    id.size() > 80 ? id.substr(0, 80) + "..." : id));
  }
  return id;
}

}  // namespace syncbus::detail
