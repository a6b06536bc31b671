#include "identifiers.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <cstdint>

namespace syncbus::detail {

bool is_valid_utf8(std::string_view text) noexcept {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (byte < 0x80) {
      ++i;
      continue;
    } else if ((byte & 0xE0) == 0xC0) {
      length = 2;
      code = byte & 0x1F;
    } else if ((byte & 0xF0) == 0xE0) {
      length = 3;
      code = byte & 0x0F;
    } else if ((byte & 0xF8) == 0xF0) {
      length = 4;
      code = byte & 0x07;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    const std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < smallest[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

void check_identifier(std::string_view option, const std::string& value) {
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
      "syncbus: PostgresBusOptions::{} is invalid: {}. Use 1 to {} bytes of UTF-8 text; it is "
      "used exactly as written (case kept, quoted)",
      option, why, max_identifier_bytes));
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
