#include "server_clock.hpp"

#include <pqxx/nontransaction>

namespace syncbus::detail {

void ServerClock::calibrate(pqxx::connection_base& session) {
  const auto asked = Clock::now();
  const auto server_ms =
      pqxx::nontransaction(session)
          .exec1("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")[0]
          .as<std::int64_t>();
  calibrate(server_ms, asked, Clock::now());
}

void ServerClock::calibrate(std::int64_t server_ms, Clock::time_point asked,
                            Clock::time_point answered) {
  std::lock_guard<std::mutex> lock(mutex_);
  server_ms_ = server_ms;
  // The server read its clock somewhere in the round trip: say halfway.
  at_ = asked + (answered - asked) / 2;
}

std::uint64_t ServerClock::now_ms() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (server_ms_ == 0) return 0;
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - at_);
  return static_cast<std::uint64_t>(server_ms_ + elapsed.count());
}

std::optional<ServerClock::Clock::time_point> ServerClock::local_time_of(
    std::uint64_t server_ms) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (server_ms_ == 0 || server_ms == 0) return std::nullopt;
  // A peer may say anything. Later than now by more than two estimates of
  // this clock can disagree (a second or so), or years ago, is no time at
  // all (and in nanoseconds, centuries would overflow the clock's range).
  constexpr std::uint64_t ten_years_ms = 10ull * 366 * 24 * 3600 * 1000;
  const auto now_ms = static_cast<std::uint64_t>(
      server_ms_ +
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - at_).count());
  if (server_ms > now_ms + static_cast<std::uint64_t>(future_tolerance.count()) ||
      server_ms + ten_years_ms < now_ms) {
    return std::nullopt;
  }
  return at_ + std::chrono::milliseconds(static_cast<std::int64_t>(server_ms) - server_ms_);
}

ServerClock::Clock::time_point ServerClock::next_due() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (server_ms_ == 0) return Clock::time_point::min();
  return at_ + recalibrate_every;
}

}  // namespace syncbus::detail
