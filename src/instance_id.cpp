#include "instance_id.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <random>

namespace syncbus::detail {

std::string random_hex(std::size_t count) {
  std::random_device entropy;
  std::string out;
  out.reserve(count + 8);
  while (out.size() < count) out += fmt::format("{:08x}", entropy());
  out.resize(count);
  return out;
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

std::string new_instance_id(const std::string& name) {
  // 14 hex digits (56 random bits) fit std::string's short-string buffer:
  // every message a receiver holds carries its origin.
  if (name.empty()) return random_hex(14);
  if (name.size() > max_instance_name_length || !is_plain_instance_id(name)) {
    throw configuration_error(fmt::format(
        "syncbus: PostgresBusOptions::instance_id \"{}\" is invalid: use 1 to {} characters of "
        "A-Z a-z 0-9 . _ : - "
        "(or leave it empty for a random id)",
        name.size() > 80 ? name.substr(0, 80) + "..." : name, max_instance_name_length));
  }
  return name + "." + random_hex(8);
}

}  // namespace syncbus::detail
