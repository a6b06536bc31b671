#include "sequence_tracker.hpp"

#include <gtest/gtest.h>

namespace syncbus::detail {
namespace {

TEST(SequenceTracker, FirstMessageOfAnOriginSetsTheBaseline) {
  SequenceTracker tracker;
  const auto verdict = tracker.on_message("a", 57);
  EXPECT_TRUE(verdict.deliver);
  EXPECT_FALSE(verdict.gap);
  EXPECT_TRUE(tracker.on_message("a", 58).deliver);
}

TEST(SequenceTracker, InOrderMessagesPassWithoutGaps) {
  SequenceTracker tracker;
  for (std::uint64_t seq = 1; seq <= 100; ++seq) {
    const auto verdict = tracker.on_message("a", seq);
    EXPECT_TRUE(verdict.deliver);
    EXPECT_FALSE(verdict.gap);
  }
}

TEST(SequenceTracker, RepeatsAndOlderNumbersAreDuplicates) {
  SequenceTracker tracker;
  tracker.on_message("a", 1);
  tracker.on_message("a", 2);
  EXPECT_FALSE(tracker.on_message("a", 2).deliver);
  EXPECT_FALSE(tracker.on_message("a", 1).deliver);
  EXPECT_TRUE(tracker.on_message("a", 3).deliver);
}

TEST(SequenceTracker, AJumpIsAGapOfExactlyTheSkippedNumbers) {
  SequenceTracker tracker;
  tracker.on_message("a", 4);
  const auto verdict = tracker.on_message("a", 9);
  EXPECT_TRUE(verdict.deliver);
  ASSERT_TRUE(verdict.gap);
  EXPECT_EQ(verdict.gap->origin, "a");
  EXPECT_EQ(verdict.gap->first_missing, 5u);
  EXPECT_EQ(verdict.gap->last_missing, 8u);
  EXPECT_EQ(verdict.gap->count(), 4u);
  EXPECT_FALSE(tracker.on_message("a", 10).gap);
  // A message from inside a reported gap, arriving late, is not delivered out
  // of order: the engine already resyncs for it.
  EXPECT_FALSE(tracker.on_message("a", 6).deliver);
}

TEST(SequenceTracker, OriginsAreIndependent) {
  SequenceTracker tracker;
  tracker.on_message("a", 1);
  tracker.on_message("b", 1);
  EXPECT_FALSE(tracker.on_message("b", 2).gap);
  EXPECT_FALSE(tracker.on_message("a", 2).gap);
  EXPECT_EQ(tracker.origins(), 2u);
}

TEST(SequenceTracker, HeartbeatRevealsALossAtTheTail) {
  SequenceTracker tracker;
  tracker.on_message("a", 1);
  tracker.on_message("a", 2);
  EXPECT_FALSE(tracker.on_heartbeat("a", 2));  // all seen
  const auto gap = tracker.on_heartbeat("a", 5);
  ASSERT_TRUE(gap);
  EXPECT_EQ(gap->first_missing, 3u);
  EXPECT_EQ(gap->last_missing, 5u);
  EXPECT_FALSE(tracker.on_heartbeat("a", 5));  // reported once
  EXPECT_FALSE(tracker.on_message("a", 6).gap);
}

TEST(SequenceTracker, HeartbeatOfAnUnknownOriginSetsTheBaseline) {
  SequenceTracker tracker;
  EXPECT_FALSE(tracker.on_heartbeat("a", 7));
  EXPECT_FALSE(tracker.on_message("a", 8).gap);
  EXPECT_FALSE(tracker.on_message("a", 8).deliver);
}

TEST(SequenceTracker, DroppedRangeIsAGapEvenForANewOrigin) {
  SequenceTracker tracker;
  const auto gap = tracker.on_dropped("new", 1, 4);
  ASSERT_TRUE(gap);
  EXPECT_EQ(gap->first_missing, 1u);
  EXPECT_EQ(gap->last_missing, 4u);
  EXPECT_FALSE(tracker.on_message("new", 5).gap);
}

TEST(SequenceTracker, DroppedRangeOnlyReportsWhatWasNotDelivered) {
  SequenceTracker tracker;
  tracker.on_message("a", 5);
  EXPECT_FALSE(tracker.on_dropped("a", 3, 5));  // all delivered already
  const auto gap = tracker.on_dropped("a", 4, 9);
  ASSERT_TRUE(gap);
  EXPECT_EQ(gap->first_missing, 6u);
  EXPECT_EQ(gap->last_missing, 9u);
  EXPECT_FALSE(tracker.on_message("a", 8).deliver);
}

TEST(SequenceTracker, UnknownRangeGapHasNoCount) {
  GapEvent unknown;
  EXPECT_FALSE(unknown.range_known());
  EXPECT_EQ(unknown.count(), 0u);
}

}  // namespace
}  // namespace syncbus::detail
