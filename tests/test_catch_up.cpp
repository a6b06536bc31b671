// SpillMode::always: after a reconnect the listener reads what it missed
// from the spill table, so nothing acknowledged is lost and nothing repeats.
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <map>

#include "pg_helpers.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using testing::BusConnection;
using testing::Collector;
using testing::EventLog;
using testing::eventually;
using testing::unique_channel;

class CatchUpTest : public testing::PostgresTest {
 protected:
  PostgresBusOptions always(const std::string& channel, const std::string& instance_id = "") const {
    auto o = options(channel, instance_id);
    o.spill = SpillMode::always;
    o.heartbeat_interval = 0ms;
    return o;
  }

  // Every message once, in order per origin; returns how many per origin.
  static std::map<std::string, std::uint64_t> check_exactly_once_in_order(const Collector& seen) {
    std::map<std::string, std::uint64_t> last;
    for (const auto& m : seen.messages()) {
      EXPECT_EQ(m.sequence, last[m.origin] + 1) << "from " << m.origin;
      last[m.origin] = m.sequence;
    }
    return last;
  }
};

TEST_F(CatchUpTest, AcknowledgedMessagesSurviveRepeatedListenerKills) {
  const auto channel = unique_channel("always_kills");
  EventLog log;
  auto receiver_options = always(channel, "catch-up-receiver");
  receiver_options.on_error = log.error_handler();
  receiver_options.on_gap = log.gap_handler();
  PostgresClusterBus receiver(receiver_options);
  PostgresClusterBus publisher(always(channel, "catch-up-publisher"));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());

  constexpr int kills = 5;
  constexpr int per_round = 100;
  for (int round = 0; round < kills; ++round) {
    ASSERT_EQ(
        testing::terminate_backend(url(), "syncbus:catch-up-receiver", BusConnection::listener), 1);
    // Published while the listener is away (its first retry waits 25-50 ms)
    // and after it is back: all acknowledged, all must arrive.
    for (int i = 0; i < per_round; ++i) publisher.publish({{"round", round}, {"i", i}});
    const auto reconnected = std::chrono::steady_clock::now();
    ASSERT_TRUE(eventually([&] { return receiver.stats().reconnects == round + 1u; }, 5s));
    EXPECT_LT(std::chrono::steady_clock::now() - reconnected, 1s);
  }
  ASSERT_TRUE(seen.wait_for_count(kills * per_round, 20s));
  const auto last = check_exactly_once_in_order(seen);
  EXPECT_EQ(last.at("catch-up-publisher"), std::uint64_t{kills * per_round});
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kills * per_round)) << "no duplicates";
  EXPECT_TRUE(log.gaps().empty()) << "nothing was lost, so no gap may be reported";
}

TEST_F(CatchUpTest, ARowCommittedOutOfIdOrderWhileAwayIsNotMissed) {
  const auto channel = unique_channel("id_order");
  EventLog log;
  auto receiver_options = always(channel, "id-order-receiver");
  receiver_options.on_gap = log.gap_handler();
  PostgresClusterBus receiver(receiver_options);
  PostgresClusterBus publisher(always(channel, "fast"));
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

  ASSERT_EQ(testing::terminate_backend(url(), "syncbus:id-order-receiver", BusConnection::listener),
            1);
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

TEST_F(CatchUpTest, OverflowModeReportsTheReconnectInstead) {
  const auto channel = unique_channel("overflow_kill");
  EventLog log;
  auto receiver_options = options(channel, "overflow-receiver");
  receiver_options.on_gap = log.gap_handler();
  PostgresClusterBus receiver(receiver_options);
  ASSERT_EQ(testing::terminate_backend(url(), "syncbus:overflow-receiver", BusConnection::listener),
            1);
  ASSERT_TRUE(eventually([&] { return log.unknown_gaps() == 1; }, 5s));
}

}  // namespace
}  // namespace syncbus
