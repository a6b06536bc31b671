#include <syncbus/errors.hpp>
#include <syncbus/in_memory_bus.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "test_support.hpp"

namespace syncbus {
namespace {

using testing::Collector;
using testing::EventLog;
using testing::eventually;

TEST(InMemoryBus, ThreeInstancesOnOneHubHearEachOtherAndThemselves) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus a(hub), b(hub), c(hub);
  Collector at_a, at_b, at_c;
  auto sa = a.subscribe(at_a.handler());
  auto sb = b.subscribe(at_b.handler());
  auto sc = c.subscribe(at_c.handler());

  a.publish({{"from", "a"}});
  b.publish({{"from", "b"}});
  c.publish({{"from", "c"}});
  ASSERT_TRUE(hub->wait_idle());

  for (Collector* seen : {&at_a, &at_b, &at_c}) {
    const auto messages = seen->messages();
    ASSERT_EQ(messages.size(), 3u);
    std::map<std::string, std::string> from_by_origin;
    for (const auto& m : messages) {
      from_by_origin[m.origin] = m.body.at("from");
      EXPECT_EQ(m.sequence, 1u);
    }
    EXPECT_EQ(from_by_origin[a.instance_id()], "a");
    EXPECT_EQ(from_by_origin[b.instance_id()], "b");
    EXPECT_EQ(from_by_origin[c.instance_id()], "c");
  }
}

// BusStats::delivery_lag: each message handed to the handlers is counted
// once, in the bucket of how long it took; one that waited behind a slow
// handler shows the wait.
TEST(InMemoryBus, EveryDeliveredMessageIsCountedInTheDeliveryLagWithItsWait) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus a(hub), b(hub);
  std::atomic<int> handled{0};
  std::atomic<bool> first_began{false};
  std::atomic<bool> second_published{false};
  auto s = b.subscribe([&](const ClusterMessage& m) {
    if (m.body == "slow") {
      first_began = true;
      // Until "waits" is published, then 300 ms more: its lag is at least
      // that, however the threads are scheduled.
      while (!second_published) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    ++handled;
  });
  a.publish(nlohmann::json("slow"));
  ASSERT_TRUE(eventually([&] { return first_began.load(); }));
  a.publish(nlohmann::json("waits"));
  second_published = true;
  ASSERT_TRUE(eventually([&] { return handled == 2; }));
  ASSERT_TRUE(hub->wait_idle());

  const auto lag = b.stats().delivery_lag;
  EXPECT_EQ(lag.count, 2u);
  EXPECT_EQ(b.stats().delivered, 2u);
  std::uint64_t total = 0;
  for (const auto n : lag.buckets) total += n;
  EXPECT_EQ(total, lag.count);
  // "waits" was handed on after "slow", 300 ms after it was published.
  EXPECT_GE(testing::lags_over(lag, 250), 1u);
  EXPECT_GE(lag.sum_ms, 250.0);
  // A's own messages: no subscriber there, counted all the same.
  EXPECT_EQ(a.stats().delivery_lag.count, 2u);
}

// A message counts in `delivered` and in the lag together, once its
// handlers are done: no snapshot, from a handler or from any thread, shows
// more lags than deliveries. (The lag was counted before the handlers ran,
// `delivered` after the whole batch: a scrape saw 49 more. Round 5.)
TEST(InMemoryBus, NoSnapshotCountsMoreLagsThanDeliveries) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus a(hub), b(hub);
  std::atomic<int> handled{0};
  std::atomic<int> violations{0};
  auto s = b.subscribe([&](const ClusterMessage&) {
    const auto stats = b.stats();
    if (stats.delivery_lag.count > stats.delivered) ++violations;
    EXPECT_EQ(stats.delivered, static_cast<std::uint64_t>(handled.load())) << "counted after";
    ++handled;
  });
  std::atomic<bool> polling{true};
  std::thread poller([&] {
    while (polling) {
      const auto stats = b.stats();
      if (stats.delivery_lag.count > stats.delivered) ++violations;
    }
  });
  constexpr int messages = 3000;
  for (int i = 0; i < messages; ++i) a.publish(i);
  ASSERT_TRUE(eventually([&] { return handled == messages; }, std::chrono::seconds(20)));
  ASSERT_TRUE(hub->wait_idle());
  polling = false;
  poller.join();
  EXPECT_EQ(violations, 0);
  EXPECT_EQ(b.stats().delivered, static_cast<std::uint64_t>(messages));
  EXPECT_EQ(b.stats().delivery_lag.count, static_cast<std::uint64_t>(messages));
}

TEST(InMemoryBus, DefaultConstructedBusIsAClusterOfOne) {
  InMemoryClusterBus alone;
  InMemoryClusterBus other;  // a different cluster
  Collector at_alone, at_other;
  auto s1 = alone.subscribe(at_alone.handler());
  auto s2 = other.subscribe(at_other.handler());
  alone.publish(nlohmann::json("hello"));
  ASSERT_TRUE(alone.hub()->wait_idle());
  ASSERT_TRUE(other.hub()->wait_idle());
  EXPECT_EQ(at_alone.size(), 1u);
  EXPECT_EQ(at_other.size(), 0u);
  EXPECT_EQ(alone.hub()->bus_count(), 1u);
}

TEST(InMemoryBus, SequencesCount1Up2Up3PerOriginInPublishOrder) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus a(hub), b(hub);
  Collector at_b;
  auto s = b.subscribe(at_b.handler());
  constexpr int count = 1000;
  std::thread other([&] {
    for (int i = 0; i < count; ++i) b.publish(i);
  });
  for (int i = 0; i < count; ++i) a.publish(i);
  other.join();
  ASSERT_TRUE(hub->wait_idle());

  std::map<std::string, std::uint64_t> last;
  for (const auto& m : at_b.messages()) {
    EXPECT_EQ(m.sequence, last[m.origin] + 1) << m.origin;
    EXPECT_EQ(m.body.get<int>(), static_cast<int>(m.sequence) - 1);
    last[m.origin] = m.sequence;
  }
  EXPECT_EQ(last[a.instance_id()], static_cast<std::uint64_t>(count));
  EXPECT_EQ(last[b.instance_id()], static_cast<std::uint64_t>(count));
}

TEST(InMemoryBus, InstanceIdsAreRandomByDefaultAndConfigurable) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus a(hub), b(hub);
  EXPECT_NE(a.instance_id(), b.instance_id());
  EXPECT_EQ(a.instance_id().size(), 14u);
  InMemoryClusterBus named(hub, {"engine-1", {}});
  EXPECT_EQ(named.instance_id().rfind("engine-1.", 0), 0u) << named.instance_id();
  EXPECT_EQ(named.instance_id().size(), std::string("engine-1.").size() + 8);
  InMemoryClusterBus same_name(hub, {"engine-1", {}});
  EXPECT_NE(named.instance_id(), same_name.instance_id()) << "a name is not an identity";
  EXPECT_THROW(InMemoryClusterBus(hub, {"has space", {}}), configuration_error);
  EXPECT_NO_THROW(InMemoryClusterBus(hub, {std::string(55, 'n'), {}}));
  EXPECT_THROW(InMemoryClusterBus(hub, {std::string(56, 'n'), {}}), configuration_error);
}

// A restarted instance keeps its configured name: its messages must not be
// mistaken for repeats of its previous run's.
TEST(InMemoryBus, AnInstanceRestartedUnderTheSameNameIsHeard) {
  auto hub = std::make_shared<InMemoryHub>();
  EventLog log;
  InMemoryClusterBus receiver(hub, {"receiver", log.error_handler(), log.gap_handler()});
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  {
    InMemoryClusterBus first_run(hub, {"engine-1", {}});
    for (int i = 0; i < 3; ++i) first_run.publish(i);
    ASSERT_TRUE(hub->wait_idle());
  }
  InMemoryClusterBus second_run(hub, {"engine-1", {}});
  second_run.publish(nlohmann::json("after the restart"));
  ASSERT_TRUE(hub->wait_idle());
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen.messages().back().body, "after the restart");
  EXPECT_EQ(receiver.stats().duplicates_dropped, 0u);
  EXPECT_TRUE(log.gaps().empty());
  EXPECT_THROW(InMemoryClusterBus(nullptr), configuration_error);
}

TEST(InMemoryBus, UnsubscribeStopsDeliveryToThatHandlerOnly) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus bus(hub);
  Collector kept, dropped;
  auto keep = bus.subscribe(kept.handler());
  auto drop = bus.subscribe(dropped.handler());
  bus.publish(1);
  ASSERT_TRUE(hub->wait_idle());
  drop.unsubscribe();
  bus.publish(2);
  { Subscription scoped = bus.subscribe(dropped.handler()); }  // destroyed: never sees 3
  bus.publish(3);
  ASSERT_TRUE(hub->wait_idle());
  EXPECT_EQ(kept.size(), 3u);
  EXPECT_EQ(dropped.size(), 1u);
}

TEST(InMemoryBus, AHandlerHearsOnlyWhatArrivesWhileItIsSubscribed) {
  auto hub = std::make_shared<InMemoryHub>();
  EventLog log;
  InMemoryClusterBus publisher(hub), receiver(hub, {"receiver", {}, log.gap_handler()});
  // Arrives while nobody listens at the receiver: tracked (so the next one is
  // no gap), delivered to no one, even to a handler that subscribes before
  // the delivery thread has got round to it.
  publisher.publish(nlohmann::json("unheard"));
  Collector seen;
  auto subscription = receiver.subscribe(seen.handler());
  ASSERT_TRUE(hub->wait_idle());
  EXPECT_EQ(seen.size(), 0u);
  publisher.publish(nlohmann::json("heard"));
  ASSERT_TRUE(seen.wait_for_count(1));
  ASSERT_TRUE(hub->wait_idle());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen.messages()[0].sequence, 2u);
  EXPECT_TRUE(log.gaps().empty());
  EXPECT_EQ(receiver.stats().delivered, 2u);
}

TEST(InMemoryBus, UnsubscribeWaitsForARunningHandler) {
  InMemoryClusterBus bus;
  std::atomic<bool> in_handler{false};
  std::atomic<bool> release{false};
  std::atomic<bool> finished{false};
  auto subscription = bus.subscribe([&](const ClusterMessage&) {
    in_handler = true;
    while (!release) std::this_thread::yield();
    finished = true;
  });
  bus.publish(1);
  ASSERT_TRUE(eventually([&] { return in_handler.load(); }));
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    release = true;
  });
  subscription.unsubscribe();
  EXPECT_TRUE(finished.load()) << "unsubscribe() returned while the handler ran";
  releaser.join();
}

TEST(InMemoryBus, AHandlerMayPublishAndUnsubscribeItself) {
  InMemoryClusterBus bus;
  Collector seen;
  auto observer = bus.subscribe(seen.handler());
  Subscription self;
  self = bus.subscribe([&](const ClusterMessage& m) {
    if (m.body == "ping") {
      bus.publish(nlohmann::json("pong"));
      self.unsubscribe();
    }
  });
  bus.publish(nlohmann::json("ping"));
  ASSERT_TRUE(seen.wait_for_count(2));
  bus.publish(nlohmann::json("after"));
  ASSERT_TRUE(bus.hub()->wait_idle());
  const auto messages = seen.messages();
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[1].body, "pong");
  EXPECT_FALSE(self.active());
}

TEST(InMemoryBus, AThrowingHandlerIsReportedAndDeliveryGoesOn) {
  auto hub = std::make_shared<InMemoryHub>();
  std::atomic<int> errors{0};
  std::string last_error;
  std::mutex mutex;
  InMemoryClusterBus bus(hub, {"", [&](const std::exception& e) {
                                 std::lock_guard<std::mutex> lock(mutex);
                                 last_error = e.what();
                                 ++errors;
                               }});
  Collector seen;
  auto thrower = bus.subscribe([](const ClusterMessage& m) {
    if (m.body == 2) throw std::runtime_error("handler failed on purpose");
  });
  auto good = bus.subscribe(seen.handler());
  for (int i = 1; i <= 3; ++i) bus.publish(i);
  ASSERT_TRUE(hub->wait_idle());
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(errors.load(), 1);
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_NE(last_error.find("handler failed on purpose"), std::string::npos);
}

TEST(InMemoryBus, CloseIsIdempotentStopsDeliveryAndRejectsPublish) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus a(hub), b(hub);
  Collector at_b;
  auto s = b.subscribe(at_b.handler());
  b.close();
  b.close();
  EXPECT_EQ(hub->bus_count(), 1u);
  a.publish(1);
  ASSERT_TRUE(hub->wait_idle());
  EXPECT_EQ(at_b.size(), 0u);
  EXPECT_THROW(b.publish(1), closed_error);
  EXPECT_THROW((void)b.subscribe([](const ClusterMessage&) {}), closed_error);
}

TEST(InMemoryBus, EmptyHandlerIsRejected) {
  InMemoryClusterBus bus;
  EXPECT_THROW((void)bus.subscribe(nullptr), configuration_error);
}

TEST(InMemoryBus, SubscriptionMayOutliveItsBus) {
  Subscription subscription;
  {
    InMemoryClusterBus bus;
    subscription = bus.subscribe([](const ClusterMessage&) {});
  }
  subscription.unsubscribe();  // must not touch the destroyed bus
  SUCCEED();
}

TEST(InMemoryBus, ASlowHandlerDoesNotBlockPublishers) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus slow(hub), fast(hub);
  testing::HeldSubscription held(slow);  // the rest queue behind the first
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) fast.publish(i);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(held.wait_until_held());
  held.release();
  EXPECT_TRUE(hub->wait_idle());
}

}  // namespace
}  // namespace syncbus
