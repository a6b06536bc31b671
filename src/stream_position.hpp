#pragma once
// What a durable bus (SpillMode::always) has delivered of its channel, in
// terms that any bus of the channel can read back from the spill table: a
// snapshot S and a cursor per origin.
//
//   delivered = { the rows of an origin with a cursor c: sequence <= c }
//             ∪ { the rows of every other origin: writing transaction
//                 visible in S }
//
// "Delivered" means handed to the handlers, or reported as a gap: a message
// that will never be handed on is behind the position as much as one that
// was. Exact, both ways: no row outside that set was delivered, and none
// inside it is still to come. That is what lets a position be resumed from
// without a hole and without a repeat (docs/PROTOCOL.md, "Positions").
//
// Why it holds. An origin commits its transactions one after another (each
// begins after the one before committed), so the rows of an origin that are
// visible in any snapshot are a prefix of its sequence, and a cursor is
// exact once an origin's messages are delivered in sequence order, which
// the delivery stage guarantees. Snapshots come from the listener's markers
// (received_position.hpp): once one comes back, every notification of a
// transaction visible in its snapshot was received; once everything posted
// before it has been delivered, each such row was delivered, unless its
// origin was held back to be read from the table later (the holds, taken
// when the mark was posted), which keeps a cursor at what it delivered. An
// origin's cursor can go once the transaction of the last row it delivered
// is visible in the new snapshot: then its delivered rows are exactly its
// visible ones. An origin whose last word carried no transaction id (a gap,
// a message of this bus's own, sent back by its publisher, or one sent
// inline) keeps its cursor; there are as many as origins with such news.
//
// Pure: no I/O, no threads; the delivery thread owns one.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pg_snapshot.hpp"

namespace syncbus::detail {

class StreamPosition {
 public:
  /// An origin held back at `from` (its messages from `from` on are to be
  /// read back from the table, after the mark that takes this).
  using Hold = std::pair<std::string, std::uint64_t>;

  /// Everything visible in `snapshot`, from before the bus started
  /// listening, counts as delivered: a position names what comes after it.
  void start(const PgSnapshot& snapshot);
  bool started() const noexcept { return started_; }

  /// `origin`'s `sequence` was delivered (handed to the handlers, or to none
  /// when none were subscribed); `xid` is its writing transaction, 0 when
  /// unknown.
  void delivered(const std::string& origin, std::uint64_t sequence, std::uint64_t xid);
  /// `origin`'s messages up to `sequence` are behind the stream without
  /// being delivered: reported as a gap, dropped, refused.
  void passed(const std::string& origin, std::uint64_t sequence);
  /// A mark: everything posted before it was delivered, every transaction
  /// visible in `snapshot` had been received, and `holds` were held back
  /// when it was posted.
  void settle(const PgSnapshot& snapshot, const std::vector<Hold>& holds);

  const PgSnapshot& snapshot() const noexcept { return snapshot_; }
  /// The origins that have a cursor, and their cursors, in name order.
  std::map<std::string, std::uint64_t> cursors() const;
  /// The position as a token (position_token.hpp) of the channel of
  /// `channel_key`.
  std::string token(std::string_view channel_key) const;

 private:
  struct Cursor {
    std::uint64_t sequence = 0;
    std::uint64_t xid = 0;  // of the last row delivered; 0: unknown
  };

  bool started_ = false;
  PgSnapshot snapshot_;
  std::map<std::string, Cursor> cursors_;
};

}  // namespace syncbus::detail
