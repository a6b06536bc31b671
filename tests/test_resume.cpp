// Resuming from a position without a database: the in-memory bus (its hub
// keeps a bounded log), and the delivery stage's seam (resume.hpp) with a
// reader played by the test.
#include <syncbus/errors.hpp>
#include <syncbus/in_memory_bus.hpp>

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>

#include "delivery_queue.hpp"
#include "resume.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using testing::Collector;
using testing::EventLog;
using testing::eventually;
using testing::expect_exactly;

TEST(InMemoryResume, AClientMovesToAnotherBusAndGetsEverythingAfterItsPositionOnce) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus a(hub), b(hub), writer(hub);
  Collector on_a;
  auto sa = a.subscribe(on_a.handler());
  for (int i = 1; i <= 10; ++i) writer.publish({{"i", i}});
  a.publish({{"own", 1}});
  ASSERT_TRUE(hub->wait_idle());
  const auto got = on_a.messages();
  ASSERT_EQ(got.size(), 11u);
  for (const auto& m : got) EXPECT_FALSE(m.position.empty());
  const auto& at = got[5];  // writer#6
  sa.unsubscribe();

  for (int i = 11; i <= 15; ++i) writer.publish({{"i", i}});
  Collector on_b;
  auto sb = b.subscribe_from(at.position, on_b.handler());
  b.publish({{"own", 1}});
  writer.publish({{"i", 16}});
  ASSERT_TRUE(hub->wait_idle());
  expect_exactly(on_b.messages(), {{writer.instance_id(), 6}},
                 {{writer.instance_id(), 16}, {a.instance_id(), 1}, {b.instance_id(), 1}});
  EXPECT_EQ(on_b.size(), 10u + 1 + 1);
}

TEST(InMemoryResume, ABusThatMissedWhatThePositionNamesHoldsTheClientUntilItIsPast) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus a(hub), b(hub), writer(hub);
  Collector on_a;
  auto sa = a.subscribe(on_a.handler());
  b.disconnect();  // b misses 1..3: its position stays before them
  for (int i = 1; i <= 3; ++i) writer.publish({{"i", i}});
  ASSERT_TRUE(hub->wait_idle());
  Collector on_b;
  auto sb = b.subscribe_from(on_a.messages().back().position, on_b.handler());
  ASSERT_TRUE(hub->wait_idle());
  EXPECT_EQ(on_b.size(), 0u);
  b.reconnect();
  writer.publish({{"i", 4}});
  writer.publish({{"i", 5}});
  ASSERT_TRUE(hub->wait_idle());
  ASSERT_TRUE(eventually([&] { return on_b.size() >= 2; }, 5s));
  ASSERT_TRUE(hub->wait_idle());
  expect_exactly(on_b.messages(), {{writer.instance_id(), 3}}, {{writer.instance_id(), 5}});
}

TEST(InMemoryResume, APositionOlderThanTheHubKeepsExpiresAndNothingIsSubscribed) {
  auto hub = std::make_shared<InMemoryHub>(5);
  InMemoryClusterBus a(hub), writer(hub);
  Collector seen;
  auto s = a.subscribe(seen.handler());
  for (int i = 1; i <= 10; ++i) writer.publish({{"i", i}});
  ASSERT_TRUE(hub->wait_idle());
  const auto got = seen.messages();
  try {
    auto never = a.subscribe_from(got[2].position, [](const ClusterMessage&) {});
    FAIL() << "expired position taken";
  } catch (const position_expired& e) {
    EXPECT_EQ(e.position(), got[2].position);
  }
  Collector resumed;
  auto r = a.subscribe_from(got[6].position, resumed.handler());  // 8..10 are kept
  ASSERT_TRUE(hub->wait_idle());
  expect_exactly(resumed.messages(), {{writer.instance_id(), 7}}, {{writer.instance_id(), 10}});
}

TEST(InMemoryResume, WhatIsNotAPositionOfThisHubIsRefused) {
  auto hub = std::make_shared<InMemoryHub>();
  InMemoryClusterBus a(hub);
  InMemoryClusterBus elsewhere;  // a hub of its own
  Collector seen;
  auto s = elsewhere.subscribe(seen.handler());
  elsewhere.publish({{"n", 1}});
  ASSERT_TRUE(elsewhere.hub()->wait_idle());
  const auto nothing = [](const ClusterMessage&) {};
  EXPECT_THROW(auto x = a.subscribe_from(seen.messages()[0].position, nothing), invalid_position);
  EXPECT_THROW(auto x = a.subscribe_from("not a position", nothing), invalid_position);
  EXPECT_THROW(auto x = a.subscribe_from(seen.messages()[0].position, MessageHandler{}),
               configuration_error);
}

TEST(InMemoryResume, ClientsSwitchingBusesAtRandomGetEveryMessageOnceInOrder) {
  auto hub = std::make_shared<InMemoryHub>();
  std::vector<std::unique_ptr<InMemoryClusterBus>> buses;
  for (int i = 0; i < 3; ++i) buses.push_back(std::make_unique<InMemoryClusterBus>(hub));
  InMemoryClusterBus writer(hub);
  Collector first;
  std::string start;
  {
    auto s = buses[0]->subscribe(first.handler());
    writer.publish({{"first", true}});
    ASSERT_TRUE(hub->wait_idle());
    start = first.messages()[0].position;
  }
  std::atomic<bool> running{true};
  std::atomic<std::uint64_t> written{1};
  std::thread writing([&] {
    while (running) {
      writer.publish({{"n", written.load() + 1}});
      ++written;
      std::this_thread::sleep_for(200us);
    }
  });
  constexpr int clients = 5;
  std::vector<std::unique_ptr<Collector>> client(clients);
  std::vector<Subscription> subscription(clients);
  for (int c = 0; c < clients; ++c) {
    client[c] = std::make_unique<Collector>();
    subscription[c] = buses[c % 3]->subscribe_from(start, client[c]->handler());
  }
  std::mt19937 random(3);
  for (int move = 0; move < 200; ++move) {
    std::this_thread::sleep_for(std::chrono::microseconds(500 + random() % 3000));
    const auto c = random() % clients;
    subscription[c].unsubscribe();
    const auto got = client[c]->messages();
    const auto at = got.empty() ? start : got.back().position;
    subscription[c] = buses[random() % 3]->subscribe_from(at, client[c]->handler());
  }
  running = false;
  writing.join();
  ASSERT_TRUE(hub->wait_idle());
  for (int c = 0; c < clients; ++c) {
    SCOPED_TRACE("client " + std::to_string(c));
    expect_exactly(client[c]->messages(), {{writer.instance_id(), 1}},
                   {{writer.instance_id(), written.load()}});
  }
}

// The seam in the delivery stage, with the test as the reader: live
// messages that arrive while the read goes on are buffered, and past the
// buffer's bound dropped and asked for in one more round, up to a later
// point; then the buffer, then live.
TEST(DeliveryQueueResume, PastTheBufferItAsksForAnotherRoundThenGoesLive) {
  using detail::Inbound;
  detail::DeliveryQueue queue({}, {}, std::make_shared<detail::StatsCounters>(),
                              detail::DeliveryQueue::Capacity{1'000'000},
                              QueueFullPolicy::drop_and_report_gap, true, {},
                              detail::position_channel_key({"", "s", "t", "c"}));
  const auto live = [&](std::uint64_t sequence) {
    Inbound item{Inbound::Kind::message, {"w", sequence, {{"n", sequence}}, {}}};
    item.xid = 100 + sequence;
    queue.post(std::move(item));
  };
  Inbound start{Inbound::Kind::mark, {}};
  start.mark = std::make_shared<Inbound::Mark>();
  start.mark->snapshot = detail::PgSnapshot::of(100, 100, {});
  queue.post(std::move(start));
  live(1);
  live(2);
  Collector seen;
  auto resume = std::make_shared<detail::Resume>(
      detail::DecodedPosition{detail::PgSnapshot::of(100, 100, {}), {{"w", 1}}}, seen.handler(),
      "p");
  auto subscription = queue.subscribe_resuming(resume);
  const auto first = resume->next_target();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->cursors.at("w"), 2u) << "the seam came after 2";
  // While it reads 2, more arrives than the buffer holds.
  const auto past = detail::Resume::max_buffered + 5;
  for (std::uint64_t n = 3; n <= past; ++n) live(n);
  ASSERT_TRUE(queue.wait_idle(10s));
  queue.post_read(resume, {{"w", 2, {{"n", 2}}, "read"}}, /*done=*/true);
  const auto second = resume->next_target();
  ASSERT_TRUE(second) << "the buffer overflowed: one more round";
  EXPECT_EQ(second->cursors.at("w"), past);
  std::vector<ClusterMessage> rest;
  for (std::uint64_t n = 3; n <= past; ++n) rest.push_back({"w", n, {{"n", n}}, "read"});
  queue.post_read(resume, std::move(rest), /*done=*/true);
  live(past + 1);
  ASSERT_TRUE(queue.wait_idle(10s));
  const auto got = seen.messages();
  expect_exactly(got, {{"w", 1}}, {{"w", past + 1}});
  EXPECT_EQ(got.back().position.rfind("p1.", 0), 0u) << "live: the bus's own position";
}

}  // namespace
}  // namespace syncbus
