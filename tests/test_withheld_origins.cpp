// WithheldOrigins: the bookkeeping of origins held back to be read back from
// the spill table, driven directly, clock and all.
#include "withheld_origins.hpp"

#include <gtest/gtest.h>

namespace syncbus::detail {
namespace {

using namespace std::chrono_literals;
using Why = WithheldOrigins::Why;
const auto t0 = WithheldOrigins::Clock::time_point{} + 1h;

TEST(WithheldOrigins, AbsorbsAnOriginsMessagesFromWhereItWasWithheld) {
  WithheldOrigins held;
  held.withhold("a", 5, Why::queue_full, t0);
  EXPECT_FALSE(held.absorb("a", 4));
  EXPECT_EQ(held.absorb("a", 5), Why::queue_full);
  EXPECT_EQ(held.absorb("a", 9), Why::queue_full);
  EXPECT_FALSE(held.absorb("b", 9));
  const auto read = held.next(t0);
  ASSERT_TRUE(read);
  EXPECT_EQ(read->origin, "a");
  EXPECT_EQ(read->from, 5u);
  EXPECT_EQ(read->known_to, 9u);
}

TEST(WithheldOrigins, IsLiftedOnlyByAReadThatBeganAfterEverythingKnown) {
  WithheldOrigins held;
  held.withhold("a", 5, Why::queue_full, t0);
  const auto read = held.next(t0);
  ASSERT_TRUE(read);
  held.absorb("a", 6);  // arrives while the read runs
  auto settled = held.settle(*read, 6, /*reached_end=*/true, t0);
  EXPECT_FALSE(settled.lost);
  EXPECT_FALSE(settled.lifted);
  const auto again = held.next(t0);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->from, 6u);
  settled = held.settle(*again, 7, true, t0);
  EXPECT_TRUE(settled.lifted);
  EXPECT_TRUE(held.empty());
}

TEST(WithheldOrigins, WhatAReadFindsNoRowForIsLost) {
  WithheldOrigins held;
  held.withhold("a", 5, Why::queue_full, t0);
  held.absorb("a", 9);  // a heartbeat: 9 is the last published
  const auto read = held.next(t0);
  ASSERT_TRUE(read);
  const auto settled = held.settle(*read, 7, true, t0);  // rows 5 and 6 only
  ASSERT_TRUE(settled.lost);
  EXPECT_EQ(settled.lost->first, 7u);
  EXPECT_EQ(settled.lost->second, 9u);
  EXPECT_TRUE(settled.lifted);
}

TEST(WithheldOrigins, APageThatDidNotReachTheEndKeepsTheHold) {
  WithheldOrigins held;
  held.withhold("a", 1, Why::queue_full, t0);
  held.absorb("a", 500);
  const auto read = held.next(t0);
  const auto settled = held.settle(*read, 257, /*reached_end=*/false, t0);
  EXPECT_FALSE(settled.lost);
  EXPECT_FALSE(settled.lifted);
  EXPECT_EQ(held.next(t0)->from, 257u);
}

TEST(WithheldOrigins, AFailedFetchIsRetriedAfterADoublingPauseAndOthersTakeTurns) {
  WithheldOrigins held;
  held.withhold("a", 1, Why::fetch_failed, t0);
  held.withhold("b", 1, Why::queue_full, t0);
  auto read = held.next(t0);
  ASSERT_TRUE(read);
  EXPECT_EQ(read->origin, "b") << "a waits for its pause";
  EXPECT_EQ(held.next_due(), t0);
  held.settle(*read, 1, /*reached_end=*/false, t0);
  read = held.next(t0 + 100ms);
  ASSERT_TRUE(read);
  EXPECT_EQ(read->origin, "a");
  EXPECT_EQ(held.failed(*read, t0 + 100ms), 200ms);
  EXPECT_EQ(held.failed(*read, t0 + 100ms), 400ms);
  for (int i = 0; i < 10; ++i) held.failed(*read, t0);
  EXPECT_EQ(held.failed(*read, t0), 5000ms) << "at most every 5 s";
  EXPECT_EQ(held.next(t0 + 1s)->origin, "b") << "a is pausing: b's turn, again";
  EXPECT_EQ(held.next(t0 + 5s)->origin, "a") << "a is due again, and it is its turn";
}

}  // namespace
}  // namespace syncbus::detail
