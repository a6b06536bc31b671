// SpillMode::always: after a reconnect the listener reads what it missed
// from the spill table, so nothing acknowledged is lost and nothing repeats.
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <atomic>
#include <iostream>
#include <map>
#include <thread>

#include "pg_helpers.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using testing::BusConnection;
using testing::check_exactly_once_in_order;
using testing::Collector;
using testing::EventLog;
using testing::eventually;
using testing::unique_channel;

class CatchUpTest : public testing::PostgresTest {};

TEST_F(CatchUpTest, AcknowledgedMessagesSurviveRepeatedListenerKills) {
  const auto channel = unique_channel("always_kills");
  EventLog log;
  auto receiver_options = durable_options(channel, "catch-up-receiver");
  receiver_options.on_error = log.error_handler();
  receiver_options.on_gap = log.gap_handler();
  PostgresClusterBus receiver(receiver_options);
  PostgresClusterBus publisher(durable_options(channel, "catch-up-publisher"));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());

  constexpr int kills = 5;
  constexpr int per_round = 100;
  for (int round = 0; round < kills; ++round) {
    ASSERT_EQ(testing::terminate_backend(url(), receiver, BusConnection::listener), 1);
    // Published while the listener is away (its first retry waits 25-50 ms)
    // and after it is back: all acknowledged, all must arrive.
    for (int i = 0; i < per_round; ++i) publisher.publish({{"round", round}, {"i", i}});
    const auto reconnected = std::chrono::steady_clock::now();
    ASSERT_TRUE(eventually([&] { return receiver.stats().reconnects == round + 1u; }, 5s));
    EXPECT_LT(std::chrono::steady_clock::now() - reconnected, 1s);
  }
  ASSERT_TRUE(seen.wait_for_count(kills * per_round, 20s));
  const auto last = check_exactly_once_in_order(seen);
  EXPECT_EQ(last.at(publisher.instance_id()), std::uint64_t{kills * per_round});
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kills * per_round)) << "no duplicates";
  EXPECT_TRUE(log.gaps().empty()) << "nothing was lost, so no gap may be reported";
}

TEST_F(CatchUpTest, CatchingUpReadsEveryRowOfTheWindowInPagesSizedToTheirBodies) {
  // Pages are sized by the bodies of the page before (a 1 MB body makes the
  // next page 8 rows, not 256): the last row of every page must still lead
  // to the next. A catch-up reads the whole window again, and what was
  // delivered already is dropped as a duplicate: so the duplicates count
  // how many rows it read.
  const auto channel = unique_channel("catch_up_pages");
  EventLog log;
  auto receiver_options = durable_options(channel, "pages-receiver");
  receiver_options.on_error = log.error_handler();
  receiver_options.on_gap = log.gap_handler();
  PostgresClusterBus receiver(receiver_options);
  PostgresClusterBus publisher(durable_options(channel, "pages-publisher"));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  const std::string megabyte(1 << 20, 'm');
  const auto body = [&](int i) -> nlohmann::json {
    if (i % 4 == 0) return megabyte;
    return {{"i", i}};
  };

  constexpr int before = 40;
  for (int i = 1; i <= before; ++i) publisher.publish(body(i));
  ASSERT_TRUE(seen.wait_for_count(before, 20s));
  ASSERT_EQ(receiver.stats().duplicates_dropped, 0u);
  ASSERT_EQ(testing::terminate_backend(url(), receiver, BusConnection::listener), 1);
  ASSERT_TRUE(eventually([&] { return receiver.stats().reconnects == 1u; }, 5s));
  EXPECT_TRUE(eventually([&] { return receiver.stats().duplicates_dropped == before; }, 10s))
      << receiver.stats().duplicates_dropped << " of " << before << " rows read again";
  constexpr int after = 20;
  for (int i = before + 1; i <= before + after; ++i) publisher.publish(body(i));

  ASSERT_TRUE(seen.wait_for_count(before + after, 20s));
  const auto last = check_exactly_once_in_order(seen);
  EXPECT_EQ(last.at(publisher.instance_id()), std::uint64_t{before + after});
  const auto messages = seen.messages();
  ASSERT_EQ(messages.size(), std::size_t{before + after});
  for (int i = 1; i <= before + after; ++i) EXPECT_EQ(messages[i - 1].body, body(i)) << i;
  EXPECT_EQ(receiver.stats().duplicates_dropped, std::uint64_t{before});
  EXPECT_TRUE(log.gaps().empty());
  // The one error is the kill, reported as such.
  ASSERT_EQ(log.errors().size(), 1u);
  EXPECT_EQ(log.errors_containing("lost its connection"), 1u) << log.errors().front();
}

TEST_F(CatchUpTest, ARowCommittedOutOfIdOrderWhileAwayIsNotMissed) {
  const auto channel = unique_channel("id_order");
  EventLog log;
  auto receiver_options = durable_options(channel, "id-order-receiver");
  receiver_options.on_gap = log.gap_handler();
  PostgresClusterBus receiver(receiver_options);
  PostgresClusterBus publisher(durable_options(channel, "fast"));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());

  // A slow writer takes its id first and commits last.
  pqxx::connection slow_connection(url());
  pqxx::work slow(slow_connection);
  slow.exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) "
      "VALUES ($1, 'slow', 1, '\"slow one\"')",
      channel);
  publisher.publish("fast one");  // a higher id, committed and delivered first
  ASSERT_TRUE(seen.wait_for_count(1));

  ASSERT_EQ(testing::terminate_backend(url(), receiver, BusConnection::listener), 1);
  slow.exec_params("SELECT pg_notify($1, $2)", channel,
                   R"({"v":1,"origin":"slow","seq":1,"spilled":true})");
  slow.commit();  // while the listener is (most likely) away

  ASSERT_TRUE(seen.wait_for_count(2, 10s));
  const auto messages = seen.messages();
  EXPECT_EQ(messages[1].origin, "slow");
  EXPECT_EQ(messages[1].body, "slow one");
  publisher.publish("after");
  ASSERT_TRUE(seen.wait_for_count(3, 10s));
  EXPECT_EQ(seen.size(), 3u) << "no duplicates";
  EXPECT_TRUE(log.gaps().empty());
}

// A publisher speaking the wire protocol over a plain connection, so that it
// can hold a transaction open as long as it likes: its row takes its id
// early and commits late.
void publish_slowly(const std::string& url, const std::string& channel, const std::string& origin,
                    std::uint64_t sequence, std::chrono::milliseconds held_open) {
  pqxx::connection connection(url);
  pqxx::work transaction(connection);
  transaction.exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) "
      "VALUES ($1, $2, $3, $4)",
      channel, origin, static_cast<std::int64_t>(sequence),
      "{\"slow\":" + std::to_string(sequence) + "}");
  transaction.exec_params("SELECT pg_notify($1, $2)", channel,
                          R"({"v":1,"origin":")" + origin + R"(","seq":)" +
                              std::to_string(sequence) + R"(,"spilled":true})");
  std::this_thread::sleep_for(held_open);
  transaction.commit();
}

TEST_F(CatchUpTest, FourPublishersOneHoldingTransactionsOpenThroughFiveListenerKills) {
  const auto channel = unique_channel("four_publishers");
  EventLog log;
  auto receiver_options = durable_options(channel, "four-receiver");
  receiver_options.on_gap = log.gap_handler();
  PostgresClusterBus receiver(receiver_options);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());

  std::atomic<bool> publishing{true};
  constexpr int fast_publishers = 3;
  std::vector<std::thread> publishers;
  std::vector<std::uint64_t> published(fast_publishers + 1, 0);
  std::vector<std::string> fast_ids(fast_publishers);
  for (int p = 0; p < fast_publishers; ++p) {
    publishers.emplace_back([&, p] {
      PostgresClusterBus bus(durable_options(channel, "four-fast-" + std::to_string(p)));
      fast_ids[p] = bus.instance_id();
      while (publishing) {
        bus.publish(published[p] + 1);
        ++published[p];
        std::this_thread::sleep_for(5ms);
      }
    });
  }
  publishers.emplace_back([&] {
    // Every third transaction stays open for 2 s, the others for 100 ms.
    while (publishing) {
      const auto sequence = published[fast_publishers] + 1;
      publish_slowly(url(), channel, "four-slow", sequence, sequence % 3 == 0 ? 2000ms : 100ms);
      published[fast_publishers] = sequence;
    }
  });
  for (int kill = 1; kill <= 5; ++kill) {
    std::this_thread::sleep_for(900ms);
    ASSERT_EQ(testing::terminate_backend(url(), receiver, BusConnection::listener), 1);
    ASSERT_TRUE(eventually([&] { return receiver.stats().reconnects == kill + 0u; }, 5s));
  }
  publishing = false;
  for (auto& t : publishers) t.join();

  std::uint64_t total = 0;
  for (const auto n : published) total += n;
  ASSERT_TRUE(seen.wait_for_count(total, 30s)) << seen.size() << " of " << total;
  std::this_thread::sleep_for(200ms);  // time for a duplicate to show up
  const auto last = check_exactly_once_in_order(seen);
  for (int p = 0; p < fast_publishers; ++p) {
    EXPECT_EQ(last.at(fast_ids[p]), published[p]);
  }
  EXPECT_EQ(last.at("four-slow"), published[fast_publishers]);
  EXPECT_GE(published[fast_publishers], 3u) << "at least one transaction held open for 2 s";
  EXPECT_EQ(seen.size(), total) << "no duplicates";
  EXPECT_TRUE(log.gaps().empty()) << "nothing was lost, so no gap may be reported";
}

TEST_F(CatchUpTest, OverflowModeReportsTheReconnectInstead) {
  const auto channel = unique_channel("overflow_kill");
  EventLog log;
  auto receiver_options = options(channel, "overflow-receiver");
  receiver_options.on_gap = log.gap_handler();
  PostgresClusterBus receiver(receiver_options);
  ASSERT_EQ(testing::terminate_backend(url(), receiver, BusConnection::listener), 1);
  ASSERT_TRUE(eventually([&] { return log.unknown_gaps() == 1; }, 5s));
}

// 10,000 messages at 2,000/s while the receiver's listener is killed 5 times.
class SoakTest : public CatchUpTest, public ::testing::WithParamInterface<SpillMode> {};

TEST_P(SoakTest, TenThousandMessagesThroughFiveListenerKills) {
  const SpillMode mode = GetParam();
  const std::string name = mode == SpillMode::always ? "always" : "overflow";
  const auto channel = unique_channel("soak_" + name);
  EventLog log;
  auto receiver_options = options(channel, "soak-receiver-" + name);
  receiver_options.spill = mode;
  receiver_options.on_gap = log.gap_handler();
  auto publisher_options = options(channel, "soak-publisher-" + name);
  publisher_options.spill = mode;
  PostgresClusterBus receiver(receiver_options);
  PostgresClusterBus publisher(publisher_options);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());

  constexpr int total = 10000;
  constexpr auto interval = std::chrono::microseconds(500);  // 2,000 a second
  std::atomic<bool> publishing{true};
  std::vector<std::chrono::milliseconds> reconnect_times;
  std::thread killer([&] {
    for (int kill = 1; kill <= 5 && publishing; ++kill) {
      std::this_thread::sleep_for(800ms);
      const auto killed_at = std::chrono::steady_clock::now();
      if (testing::terminate_backend(url(), receiver, BusConnection::listener) != 1) {
        continue;
      }
      eventually([&] { return receiver.stats().reconnects >= static_cast<std::uint64_t>(kill); },
                 5s);
      reconnect_times.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - killed_at));
    }
  });
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < total; ++i) {
    std::this_thread::sleep_until(start + i * interval);
    publisher.publish(i);
  }
  publishing = false;
  killer.join();
  ASSERT_EQ(reconnect_times.size(), 5u);
  for (const auto t : reconnect_times) EXPECT_LT(t, 1000ms) << "a reconnect took too long";

  // Settle: everything committed has been delivered or reported.
  ASSERT_TRUE(eventually(
      [&] {
        std::uint64_t missing = 0;
        for (const auto& g : log.known_gaps()) missing += g.count();
        return seen.size() + missing >= static_cast<std::size_t>(total);
      },
      30s));
  std::vector<int> covered(total + 1, 0);
  std::uint64_t last = 0;
  for (const auto& m : seen.messages()) {
    EXPECT_GT(m.sequence, last) << "in order, never twice";
    last = m.sequence;
    ++covered[m.sequence];
  }
  for (const auto& g : log.known_gaps()) {
    for (auto seq = g.first_missing; seq <= g.last_missing && seq <= total; ++seq) ++covered[seq];
  }
  for (int seq = 1; seq <= total; ++seq) {
    ASSERT_EQ(covered[seq], 1) << "sequence " << seq << " neither delivered once nor in one gap";
  }
  const auto stats = receiver.stats();
  std::cout << "soak " << name << ": delivered " << stats.delivered << ", in gaps "
            << stats.messages_missing << " (" << stats.gaps << " gaps), duplicates dropped "
            << stats.duplicates_dropped << ", reconnects " << stats.reconnects << "\n";
  if (mode == SpillMode::always) {
    EXPECT_EQ(seen.size(), static_cast<std::size_t>(total)) << "always: nothing lost";
    EXPECT_TRUE(log.gaps().empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, SoakTest, ::testing::Values(SpillMode::always, SpillMode::overflow),
                         [](const ::testing::TestParamInfo<SpillMode>& info) {
                           return info.param == SpillMode::always ? "always" : "overflow";
                         });

}  // namespace
}  // namespace syncbus
