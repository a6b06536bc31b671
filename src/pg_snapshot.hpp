#pragma once
// A PostgreSQL snapshot (type pg_snapshot, PostgreSQL 13+): which
// transactions had finished when it was taken. Pure: no I/O, no threads.
//
// Text form, as pg_current_snapshot()::text prints it:
//
//   xmin:xmax:xip1,xip2,...      e.g. "745:752:745,749"
//
// Every transaction id below xmin had finished; none at or above xmax had;
// between them, those listed (xip: "in progress") had not. A transaction id
// is an xid8 (pg_current_xact_id()): 64 bits, an epoch above a 32-bit xid,
// never reused.
//
// The bus reasons about delivery with snapshots instead of clocks: a spill
// row records its writer's transaction id, and "the rows committed after S"
// are exactly those whose id is not visible in S (docs/PROTOCOL.md).

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace syncbus::detail {

class PgSnapshot {
 public:
  /// The empty snapshot "1:1:": nothing finished (no id is visible in it).
  PgSnapshot() = default;

  /// Parses the text form; throws protocol_error for anything else
  /// (including xip ids out of order or outside [xmin, xmax)).
  static PgSnapshot parse(std::string_view text);
  /// The snapshot of these parts; throws protocol_error as parse() does.
  static PgSnapshot of(std::uint64_t xmin, std::uint64_t xmax,
                       std::vector<std::uint64_t> in_progress);

  /// True when transaction `xid` had finished when the snapshot was taken
  /// (committed or aborted: only committed ones leave rows behind), as
  /// pg_visible_in_snapshot(xid, snapshot) says.
  bool visible(std::uint64_t xid) const noexcept;

  std::uint64_t xmin() const noexcept { return xmin_; }
  std::uint64_t xmax() const noexcept { return xmax_; }
  /// The ids between xmin and xmax still in progress, ascending.
  const std::vector<std::uint64_t>& in_progress() const noexcept { return in_progress_; }

  /// The ids below `below` that are not visible in this snapshot, as
  /// ascending ranges [first, second): each id in progress alone, then
  /// [xmax, below) in pieces at most `span` wide. What a reader lists to
  /// find the rows committed after this snapshot.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> invisible_ranges(std::uint64_t below,
                                                                        std::uint64_t span) const;

  /// The text form, as PostgreSQL reads it back (`$1::pg_snapshot`).
  std::string text() const;

  friend bool operator==(const PgSnapshot& a, const PgSnapshot& b) noexcept {
    return a.xmin_ == b.xmin_ && a.xmax_ == b.xmax_ && a.in_progress_ == b.in_progress_;
  }

 private:
  std::uint64_t xmin_ = 1;
  std::uint64_t xmax_ = 1;
  std::vector<std::uint64_t> in_progress_;
};

/// Parses a transaction id (xid8) in decimal; throws protocol_error.
std::uint64_t parse_xid(std::string_view text);

}  // namespace syncbus::detail
