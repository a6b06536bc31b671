#pragma once
// PostgreSQL identifiers the bus is configured with: the channel, and the
// spill table's schema and name. They come from configuration (often an
// environment variable), so they are checked, never trusted:
//
// - 1 to 63 bytes (NAMEDATALEN - 1). LISTEN and CREATE silently truncate
//   longer names, while pg_notify() rejects them: a bus would listen on a
//   channel it never notifies on, and two long names sharing a prefix would
//   collide. Such names are refused, not mapped;
// - valid UTF-8 without NUL bytes (the database and libpq would refuse them
//   later, less clearly);
// - used exactly as written: quoted with the server's escaping
//   (PQescapeIdentifier) in SQL text, or passed as parameters, so case is
//   kept and no name can inject SQL.

#include <string>
#include <string_view>

namespace syncbus::detail {

/// The longest identifier PostgreSQL keeps whole, in bytes.
inline constexpr std::size_t max_identifier_bytes = 63;

/// Throws configuration_error naming `setting` as the user wrote it (e.g.
/// "PostgresBusOptions::channel", or a command-line flag such as
/// "--channel") when `value` is not 1 to 63 bytes of valid UTF-8 without NUL.
void check_identifier(std::string_view setting, const std::string& value);

/// `base` + `suffix` when that fits in 63 bytes; otherwise a prefix of
/// `base` (cut at a character boundary), '_', 8 hex digits of a hash of the
/// whole of `base`, then `suffix`: deterministic, and distinct for distinct
/// bases (but for hash collisions), so two long table names never share an
/// index or constraint name.
std::string derived_identifier(const std::string& base, std::string_view suffix);

}  // namespace syncbus::detail
