// The server's clock as a bus estimates it: carried forward by the monotonic
// clock, and due to be read again every ServerClock::recalibrate_every.
#include <gtest/gtest.h>

#include "server_clock.hpp"

namespace syncbus::detail {
namespace {

using namespace std::chrono_literals;
using Clock = ServerClock::Clock;

TEST(ServerClock, IsDueAtOnceBeforeItHasBeenRead) {
  ServerClock clock;
  EXPECT_EQ(clock.now_ms(), 0u);
  EXPECT_TRUE(clock.due());
}

TEST(ServerClock, CarriesTheServersTimeForwardFromTheMiddleOfTheRoundTrip) {
  ServerClock clock;
  const auto answered = Clock::now();
  clock.calibrate(1'000'000, answered - 2s, answered);  // read 1 s ago, in the middle
  const auto now = clock.now_ms();
  EXPECT_GE(now, 1'001'000u);
  EXPECT_LT(now, 1'001'500u);
}

TEST(ServerClock, TellsWhenATimeOnTheServersClockWasHere) {
  ServerClock clock;
  EXPECT_FALSE(clock.local_time_of(1'000'000).has_value()) << "not read yet";
  const auto answered = Clock::now();
  clock.calibrate(1'000'000, answered - 2s, answered);  // said 1'000'000 at answered - 1 s
  EXPECT_EQ(clock.local_time_of(1'000'000), answered - 1s);
  EXPECT_EQ(clock.local_time_of(999'750), answered - 1250ms);
  EXPECT_EQ(clock.local_time_of(1'001'500), answered + 500ms);
  // Later than now by more than two estimates may disagree: no time.
  EXPECT_FALSE(clock.local_time_of(1'001'000 + 60'000).has_value());
  EXPECT_FALSE(clock.local_time_of(0).has_value()) << "0: not said";
  // What a hostile peer may write in `sent`: no time, and no overflow.
  EXPECT_FALSE(clock.local_time_of(UINT64_MAX).has_value());
  EXPECT_FALSE(clock.local_time_of(9'223'372'036'854'775'807u).has_value());
}

TEST(ServerClock, ATimeFarAheadOrYearsAgoIsNoTime) {
  ServerClock clock;
  const auto now = Clock::now();
  constexpr std::uint64_t server_now = 1'790'000'000'000;
  clock.calibrate(static_cast<std::int64_t>(server_now), now, now);
  EXPECT_TRUE(clock.local_time_of(server_now - 3'600'000).has_value()) << "an hour ago";
  EXPECT_TRUE(clock.local_time_of(server_now - 9ull * 365 * 86'400'000).has_value());
  EXPECT_FALSE(clock.local_time_of(server_now - 11ull * 366 * 86'400'000).has_value());
  EXPECT_TRUE(clock.local_time_of(server_now + 1000).has_value()) << "a clock a second ahead";
  EXPECT_FALSE(clock.local_time_of(server_now + 30'000).has_value()) << "half a minute ahead";
}

// A step of the server's clock (an NTP correction, a virtual machine
// resumed) reaches the estimate when it is read again: every bus reads it
// within recalibrate_every, so estimates taken before and after agree again.
TEST(ServerClock, IsDueAgainAfterRecalibrateEveryAndTakesAStepWhenReadAgain) {
  ServerClock clock;
  const auto start = Clock::now();
  clock.calibrate(1'000'000, start, start);
  EXPECT_FALSE(clock.due(start + ServerClock::recalibrate_every - 1ms));
  EXPECT_TRUE(clock.due(start + ServerClock::recalibrate_every));
  EXPECT_EQ(clock.next_due(), start + ServerClock::recalibrate_every);
  const auto later = Clock::now();
  clock.calibrate(1'000'000 + 900'000, later, later);  // the server stepped 15 min ahead
  EXPECT_GE(clock.now_ms(), 1'900'000u);
  EXPECT_FALSE(clock.due(later + 1s));
}

}  // namespace
}  // namespace syncbus::detail
