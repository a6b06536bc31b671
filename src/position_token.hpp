#pragma once
// The text of a position (ClusterMessage::position): a StreamPosition's
// snapshot and cursors, and the channel they belong to, as a short printable
// token that a client keeps as its `since`. A pure codec: no I/O, fuzzed
// (fuzz/position_fuzzer.cpp).
//
// The text is "p1." followed by the bytes below in base64url (RFC 4648 §5,
// no padding): URL-, header- and JSON-safe as it is. Numbers are unsigned
// LEB128 varints (7 bits a byte, low first, at most 10 bytes).
//
//   channel    8 bytes: the first 8 of SHA-256("syncbus position" NUL
//              schema NUL table NUL channel): a position of one channel is
//              refused by another
//   xmin       varint
//   xmax       varint, minus xmin
//   n          varint: transactions in progress, then each as a varint:
//              the first minus xmin, each next minus the one before, minus 1
//   m          varint: cursors, in ascending byte order of the origin, each:
//              the origin's length (1 to 64), its bytes ([A-Za-z0-9._:-]),
//              and its sequence, a varint
//
// With two transactions in progress, a position is 47 characters with one
// cursor (the bus's own, typically) and 89 with three. docs/PROTOCOL.md,
// "Positions", says what a position means.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "pg_snapshot.hpp"

namespace syncbus::detail {

/// Where a position belongs: a channel of a spill table, in a database
/// (read_database_identity(): a position of another database, or of
/// another server, names rows and transactions that are not these).
struct ChannelName {
  std::string_view database;
  std::string_view schema;
  std::string_view table;
  std::string_view channel;
};

/// The 8 bytes that tie a position to its channel, table and database.
std::string position_channel_key(const ChannelName& name);

struct DecodedPosition {
  PgSnapshot snapshot;
  std::map<std::string, std::uint64_t> cursors;
};

/// Writes a token: the snapshot, then `cursors` cursors in ascending order
/// of their origins.
class PositionEncoder {
 public:
  PositionEncoder(std::string_view channel_key, const PgSnapshot& snapshot, std::size_t cursors);
  void cursor(std::string_view origin, std::uint64_t sequence);
  std::string finish() const;

 private:
  std::string bytes_;
};

/// True when `position` names the message `origin`#`sequence`, written by
/// transaction `xid` (0: unknown, named only by a cursor):
/// docs/PROTOCOL.md, "Positions".
inline bool names(const DecodedPosition& position, const std::string& origin,
                  std::uint64_t sequence, std::uint64_t xid) {
  const auto cursor = position.cursors.find(origin);
  if (cursor != position.cursors.end()) return sequence <= cursor->second;
  return xid != 0 && position.snapshot.visible(xid);
}

/// The token of `snapshot` and `cursors`, for the channel of `channel_key`.
std::string encode_position(std::string_view channel_key, const PgSnapshot& snapshot,
                            const std::map<std::string, std::uint64_t>& cursors);

/// Reads a token; throws invalid_position when it is not one, or is one of
/// another channel (saying which).
DecodedPosition decode_position(std::string_view channel_key, std::string_view token);

/// Tokens longer than this are refused unread (a snapshot of 10,000
/// transactions in progress and 1,000 origins fits).
inline constexpr std::size_t max_position_length = 256 * 1024;

}  // namespace syncbus::detail
