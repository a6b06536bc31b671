#pragma once
// Writes a nlohmann::json value as compact JSON text, byte for byte as
// nlohmann's own dump() does (tested against it by the fuzzer), but copying
// runs of plain text whole instead of byte by byte: a 20 KB string body is
// written several times faster. Checks UTF-8 and nesting depth as it goes.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>

namespace syncbus::detail {

/// Appends `value` to `out`. With `ascii_only`, every character from U+007F
/// up is written as a \u escape (as dump() with ensure_ascii). Throws
/// invalid_message for a string that is not valid UTF-8, or nesting deeper
/// than `max_depth` (checked before going deeper, so never a deep recursion).
void write_json(std::string& out, const nlohmann::json& value, bool ascii_only,
                std::size_t max_depth);

}  // namespace syncbus::detail
