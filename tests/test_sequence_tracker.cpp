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

TEST(SequenceTracker, AnOriginBornAfterThisBusIsOwedEverythingFromOne) {
  SequenceTracker tracker;
  const auto verdict = tracker.on_message("new", 6, /*origin_is_new=*/true);
  EXPECT_TRUE(verdict.deliver);
  ASSERT_TRUE(verdict.gap);
  EXPECT_EQ(verdict.gap->first_missing, 1u);
  EXPECT_EQ(verdict.gap->last_missing, 5u);
  EXPECT_FALSE(tracker.on_message("new-from-one", 1, true).gap);
  EXPECT_FALSE(tracker.on_message("old", 6, /*origin_is_new=*/false).gap);
  const auto heartbeat = tracker.on_heartbeat("new-heartbeat", 3, true);
  ASSERT_TRUE(heartbeat) << "its first publishes failed: 1..3 are missing";
  EXPECT_EQ(heartbeat->first_missing, 1u);
  EXPECT_EQ(heartbeat->last_missing, 3u);
}

TEST(SequenceTracker, AGoodbyeIsAHeartbeatThenTheOriginIsForgotten) {
  SequenceTracker forgetting;
  forgetting.on_message("a", 1);
  const auto gap = forgetting.on_goodbye("a", 3);
  ASSERT_TRUE(gap);
  EXPECT_EQ(gap->first_missing, 2u);
  EXPECT_EQ(forgetting.origins(), 0u);
  SequenceTracker remembering(/*forget_on_goodbye=*/false);
  remembering.on_message("a", 1);
  remembering.on_goodbye("a", 1);
  EXPECT_EQ(remembering.origins(), 1u);
  EXPECT_FALSE(remembering.on_message("a", 1).deliver) << "a replay is still a duplicate";
}

TEST(SequenceTracker, AStaleMessageIsAGapOnlyForAKnownOriginThatHadNotHadIt) {
  SequenceTracker tracker;
  EXPECT_FALSE(tracker.on_stale("unknown", 4)) << "could be a replay of a forgotten origin";
  EXPECT_EQ(tracker.origins(), 0u);
  tracker.on_message("a", 3);
  EXPECT_FALSE(tracker.on_stale("a", 2)) << "a replay of something delivered";
  const auto gap = tracker.on_stale("a", 4);
  ASSERT_TRUE(gap);
  EXPECT_EQ(gap->first_missing, 4u);
  EXPECT_EQ(gap->last_missing, 4u);
}

TEST(SequenceTracker, OriginsSilentForLongAreForgotten) {
  SequenceTracker tracker;
  tracker.on_message("quiet", 1);
  tracker.on_message("chatty", 1);
  for (std::uint64_t sweep = 1; sweep <= 30; ++sweep) {
    EXPECT_EQ(tracker.sweep(30), 0u);
    tracker.on_heartbeat("chatty", 1);
  }
  EXPECT_EQ(tracker.sweep(30), 1u) << "silent for 31 sweeps";
  EXPECT_EQ(tracker.origins(), 1u);
  EXPECT_FALSE(tracker.on_message("chatty", 1).deliver);
}

TEST(SequenceTracker, AMessageSignedBeforeItsOriginSpokeFreshlyIsAGapNotADelivery) {
  SequenceTracker tracker;
  for (std::uint64_t s = 1; s <= 3; ++s) {
    const auto verdict = tracker.on_message("replayed", s, false, /*signature_predates=*/true);
    EXPECT_FALSE(verdict.deliver) << s;
    ASSERT_TRUE(verdict.gap) << s;
    EXPECT_EQ(verdict.gap->first_missing, s);
  }
  EXPECT_FALSE(tracker.on_message("replayed", 2, false, true).gap) << "nothing new: nothing said";
  const auto fresh = tracker.on_message("replayed", 4);
  EXPECT_TRUE(fresh.deliver);
  EXPECT_FALSE(fresh.gap);
  // Once it spoke for itself, a slow commit signed earlier is taken.
  EXPECT_TRUE(tracker.on_message("replayed", 5, false, true).deliver);
  // A fresh heartbeat vouches for an origin too.
  tracker.on_heartbeat("beating", 10);
  EXPECT_TRUE(tracker.on_message("beating", 11, false, true).deliver);
}

// A listener that reconnected without reading what it missed (a connection
// reset): a signed message sent meanwhile, replayed to it later, must not
// pass for one it heard, even of an origin that had spoken freshly before.
TEST(SequenceTracker, AfterAConnectionResetAMessageSignedBeforeItIsAGapUntilTheOriginSpeaksAgain) {
  SequenceTracker tracker;
  EXPECT_TRUE(tracker.on_message("peer", 1).deliver);
  tracker.connection_reset();
  const auto replayed = tracker.on_message("peer", 3, false, /*signature_predates=*/true);
  EXPECT_FALSE(replayed.deliver);
  ASSERT_TRUE(replayed.gap);
  EXPECT_EQ(replayed.gap->first_missing, 2u);
  EXPECT_EQ(replayed.gap->last_missing, 3u);
  const auto fresh = tracker.on_message("peer", 4);
  EXPECT_TRUE(fresh.deliver);
  EXPECT_FALSE(fresh.gap);
  EXPECT_EQ(tracker.origins(), 1u) << "still known: a reset forgets no origin";
}

TEST(SequenceTracker, AFloodOfOriginsIsBoundedForgettingTheLongestSilentFirst) {
  SequenceTracker tracker;
  tracker.on_message("old", 1);
  tracker.sweep(1000);
  tracker.on_message("recent", 1);
  for (std::size_t i = 0; tracker.origins() < SequenceTracker::max_origins; ++i) {
    tracker.on_heartbeat("made-up-" + std::to_string(i), 1);
  }
  EXPECT_EQ(tracker.origins(), SequenceTracker::max_origins);
  tracker.on_heartbeat("one-more", 1);
  EXPECT_LE(tracker.origins(), SequenceTracker::max_origins);
  EXPECT_TRUE(tracker.on_message("old", 1).deliver) << "forgotten first: heard longest ago";
  EXPECT_FALSE(tracker.on_message("one-more", 1).deliver) << "the newest is kept";
}

TEST(SequenceTracker, UnknownRangeGapHasNoCount) {
  GapEvent unknown;
  EXPECT_FALSE(unknown.range_known());
  EXPECT_EQ(unknown.count(), 0u);
}

// A replay suspect (inline, signed before a durable bus last reconnected)
// is never delivered, even from an origin that has spoken freshly: a gap.
TEST(SequenceTracker, AReplaySuspectIsAGapEvenFromAFreshOrigin) {
  SequenceTracker tracker;
  EXPECT_TRUE(tracker.on_message("a", 1, /*origin_is_new=*/true).deliver);
  const auto suspect = tracker.on_message("a", 2, false, false, /*replay_suspect=*/true);
  EXPECT_FALSE(suspect.deliver);
  ASSERT_TRUE(suspect.gap.has_value());
  EXPECT_EQ(suspect.gap->first_missing, 2u);
  EXPECT_EQ(suspect.gap->last_missing, 2u);
  EXPECT_TRUE(tracker.on_message("a", 3).deliver) << "the origin's next message";
}

}  // namespace
}  // namespace syncbus::detail
