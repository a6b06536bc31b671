// The in-memory bus's fault simulation, and the gap detection and
// deduplication it exercises (shared with the PostgreSQL bus).
#include <syncbus/errors.hpp>
#include <syncbus/in_memory_bus.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <numeric>

#include "test_support.hpp"

namespace syncbus {
namespace {

using testing::Collector;
using testing::EventLog;

struct Cluster {
  std::shared_ptr<InMemoryHub> hub = std::make_shared<InMemoryHub>();
  EventLog gaps_at_b;
  InMemoryClusterBus a{hub, {"a", {}, {}}};
  InMemoryClusterBus b{hub, {"b", {}, gaps_at_b.gap_handler()}};
  Collector at_b;
  Subscription subscription = b.subscribe(at_b.handler());

  std::vector<std::uint64_t> sequences_at_b() const {
    std::vector<std::uint64_t> out;
    for (const auto& m : at_b.messages()) out.push_back(m.sequence);
    return out;
  }
};

TEST(InMemoryFaults, DroppedDeliveriesAreReportedAsAnExactGap) {
  Cluster c;
  c.a.publish(1);
  c.b.drop_next_deliveries(2);
  c.a.publish(2);
  c.a.publish(3);
  c.a.publish(4);
  ASSERT_TRUE(c.hub->wait_idle());
  EXPECT_EQ(c.sequences_at_b(), (std::vector<std::uint64_t>{1, 4}));
  const auto gaps = c.gaps_at_b.gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].origin, c.a.instance_id());
  EXPECT_EQ(gaps[0].first_missing, 2u);
  EXPECT_EQ(gaps[0].last_missing, 3u);
  const auto stats = c.b.stats();
  EXPECT_EQ(stats.gaps, 1u);
  EXPECT_EQ(stats.messages_missing, 2u);
  EXPECT_EQ(stats.delivered, 2u);
  // a's own delivery was untouched.
  EXPECT_EQ(c.a.stats().delivered, 4u);
  EXPECT_EQ(c.a.stats().published, 4u);
}

TEST(InMemoryFaults, TheGapIsReportedBeforeTheMessageThatFollowsIt) {
  std::vector<std::string> order;
  std::mutex mutex;
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus sender(hub, {"s", {}, {}});
  InMemoryClusterBus receiver(hub, {"r", {}, [&](const GapEvent& g) {
                                      std::lock_guard<std::mutex> lock(mutex);
                                      order.push_back("gap " + std::to_string(g.first_missing));
                                    }});
  auto s = receiver.subscribe([&](const ClusterMessage& m) {
    std::lock_guard<std::mutex> lock(mutex);
    order.push_back("message " + std::to_string(m.sequence));
  });
  sender.publish(1);
  receiver.drop_next_deliveries();
  sender.publish(2);
  sender.publish(3);
  ASSERT_TRUE(hub->wait_idle());
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_EQ(order, (std::vector<std::string>{"message 1", "gap 2", "message 3"}));
}

TEST(InMemoryFaults, DuplicatedDeliveriesAreDeliveredOnce) {
  Cluster c;
  c.b.duplicate_next_deliveries(3);
  for (int i = 1; i <= 5; ++i) c.a.publish(i);
  ASSERT_TRUE(c.hub->wait_idle());
  EXPECT_EQ(c.sequences_at_b(), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(c.b.stats().duplicates_dropped, 3u);
  EXPECT_TRUE(c.gaps_at_b.gaps().empty());
}

TEST(InMemoryFaults, ReconnectReportsAnUnknownGapThenTheExactOne) {
  Cluster c;
  c.a.publish(1);
  ASSERT_TRUE(c.hub->wait_idle());
  c.b.disconnect();
  c.a.publish(2);
  c.a.publish(3);
  c.b.publish(nlohmann::json("b can still publish"));
  c.b.reconnect();
  c.a.publish(4);
  ASSERT_TRUE(c.hub->wait_idle());
  EXPECT_EQ(c.sequences_at_b(), (std::vector<std::uint64_t>{1, 4}));
  const auto gaps = c.gaps_at_b.gaps();
  ASSERT_EQ(gaps.size(), 2u);
  EXPECT_FALSE(gaps[0].range_known());
  EXPECT_EQ(gaps[1].origin, c.a.instance_id());
  EXPECT_EQ(gaps[1].first_missing, 2u);
  EXPECT_EQ(gaps[1].last_missing, 3u);
  EXPECT_EQ(c.b.stats().reconnects, 1u);
  EXPECT_EQ(c.a.stats().delivered, 5u) << "a heard b's message";
}

TEST(InMemoryFaults, HeartbeatsRevealALossAtTheTailOfABurst) {
  Cluster c;
  c.a.publish(1);
  c.b.drop_next_deliveries(2);
  c.a.publish(2);
  c.a.publish(3);  // the burst ends: no later message would reveal the loss
  ASSERT_TRUE(c.hub->wait_idle());
  EXPECT_TRUE(c.gaps_at_b.gaps().empty());
  c.hub->send_heartbeats();
  ASSERT_TRUE(c.hub->wait_idle());
  const auto gaps = c.gaps_at_b.gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].first_missing, 2u);
  EXPECT_EQ(gaps[0].last_missing, 3u);
  c.hub->send_heartbeats();  // nothing new: no new gap
  ASSERT_TRUE(c.hub->wait_idle());
  EXPECT_EQ(c.gaps_at_b.gaps().size(), 1u);
}

TEST(InMemoryFaults, AThrowingGapHandlerGoesToOnErrorAndDeliveryContinues) {
  auto hub = std::make_shared<InMemoryHub>();
  std::atomic<int> errors{0};
  InMemoryClusterBus a(hub);
  InMemoryClusterBus b(hub, {"", [&](const std::exception&) { ++errors; },
                             [](const GapEvent&) { throw std::runtime_error("gap handler bug"); }});
  Collector at_b;
  auto s = b.subscribe(at_b.handler());
  a.publish(1);
  b.drop_next_deliveries();
  a.publish(2);
  a.publish(3);
  ASSERT_TRUE(hub->wait_idle());
  EXPECT_EQ(at_b.size(), 2u);
  EXPECT_EQ(errors.load(), 1);
  EXPECT_EQ(b.stats().errors, 1u);
  EXPECT_NE(b.stats().last_error.find("gap handler bug"), std::string::npos);
}

TEST(InMemoryFaults, AFullDeliveryQueueDropsAndReportsExactGaps) {
  auto hub = std::make_shared<InMemoryHub>();
  EventLog gaps;
  InMemoryBusOptions small;
  small.instance_id = "slow";
  small.on_gap = gaps.gap_handler();
  small.delivery_queue_capacity = 10;
  InMemoryClusterBus a(hub, {"a", {}, {}}), c(hub, {"c", {}, {}}), slow(hub, small);
  Collector seen;
  auto record = slow.subscribe(seen.handler());
  testing::HeldSubscription held(slow);  // on the first message, a's #1
  a.publish(1);
  ASSERT_TRUE(held.wait_until_held());
  for (int i = 2; i <= 100; ++i) a.publish(i);   // 2..11 fit, 12..100 do not
  c.publish(nlohmann::json("only while full"));  // c is first seen as dropped
  held.release();
  ASSERT_TRUE(hub->wait_idle());

  std::vector<std::uint64_t> delivered;
  for (const auto& m : seen.messages()) delivered.push_back(m.sequence);
  std::vector<std::uint64_t> expected(11);
  std::iota(expected.begin(), expected.end(), 1);
  EXPECT_EQ(delivered, expected);
  const auto reported = gaps.gaps();
  ASSERT_EQ(reported.size(), 2u);
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> by_origin;
  for (const auto& g : reported) by_origin[g.origin] = {g.first_missing, g.last_missing};
  EXPECT_EQ(by_origin[a.instance_id()], std::make_pair(std::uint64_t{12}, std::uint64_t{100}));
  EXPECT_EQ(by_origin[c.instance_id()], std::make_pair(std::uint64_t{1}, std::uint64_t{1}));
  const auto stats = slow.stats();
  EXPECT_EQ(stats.dropped_queue_full, 90u);
  EXPECT_EQ(stats.messages_missing, 90u);
  EXPECT_EQ(stats.delivered, 11u);
  // Afterwards delivery is normal again.
  a.publish(101);
  ASSERT_TRUE(hub->wait_idle());
  EXPECT_EQ(seen.messages().back().sequence, 101u);
  EXPECT_EQ(gaps.gaps().size(), 2u);
}

TEST(InMemoryFaults, AClosingBusSaysGoodbyeAndIsForgotten) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus receiver(hub);
  for (int i = 0; i < 20; ++i) {
    InMemoryClusterBus peer(hub);
    peer.publish(i);
  }
  ASSERT_TRUE(hub->wait_idle());
  EXPECT_EQ(receiver.stats().delivered, 20u);
  EXPECT_EQ(receiver.stats().origins_tracked, 0u);
}

TEST(InMemoryFaults, ZeroCapacityIsRejected) {
  InMemoryBusOptions none;
  none.delivery_queue_capacity = 0;
  EXPECT_THROW(InMemoryClusterBus(std::make_shared<InMemoryHub>(), none), configuration_error);
}

}  // namespace
}  // namespace syncbus
