// Gap detection, deduplication and stats of PostgresClusterBus against a real
// PostgreSQL, with faults injected into the server.
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "pg_helpers.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using testing::BusConnection;
using testing::Collector;
using testing::EventLog;
using testing::eventually;
using testing::unique_channel;

class GapTest : public testing::PostgresTest {};

TEST_F(GapTest, AListenerReconnectIsReportedAsAGapOfUnknownRange) {
  const auto channel = unique_channel("reconnect_gap");
  EventLog gaps;
  auto o = options(channel, "gap-listener");
  o.on_gap = gaps.gap_handler();
  PostgresClusterBus listener(o);
  PostgresClusterBus publisher(options(channel));
  Collector seen;
  auto s = listener.subscribe(seen.handler());
  publisher.publish(nlohmann::json("before"));
  ASSERT_TRUE(seen.wait_for_count(1));

  ASSERT_EQ(testing::terminate_backend(url(), listener, BusConnection::listener), 1);
  ASSERT_TRUE(eventually([&] { return !gaps.gaps().empty(); }));
  const auto gap = gaps.gaps()[0];
  EXPECT_FALSE(gap.range_known());
  EXPECT_EQ(listener.stats().reconnects, 1u);
  EXPECT_EQ(listener.stats().gaps, 1u);
  // Live again, in order.
  ASSERT_TRUE(eventually([&] {
    publisher.publish(nlohmann::json("after"));
    return seen.wait_for_count(2, std::chrono::milliseconds(100));
  }));
}

TEST_F(GapTest, AHeartbeatAheadOfWhatArrivedIsAnExactGap) {
  const auto channel = unique_channel("heartbeat_gap");
  EventLog gaps;
  auto o = options(channel);
  o.on_gap = gaps.gap_handler();
  PostgresClusterBus receiver(o);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  raw_notify(channel, R"({"v":1,"origin":"peer","seq":1,"body":"one"})");
  raw_notify(channel, R"({"v":1,"origin":"peer","seq":3,"heartbeat":true})");
  ASSERT_TRUE(eventually([&] { return !gaps.gaps().empty(); }));
  const auto gap = gaps.gaps()[0];
  EXPECT_EQ(gap.origin, "peer");
  EXPECT_EQ(gap.first_missing, 2u);
  EXPECT_EQ(gap.last_missing, 3u);
  EXPECT_EQ(seen.size(), 1u) << "heartbeats are not delivered to handlers";
}

TEST_F(GapTest, ARepeatedEnvelopeIsDeliveredOnce) {
  const auto channel = unique_channel("dupes");
  PostgresClusterBus bus(options(channel));
  Collector seen;
  auto s = bus.subscribe(seen.handler());
  const std::string envelope = R"({"v":1,"origin":"replayer","seq":1,"body":"once"})";
  raw_notify(channel, envelope);
  raw_notify(channel, envelope);  // a second transaction: PostgreSQL delivers it again
  raw_notify(channel, R"({"v":1,"origin":"replayer","seq":2,"body":"twice"})");
  ASSERT_TRUE(seen.wait_for_count(2));
  ASSERT_TRUE(eventually([&] { return bus.stats().duplicates_dropped == 1; }));
  const auto messages = seen.messages();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].body, "once");
  EXPECT_EQ(messages[1].body, "twice");
}

TEST_F(GapTest, StatsCountWhatHappened) {
  const auto channel = unique_channel("stats");
  PostgresClusterBus sender(options(channel)), receiver(options(channel));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  for (int i = 0; i < 5; ++i) sender.publish(i);
  sender.publish(nlohmann::json(std::string(9000, 'x')));  // spills
  ASSERT_TRUE(seen.wait_for_count(6));
  ASSERT_TRUE(eventually([&] { return receiver.stats().delivered == 6; }));
  const auto sent = sender.stats();
  EXPECT_EQ(sent.published, 6u);
  EXPECT_EQ(sent.spilled, 1u);
  const auto received = receiver.stats();
  EXPECT_EQ(received.published, 0u);
  EXPECT_EQ(received.gaps, 0u);
  EXPECT_EQ(received.reconnects, 0u);
  EXPECT_EQ(received.errors, 0u);
  EXPECT_EQ(received.last_error, "");

  raw_notify(channel, "not an envelope");
  ASSERT_TRUE(eventually([&] { return receiver.stats().errors == 1; }));
  EXPECT_NE(receiver.stats().last_error.find("not a valid syncbus envelope"), std::string::npos);
}

TEST_F(GapTest, ABlockedHandlerNeverStallsTheListenerAndLossesAreExactGaps) {
  const auto channel = unique_channel("blocked");
  EventLog gaps;
  auto slow_options = options(channel, "blocked-handler");
  slow_options.on_gap = gaps.gap_handler();
  slow_options.delivery_queue_capacity = 50;
  PostgresClusterBus slow(slow_options);
  PostgresClusterBus sender(options(channel, "fast-sender"));
  Collector seen;
  auto record = slow.subscribe(seen.handler());
  testing::HeldSubscription held(slow);  // on the first message, sequence 1
  sender.publish(nlohmann::json(std::string(1000, 'x')));
  ASSERT_TRUE(held.wait_until_held());

  constexpr int total = 3000;
  for (int i = 2; i <= total; ++i) sender.publish(nlohmann::json(std::string(1000, 'x')));
  // The listener went on reading its socket: the server's NOTIFY queue is
  // not held back by the blocked handler.
  ASSERT_TRUE(eventually([&] { return slow.stats().dropped_queue_full > 0; }));
  pqxx::connection admin(url());
  const double usage =
      pqxx::nontransaction(admin).exec1("SELECT pg_notification_queue_usage()")[0].as<double>();
  EXPECT_LT(usage, 0.01);
  held.release();

  // Every message is either delivered once or inside exactly one gap.
  ASSERT_TRUE(eventually([&] {
    const auto s = slow.stats();
    return s.delivered + s.messages_missing == static_cast<std::uint64_t>(total);
  }));
  testing::expect_each_delivered_or_in_a_gap_once(seen, gaps, total);
  for (const auto& g : gaps.gaps()) EXPECT_EQ(g.origin, sender.instance_id());
  EXPECT_EQ(sender.stats().errors, 0u);
}

// At low load the idle delivery thread reads the listener's socket itself,
// and gives it back before running handlers: when a handler then blocks,
// the listener reads in its place within its next look (50 ms), not after
// the handler. Each round: a message whose handler blocks (read by the idle
// delivery thread), then two more; the second is dropped (the queue holds
// one) once the listener has read it.
TEST_F(GapTest, AHandlerThatBlocksHoldsUpReadingOnlyForAMoment) {
  const auto channel = unique_channel("read_while_blocked");
  auto slow_options = options(channel, "blocked-handler");
  slow_options.delivery_queue_capacity = 1;
  PostgresClusterBus slow(slow_options);
  PostgresClusterBus sender(options(channel, "sender"));
  std::mutex mutex;
  std::condition_variable changed;
  bool blocked = false;
  bool released = false;
  auto s = slow.subscribe([&](const ClusterMessage& m) {
    if (m.body != "block") return;
    std::unique_lock<std::mutex> lock(mutex);
    blocked = true;
    changed.notify_all();
    changed.wait(lock, [&] { return released; });
  });
  const auto settle = [&] {
    // The delivery thread is idle again, waiting on the socket.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  };
  settle();
  for (int round = 0; round < 5; ++round) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      blocked = released = false;
    }
    sender.publish(nlohmann::json("block"));
    {
      std::unique_lock<std::mutex> lock(mutex);
      ASSERT_TRUE(changed.wait_for(lock, std::chrono::seconds(10), [&] { return blocked; }));
    }
    const auto dropped = slow.stats().dropped_queue_full;
    sender.publish(nlohmann::json("queued"));
    const auto committed = std::chrono::steady_clock::now();
    sender.publish(nlohmann::json("dropped"));
    ASSERT_TRUE(eventually([&] { return slow.stats().dropped_queue_full > dropped; }));
    // 50 ms by design; from outside, 0.4 ms at the median and 25 ms at
    // worst over 60 rounds. The bound leaves room for a loaded machine.
    EXPECT_LT(std::chrono::steady_clock::now() - committed, std::chrono::seconds(2))
        << "round " << round;
    {
      std::lock_guard<std::mutex> lock(mutex);
      released = true;
    }
    changed.notify_all();
    settle();
  }
}

// Every bus run is a new origin: a long-lived receiver would grow by one
// entry per peer restart if it never forgot. A closing bus says goodbye
// (checked like a heartbeat: a loss at its tail is still reported), and is
// forgotten; with secrets it is kept until it expires, so that a replay of
// its messages is still a duplicate.
TEST_F(GapTest, OriginsThatCloseAreForgottenSoAReceiversStateStaysBounded) {
  for (const bool signed_channel : {false, true}) {
    const auto channel = unique_channel(signed_channel ? "goodbye_signed" : "goodbye");
    auto o = options(channel, "long-lived");
    if (signed_channel) o.secrets = {std::string(32, 's')};
    PostgresClusterBus receiver(o);
    Collector seen;
    auto s = receiver.subscribe(seen.handler());
    constexpr int peers = 60;
    for (int i = 0; i < peers; ++i) {
      auto peer_options = options(channel, "short-lived");
      peer_options.secrets = o.secrets;
      PostgresClusterBus peer(peer_options);
      peer.publish(i);
    }
    ASSERT_TRUE(seen.wait_for_count(peers));
    if (signed_channel) {
      ASSERT_TRUE(eventually([&] { return receiver.stats().origins_tracked == peers; }));
    } else {
      ASSERT_TRUE(eventually([&] { return receiver.stats().origins_tracked == 0; }))
          << receiver.stats().origins_tracked << " origins still tracked";
    }
    EXPECT_EQ(receiver.stats().gaps, 0u);
  }
}

// A foreign writer (following docs/PROTOCOL.md) whose sequence numbers 2
// and 3 were used by transactions that rolled back, and whose row 4 is gone
// when its pointer is followed: everything from the last delivered message
// to the missing row is reported, in one gap, in every mode. For an origin
// born after the receiver started, from sequence 1.
TEST_F(GapTest, APointerToAMissingRowReportsEveryNumberSinceTheLastOneDelivered) {
  for (const auto mode : {SpillMode::overflow, SpillMode::always}) {
    const auto channel = unique_channel(mode == SpillMode::always ? "missing_always" : "missing");
    EventLog log;
    auto o = options(channel, "missing-row-receiver");
    o.spill = mode;
    o.heartbeat_interval = std::chrono::milliseconds(0);
    o.on_gap = log.gap_handler();
    PostgresClusterBus receiver(o);
    Collector seen;
    auto s = receiver.subscribe(seen.handler());
    pqxx::connection writer(url());
    const auto pointer = [&](const std::string& origin, std::uint64_t sequence,
                             const std::string& born) {
      return R"({"v":1,"origin":")" + origin + R"(","seq":)" + std::to_string(sequence) + born +
             R"(,"spilled":true})";
    };
    const auto write = [&](const std::string& origin, std::uint64_t sequence, bool row, bool commit,
                           const std::string& born = "") {
      pqxx::work transaction(writer);
      if (row) {
        transaction.exec_params(
            "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) VALUES ($1, "
            "$2, $3, $4)",
            channel, origin, static_cast<std::int64_t>(sequence), std::to_string(sequence));
      }
      transaction.exec_params("SELECT pg_notify($1, $2)", channel, pointer(origin, sequence, born));
      if (commit) transaction.commit();
    };
    write("foreign-writer", 1, true, true);
    ASSERT_TRUE(seen.wait_for_count(1));
    write("foreign-writer", 2, true, false);  // rolled back: the number is used
    write("foreign-writer", 3, true, false);
    write("foreign-writer", 4, false, true);  // a pointer whose row is gone
    write("foreign-writer", 5, true, true);
    ASSERT_TRUE(seen.wait_for_count(2));
    // Born after the receiver: its first pointer, #3, has no row.
    const auto born = pqxx::nontransaction(writer)
                          .exec1("SELECT pg_current_xact_id()::text")[0]
                          .as<std::string>();
    write("newborn-writer", 3, false, true, R"(,"born":)" + born);
    write("newborn-writer", 4, true, true, R"(,"born":)" + born);
    ASSERT_TRUE(seen.wait_for_count(3));
    const auto gaps = log.known_gaps();
    ASSERT_EQ(gaps.size(), 2u);
    EXPECT_EQ(gaps[0].origin, "foreign-writer");
    EXPECT_EQ(gaps[0].first_missing, 2u);
    EXPECT_EQ(gaps[0].last_missing, 4u);
    EXPECT_EQ(gaps[1].origin, "newborn-writer");
    EXPECT_EQ(gaps[1].first_missing, 1u);
    EXPECT_EQ(gaps[1].last_missing, 3u);
    EXPECT_EQ(seen.messages()[1].sequence, 5u);
  }
}

}  // namespace
}  // namespace syncbus
