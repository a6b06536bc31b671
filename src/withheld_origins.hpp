#pragma once
// The origins a bus's delivery stage holds back, to read their messages back
// from the spill table instead, in order. An origin is withheld from a
// sequence on when its message there could not be taken: the delivery queue
// was full (QueueFullPolicy::drop_and_reread), or its spill row could not be
// read (a server error: a lock timeout, a cancelled statement). From then on
// every message of that origin is dropped on arrival, so that nothing
// overtakes what is to be read back, until a read from the table has caught
// up with everything known of it.
//
// Known: the highest sequence of the origin seen since it was withheld,
// from a message, a lost publish or a heartbeat. Every sequence up to it was
// committed (or failed) before it was seen; so a read that begins after it
// was seen, and finds no row for it, proves it lost. The hold is lifted only
// when a read reaches the end of the table having started after the newest
// known sequence: what arrives while a read runs is read again, never lost.
//
// Pure bookkeeping, no threads and no I/O: the delivery queue owns one and
// uses it under its lock; the listener does the reads it asks for.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace syncbus::detail {

class WithheldOrigins {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Why {
    /// The delivery queue was full: read back as soon as it has room.
    queue_full,
    /// The spill row could not be read: read back after a pause.
    fetch_failed,
  };

  /// Withholds `origin` from `sequence` on, `sequence` being known (a hold
  /// that exists already keeps its start and its pause).
  void withhold(const std::string& origin, std::uint64_t sequence, Why why, Clock::time_point now);

  /// When `origin` is withheld at `sequence`: remembers `sequence` as known
  /// and returns why it is withheld (the message is then dropped).
  std::optional<Why> absorb(const std::string& origin, std::uint64_t sequence);

  /// Each withheld origin, and the first sequence it holds back.
  std::vector<std::pair<std::string, std::uint64_t>> held_from() const;

  bool empty() const noexcept { return holds_.empty(); }
  std::size_t size() const noexcept { return holds_.size(); }

  /// A read to make: `origin`'s rows from `from` on. `known_to` is what was
  /// known of it when the read was asked for (see the file comment).
  struct Read {
    std::string origin;
    std::uint64_t from = 0;
    std::uint64_t known_to = 0;
  };
  /// The next origin due at `now`, taking turns; none when none is due.
  std::optional<Read> next(Clock::time_point now);
  /// When the next hold is due (Clock::time_point::max() when none).
  Clock::time_point next_due() const noexcept;

  /// What a finished read settled.
  struct Settled {
    /// Sequences known but absent from the table: lost (an exact gap).
    std::optional<std::pair<std::uint64_t, std::uint64_t>> lost;
    /// The hold is lifted: the origin's messages are taken again.
    bool lifted = false;
  };
  /// `read` was made: the rows before `next` were taken. `reached_end`:
  /// the table holds no more of the origin (a short page, all taken); false
  /// when the page was full or the queue's room ran out (more to read).
  Settled settle(const Read& read, std::uint64_t next, bool reached_end, Clock::time_point now);

  /// `read` failed: it is made again after a pause that doubles with each
  /// failure in a row, from 100 ms up to 5 s. Returns the pause.
  std::chrono::milliseconds failed(const Read& read, Clock::time_point now);

 private:
  struct Hold {
    std::uint64_t from = 0;
    std::uint64_t known_to = 0;
    Why why = Why::queue_full;
    Clock::time_point due;
    unsigned failures = 0;
  };
  std::map<std::string, Hold> holds_;
  std::string last_served_;  // turns are taken in name order after this one
};

}  // namespace syncbus::detail
