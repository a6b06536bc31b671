#include "json_writer.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
// nlohmann::json's own shortest-digits writer, so that numbers are written
// exactly as dump() writes them (std::to_chars is not: 1e15 as "1e+15",
// not "1000000000000000.0"). It is not public API: the versions it was
// checked with are pinned, and fuzz/envelope_fuzzer.cpp compares our output
// with dump()'s. On a newer nlohmann::json, check that this header and
// function still exist, run scripts/fuzz.sh, then raise the pin.
#if NLOHMANN_JSON_VERSION_MAJOR != 3 || NLOHMANN_JSON_VERSION_MINOR > 11
#error \
    "syncbus: json_writer.cpp was checked with nlohmann::json 3.2 to 3.11 (see the comment above)"
#endif
#include <nlohmann/detail/conversions/to_chars.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "utf8.hpp"

namespace syncbus::detail {
namespace {

constexpr char hex_digits[] = "0123456789abcdef";

void write_u_escape(std::string& out, std::uint32_t unit) {
  const char escape[] = {'\\',
                         'u',
                         hex_digits[(unit >> 12) & 0xf],
                         hex_digits[(unit >> 8) & 0xf],
                         hex_digits[(unit >> 4) & 0xf],
                         hex_digits[unit & 0xf]};
  out.append(escape, sizeof escape);
}

// True for a byte that cannot be copied as it is.
inline bool special(unsigned char c) { return c < 0x20 || c == '"' || c == '\\' || c >= 0x7F; }

// Eight bytes at a time (SWAR): true when none of the eight is special().
// Bodies are mostly plain text, and a spilled one is tens of kilobytes: the
// byte-by-byte scan took 8 % of the benchmark process's CPU at 20 KB.
inline bool all_plain(std::uint64_t bytes) {
  constexpr std::uint64_t ones = 0x0101010101010101ULL;
  constexpr std::uint64_t highs = 0x8080808080808080ULL;
  // Any byte equal to zero (exact as a whole: the "any", not which byte).
  const auto has_zero = [](std::uint64_t v) { return ((v - ones) & ~v & highs) != 0; };
  if ((bytes & highs) != 0) return false;                             // a byte >= 0x80
  if ((((bytes - ones * 0x20) & ~bytes) & highs) != 0) return false;  // a byte < 0x20
  return !has_zero(bytes ^ (ones * '"')) && !has_zero(bytes ^ (ones * '\\')) &&
         !has_zero(bytes ^ (ones * 0x7F));
}

// The end of the run of plain characters that starts at `i`.
std::size_t plain_run_end(const std::string& text, std::size_t i) {
  const std::size_t size = text.size();
  while (i + 8 <= size) {
    std::uint64_t bytes;
    std::memcpy(&bytes, text.data() + i, 8);
    if (!all_plain(bytes)) break;
    i += 8;
  }
  while (i < size && !special(static_cast<unsigned char>(text[i]))) ++i;
  return i;
}

void write_string(std::string& out, const std::string& text, bool ascii_only) {
  // Room for the plain case at once, growing geometrically (reserve() alone
  // would allocate exactly, once per small string of a large object).
  if (out.capacity() - out.size() < text.size() + 2) {
    out.reserve(std::max(out.size() + text.size() + 2, 2 * out.capacity()));
  }
  out += '"';
  std::size_t i = 0;
  while (i < text.size()) {
    // The run of plain characters, copied whole.
    const std::size_t end = plain_run_end(text, i);
    out.append(text, i, end - i);
    if (end == text.size()) break;
    i = end;
    const auto c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '\b':
        out += "\\b";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\r':
        out += "\\r";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case 0x7F:
        if (ascii_only) {
          write_u_escape(out, c);
        } else {
          out += static_cast<char>(c);
        }
        break;
      default:
        if (c < 0x20) {
          write_u_escape(out, c);
          break;
        }
        std::uint32_t code = 0;
        const auto length = utf8_sequence(text, i, code);
        if (length == 0) {
          throw invalid_message(
              fmt::format("syncbus: cannot publish this body: a string holds invalid UTF-8 at byte "
                          "{} (0x{:02X})"
                          ". Strings in a message body must be valid UTF-8; nothing was sent",
                          i, c));
        }
        if (!ascii_only) {
          out.append(text, i, length);
        } else if (code <= 0xFFFF) {
          write_u_escape(out, code);
        } else {
          code -= 0x10000;
          write_u_escape(out, 0xD800 + (code >> 10));
          write_u_escape(out, 0xDC00 + (code & 0x3FF));
        }
        i += length;
        continue;
    }
    ++i;
  }
  out += '"';
}

void write_value(std::string& out, const nlohmann::json& value, bool ascii_only,
                 std::size_t depth_left) {
  using Type = nlohmann::json::value_t;
  switch (value.type()) {
    case Type::null:
      out += "null";
      return;
    case Type::boolean:
      out += value.get<bool>() ? "true" : "false";
      return;
    case Type::number_integer:
      out += fmt::format_int(value.get<std::int64_t>()).c_str();
      return;
    case Type::number_unsigned:
      out += fmt::format_int(value.get<std::uint64_t>()).c_str();
      return;
    case Type::number_float: {
      const double number = value.get<double>();
      if (!std::isfinite(number)) {
        out += "null";  // as dump() writes NaN and infinities
        return;
      }
      std::array<char, 64> digits{};
      const char* end =
          nlohmann::detail::to_chars(digits.data(), digits.data() + digits.size(), number);
      out.append(digits.data(), static_cast<std::size_t>(end - digits.data()));
      return;
    }
    case Type::string:
      write_string(out, value.get_ref<const std::string&>(), ascii_only);
      return;
    case Type::array:
    case Type::object:
      break;
    case Type::binary:
      out += value.dump(-1, ' ', ascii_only, nlohmann::json::error_handler_t::strict);
      return;
    case Type::discarded:
      throw invalid_message("syncbus: cannot publish a discarded JSON value; nothing was sent");
  }
  if (depth_left == 0) {
    throw invalid_message(
        "syncbus: cannot publish this body: it nests arrays and objects too deep for receivers, "
        "which refuse more than 256 levels; nothing was sent");
  }
  if (value.is_array()) {
    out += '[';
    bool first = true;
    for (const auto& item : value) {
      if (!first) out += ',';
      first = false;
      write_value(out, item, ascii_only, depth_left - 1);
    }
    out += ']';
    return;
  }
  out += '{';
  bool first = true;
  for (const auto& [key, item] : value.get_ref<const nlohmann::json::object_t&>()) {
    if (!first) out += ',';
    first = false;
    write_string(out, key, ascii_only);
    out += ':';
    write_value(out, item, ascii_only, depth_left - 1);
  }
  out += '}';
}

}  // namespace

void write_json(std::string& out, const nlohmann::json& value, bool ascii_only,
                std::size_t max_depth) {
  write_value(out, value, ascii_only, max_depth);
}

}  // namespace syncbus::detail
