#include "identifiers.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <cstdint>

#include "utf8.hpp"

namespace syncbus::detail {

void check_identifier(std::string_view setting, const std::string& value) {
  std::string why;
  if (value.empty()) {
    why = "it is empty";
  } else if (value.size() > max_identifier_bytes) {
    why = fmt::format(
        "it is {} bytes, and PostgreSQL keeps only the first {} (LISTEN and CREATE would "
        "silently use a truncated name, pg_notify() refuses it)",
        value.size(), max_identifier_bytes);
  } else if (value.find('\0') != std::string::npos) {
    why = "it contains a NUL byte";
  } else if (!is_valid_utf8(value)) {
    why = "it is not valid UTF-8";
  }
  if (why.empty()) return;
  throw configuration_error(fmt::format(
      "syncbus: {} is invalid: {}. Use 1 to {} bytes of UTF-8 text; it is used exactly as "
      "written (case kept, quoted)",
      setting, why, max_identifier_bytes));
}

std::string derived_identifier(const std::string& base, std::string_view suffix) {
  if (base.size() + suffix.size() <= max_identifier_bytes) return base + std::string(suffix);
  // FNV-1a: stable across builds and platforms, unlike std::hash.
  std::uint32_t hash = 2166136261u;
  for (const char c : base) {
    hash = (hash ^ static_cast<unsigned char>(c)) * 16777619u;
  }
  const auto tag = fmt::format("_{:08x}", hash);
  std::size_t keep = max_identifier_bytes - suffix.size() - tag.size();
  // Do not cut a multi-byte character in two.
  while (keep > 0 && (static_cast<unsigned char>(base[keep]) & 0xC0) == 0x80) --keep;
  return base.substr(0, keep) + tag + std::string(suffix);
}

}  // namespace syncbus::detail
