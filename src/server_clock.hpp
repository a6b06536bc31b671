#pragma once
// The database server's clock, as this process can know it: read once over
// a connection (clock_timestamp(), half a round trip late at most), then
// carried forward by this process's monotonic clock. Every bus on a channel
// reads the same server, so their estimates agree to within a round trip,
// whatever the machines' own clocks say, and a wall-clock step on this
// machine changes nothing. The server's own clock may step (an NTP
// correction, a virtual machine resumed): each bus reads it again every
// recalibrate_every, so that estimates taken before and after a step agree
// again within that. Used for when envelopes were sent ("sent"): their
// freshness when signed (docs/SECURITY.md), and BusStats::delivery_lag.
// Thread-safe.

#include <pqxx/connection_base>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>

namespace syncbus::detail {

class ServerClock {
 public:
  using Clock = std::chrono::steady_clock;

  /// How long an estimate is used before the server's clock is read again.
  static constexpr std::chrono::seconds recalibrate_every{10};

  /// Reads the server's time over `session` (one round trip; call it under
  /// a statement deadline).
  void calibrate(pqxx::connection_base& session);
  /// The server said `server_ms` (ms since the Unix epoch) between `asked`
  /// and `answered`.
  void calibrate(std::int64_t server_ms, Clock::time_point asked, Clock::time_point answered);

  /// Milliseconds since the Unix epoch by the server's clock; 0 before the
  /// first calibration.
  std::uint64_t now_ms() const;

  /// When the server's clock said `server_ms`, on this process's monotonic
  /// clock; nullopt before the first calibration, for 0 (not said), and for
  /// a time later than now by more than future_tolerance or more than ten
  /// years ago (a peer's nonsense, or a clock far off).
  std::optional<Clock::time_point> local_time_of(std::uint64_t server_ms) const;
  /// How far ahead of this estimate another bus's may be: each is half a
  /// round trip off at most, and read again every recalibrate_every.
  static constexpr std::chrono::milliseconds future_tolerance{2000};

  /// When the estimate is due to be read again (at once before the first
  /// calibration).
  Clock::time_point next_due() const;
  bool due(Clock::time_point now = Clock::now()) const { return now >= next_due(); }

 private:
  mutable std::mutex mutex_;
  std::int64_t server_ms_ = 0;
  Clock::time_point at_{};
};

}  // namespace syncbus::detail
