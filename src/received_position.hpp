#pragma once
// How far a listener has read the channel, in PostgreSQL's own terms: a
// snapshot (PgSnapshot) such that every notification of every transaction
// visible in it has been received and handed on. After a lost connection,
// a durable listener (SpillMode::always) reads from the spill table exactly
// the rows whose transactions are not visible in it (docs/PROTOCOL.md,
// "Catching up"). No clock is involved, so neither a slow catch-up nor a
// transaction that commits an hour late can fall outside a margin.
//
// The position advances with markers: in one transaction on its listening
// connection, the listener takes pg_current_snapshot() and NOTIFYs a private
// channel it also listens on. PostgreSQL queues a transaction's
// notifications at pre-commit, under a lock held through its commit, and a
// listening backend reads the queue in order; so a transaction visible in
// the marker's snapshot (committed before it was taken) queued its
// notifications before the marker's own. Once the marker comes back and
// everything received before it has been handed on, its snapshot is the new
// position (NotifyOrderTest shows it on a real server). Erring on the old
// side costs only rows read again.
//
// It also remembers, per origin, the highest sequence handed on since the
// position was taken, so that a catch-up does not fetch and deliver again
// what was handed on after the position but before the connection broke.
//
// Pure: no I/O, no threads; the listener thread owns one.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "pg_snapshot.hpp"

namespace syncbus::detail {

class ReceivedPosition {
 public:
  using Clock = std::chrono::steady_clock;

  /// While messages flow, a marker at most this often; while idle, still
  /// this often, so that a catch-up's range of transaction ids (shared with
  /// other channels of the table) stays short.
  static constexpr std::chrono::milliseconds busy_marker_interval{1000};
  static constexpr std::chrono::milliseconds idle_marker_interval{10000};

  /// The first connection is listening, and `snapshot` was taken after its
  /// LISTEN took effect: everything committed after it will be received.
  /// What is visible in it is from before this bus; an origin born before
  /// it is older than this bus.
  void start(const PgSnapshot& snapshot, Clock::time_point now);
  bool started() const noexcept { return started_; }

  /// The snapshot taken when the bus started listening.
  const PgSnapshot& start_snapshot() const noexcept { return start_; }
  /// Every notification of a transaction visible in this was received.
  const PgSnapshot& confirmed() const noexcept { return confirmed_; }

  /// An origin whose birth transaction (PROTOCOL.md: `born`) is not visible
  /// in the start snapshot was born after this bus started listening.
  bool origin_is_new(std::optional<std::uint64_t> born) const noexcept {
    return born.has_value() && !start_.visible(*born);
  }

  /// True when a marker should be sent now.
  bool marker_due(Clock::time_point now) const noexcept { return now >= next_marker_due(); }
  /// When the next marker is due (Clock's max while one is in flight).
  Clock::time_point next_marker_due() const noexcept;
  /// A marker carrying `token` was sent, in a transaction that took
  /// `snapshot`. The token is random: anyone who could NOTIFY the private
  /// channel could otherwise move the position forward, past transactions
  /// the listener has not received.
  void marker_sent(std::string token, const PgSnapshot& snapshot, Clock::time_point now);
  /// Sending it failed (a server error): the position stays, and the next
  /// one is due an interval later.
  void marker_failed(Clock::time_point now) noexcept { last_sent_ = now; }
  /// A marker came back on the private channel, after everything received
  /// before it was handed on: its snapshot becomes the position. False
  /// when it is not the marker in flight (nothing changes).
  bool marker_returned(const std::string& token);
  /// The connection broke: a marker in flight will never come back.
  void connection_lost();
  /// A catch-up has read everything visible in `cutoff` (and not in the
  /// old position): `cutoff` is the position.
  void caught_up(const PgSnapshot& cutoff);

  /// `origin`'s `sequence` was handed on.
  void handed_on(const std::string& origin, std::uint64_t sequence);
  /// True when `origin`'s `sequence` was handed on since the position was
  /// taken (a catch-up skips it).
  bool already_handed_on(const std::string& origin, std::uint64_t sequence) const;

 private:
  using Highest = std::unordered_map<std::string, std::uint64_t>;

  bool started_ = false;
  PgSnapshot start_;
  PgSnapshot confirmed_;
  struct Marker {
    std::string token;
    PgSnapshot snapshot;
  };
  std::optional<Marker> in_flight_;
  Clock::time_point last_sent_{};
  bool handed_on_since_sent_ = false;
  // The highest sequence handed on per origin, since the confirmed
  // position was taken, and since the marker in flight was sent.
  Highest since_confirmed_;
  Highest since_in_flight_;
};

}  // namespace syncbus::detail
