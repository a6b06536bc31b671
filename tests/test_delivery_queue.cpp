// The delivery queue's bounds, driven directly: what a full queue keeps, drops
// and reports, counted in messages and in bytes of bodies.
#include <gtest/gtest.h>

#include "delivery_queue.hpp"
#include "test_support.hpp"

namespace syncbus::detail {
namespace {

using namespace std::chrono_literals;
using testing::Collector;
using testing::EventLog;
using testing::HeldSubscription;

Inbound message(std::uint64_t sequence, std::size_t body_bytes) {
  Inbound item{Inbound::Kind::message, {"origin-a", sequence, sequence}};
  item.body_bytes = body_bytes;
  return item;
}

std::vector<std::uint64_t> sequences(const Collector& seen) {
  std::vector<std::uint64_t> out;
  for (const auto& m : seen.messages()) out.push_back(m.sequence);
  return out;
}

struct BoundedQueue {
  explicit BoundedQueue(DeliveryQueue::Capacity capacity,
                        QueueFullPolicy policy = QueueFullPolicy::drop_and_report_gap)
      : queue({}, log.gap_handler(), stats, capacity, policy) {}

  EventLog log;
  std::shared_ptr<StatsCounters> stats = std::make_shared<StatsCounters>();
  DeliveryQueue queue;
  HeldSubscription held{queue};
  Collector seen;
  Subscription recorded = queue.subscribe(seen.handler());
};

TEST(DeliveryQueue, IsFullWhenItsBodiesReachTheByteBoundAndReportsWhatItDroppedAsAnExactGap) {
  BoundedQueue q({1000, 10'000});
  q.queue.post(message(1, 1000));
  ASSERT_TRUE(q.held.wait_until_held());
  // 2..11 are 10,000 bytes: they fit exactly, far below the message bound.
  for (std::uint64_t s = 2; s <= 20; ++s) q.queue.post(message(s, 1000));
  EXPECT_EQ(q.stats->dropped_queue_full.load(), 9u);
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));

  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  const auto gaps = q.log.gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].origin, "origin-a");
  EXPECT_EQ(gaps[0].first_missing, 12u);
  EXPECT_EQ(gaps[0].last_missing, 20u);
}

TEST(DeliveryQueue, TakesAMessageLargerThanTheByteBoundWhenItIsAlone) {
  BoundedQueue q({1000, 100});
  q.queue.post(message(1, 10));
  ASSERT_TRUE(q.held.wait_until_held());
  q.queue.post(message(2, 5000));  // alone in the queue: taken
  q.queue.post(message(3, 1));     // behind 5,000 bytes: dropped
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));
  q.queue.post(message(4, 5000));  // the queue has emptied: taken again
  ASSERT_TRUE(q.queue.wait_idle(10s));

  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 4}));
  const auto gaps = q.log.gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].first_missing, 3u);
  EXPECT_EQ(gaps[0].last_missing, 3u);
}

TEST(DeliveryQueue, TheMessageBoundStillHoldsForSmallBodies) {
  BoundedQueue q({5, 1'000'000});
  q.queue.post(message(1, 1));
  ASSERT_TRUE(q.held.wait_until_held());
  for (std::uint64_t s = 2; s <= 10; ++s) q.queue.post(message(s, 1));
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(q.stats->dropped_queue_full.load(), 4u);
}

TEST(DeliveryQueue, ReadsBackOnlyWhatFitsTheByteBoundAndTheRestLater) {
  BoundedQueue q({1000, 3000}, QueueFullPolicy::drop_and_reread);
  q.queue.post(message(1, 1000));
  ASSERT_TRUE(q.held.wait_until_held());
  for (std::uint64_t s = 2; s <= 5; ++s) q.queue.post(message(s, 1000));  // 5 is dropped
  EXPECT_FALSE(q.queue.next_reread()) << "no room in bytes: nothing to read back yet";
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));

  auto request = q.queue.next_reread();
  ASSERT_TRUE(request);
  EXPECT_EQ(request->origin, "origin-a");
  EXPECT_EQ(request->from_sequence, 5u);
  std::vector<Inbound> rows;
  for (std::uint64_t s = 5; s <= 9; ++s) rows.push_back(message(s, 1000));
  // 5, 6 and 7 fill the 3,000 bytes; 8 and 9 wait.
  q.queue.post_reread("origin-a", std::move(rows), 10, /*reached_end=*/true);
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7}));

  request = q.queue.next_reread();
  ASSERT_TRUE(request) << "8 and 9 are still to be read back";
  EXPECT_EQ(request->from_sequence, 8u);
  rows.clear();
  for (std::uint64_t s = 8; s <= 9; ++s) rows.push_back(message(s, 1000));
  q.queue.post_reread("origin-a", std::move(rows), 10, /*reached_end=*/true);
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_FALSE(q.queue.next_reread()) << "nothing is withheld any more";
  EXPECT_TRUE(q.log.gaps().empty()) << "nothing was lost";
}

}  // namespace
}  // namespace syncbus::detail
