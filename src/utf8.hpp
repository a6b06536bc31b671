#pragma once
// UTF-8 validation, shared by the identifier checks and the JSON writer.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace syncbus::detail {

/// The length of the valid multi-byte UTF-8 sequence starting at text[i] (2
/// to 4) and its code point in `code`; 0 when it is not one (an ASCII byte,
/// an overlong form, a surrogate, past U+10FFFF, truncated).
std::size_t utf8_sequence(std::string_view text, std::size_t i, std::uint32_t& code) noexcept;

/// True when `text` is valid UTF-8 (no overlong forms, no surrogates).
bool is_valid_utf8(std::string_view text) noexcept;

}  // namespace syncbus::detail
