// SpillMode::always: after a reconnect the listener reads what it missed
// from the spill table, so nothing acknowledged is lost and nothing repeats.
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
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

// A receiving bus whose listener a test can keep away from the server
// (its role may not log in meanwhile), and a publisher on its channel.
struct KeptOutReceiver {
  KeptOutReceiver(const std::string& url, PostgresBusOptions receiver_options,
                  const PostgresBusOptions& publisher_options, const std::string& tag,
                  const std::string& table = "public.sync_cluster_spill")
      : role(url, tag, table) {
    receiver_options.on_error = log.error_handler();
    receiver_options.on_gap = log.gap_handler();
    receiver.emplace(role.as_role(receiver_options));
    publisher.emplace(publisher_options);
    subscription = receiver->subscribe(seen.handler());
  }
  ~KeptOutReceiver() {
    subscription.unsubscribe();
    receiver.reset();
    publisher.reset();
  }
  testing::RoleThatCanBeKeptOut role;
  EventLog log;
  Collector seen;
  std::optional<PostgresClusterBus> receiver;
  std::optional<PostgresClusterBus> publisher;
  Subscription subscription;
};

TEST_F(CatchUpTest, WhatWasMissedIsReadOnceInBoundedFetchesAndNothingDeliveredIsReadAgain) {
  // Bodies of 1 and 3 MB among small ones: a fetch loads about 8 MB at
  // most, so these take several fetches, each leading to the next. What was
  // delivered before the connection broke is not read again: the catch-up
  // reads the transactions its position had not seen, and skips what it
  // had handed on since.
  const auto channel = unique_channel("catch_up_missed");
  KeptOutReceiver r(url(), durable_options(channel, "missed-receiver"),
                    durable_options(channel, "missed-publisher"),
                    "missed" + channel.substr(channel.size() - 6));
  const auto body = [](int i) -> nlohmann::json {
    if (i % 8 == 0) return std::string(3 << 20, 'M');
    if (i % 4 == 0) return std::string(1 << 20, 'm');
    return {{"i", i}};
  };
  constexpr int before = 20, away = 40, after = 10;
  for (int i = 1; i <= before; ++i) r.publisher->publish(body(i));
  ASSERT_TRUE(r.seen.wait_for_count(before, 20s));

  r.role.keep_out(*r.receiver);
  for (int i = before + 1; i <= before + away; ++i) r.publisher->publish(body(i));
  EXPECT_EQ(r.seen.size(), std::size_t{before}) << "the listener is away";
  r.role.let_in();
  ASSERT_TRUE(r.seen.wait_for_count(before + away, 30s));
  for (int i = before + away + 1; i <= before + away + after; ++i) r.publisher->publish(body(i));
  ASSERT_TRUE(r.seen.wait_for_count(before + away + after, 20s));

  const auto last = check_exactly_once_in_order(r.seen);
  EXPECT_EQ(last.at(r.publisher->instance_id()), std::uint64_t{before + away + after});
  const auto messages = r.seen.messages();
  ASSERT_EQ(messages.size(), std::size_t{before + away + after});
  for (int i = 1; i <= before + away + after; ++i) EXPECT_EQ(messages[i - 1].body, body(i)) << i;
  const auto stats = r.receiver->stats();
  EXPECT_EQ(stats.reconnects, 1u);
  EXPECT_EQ(stats.duplicates_dropped, 0u) << "nothing delivered was read again";
  EXPECT_TRUE(r.log.gaps().empty());
  // The errors: the lost connection, then attempts refused while kept out.
  for (const auto& e : r.log.errors()) {
    EXPECT_TRUE(e.find("lost its connection") != std::string::npos ||
                e.find("not permitted to log in") != std::string::npos)
        << e;
  }
}

// What a catch-up reads from the table says when it was sent, so its lag
// shows: messages published while the listener was kept out for 2 s were
// delivered over a second after they were sent.
TEST_F(CatchUpTest, MessagesReadInACatchUpShowTheirLag) {
  const auto channel = unique_channel("catch_up_lag");
  KeptOutReceiver r(url(), durable_options(channel, "lag-receiver"),
                    durable_options(channel, "lag-publisher"),
                    "lag" + channel.substr(channel.size() - 6));
  r.publisher->publish(nlohmann::json("before"));
  ASSERT_TRUE(r.seen.wait_for_count(1, 20s));
  r.role.keep_out(*r.receiver);
  for (int i = 0; i < 3; ++i) r.publisher->publish({{"away", i}});
  // Away for 2 s: a second over the bucket's bound, for the two buses'
  // estimates of the server's clock to disagree in.
  std::this_thread::sleep_for(2s);
  r.role.let_in();
  ASSERT_TRUE(r.seen.wait_for_count(4, 20s));
  ASSERT_TRUE(eventually([&] { return r.receiver->stats().delivery_lag.count == 4; }))
      << r.receiver->stats().delivery_lag.count;
  EXPECT_EQ(testing::lags_over(r.receiver->stats().delivery_lag, 1000), 3u);
}

// Rows anyone who may INSERT can plant: a negative sequence (no genuine row
// has one) is never listed, nor an origin no bus could have (an envelope's
// would be refused; this one is 100 KB); a negative `sent` is no time. Read
// as unsigned, either threw, and the catch-up was retried for ever,
// delivering nothing.
// (Found from outside, round 5.)
TEST_F(CatchUpTest, RowsPlantedWithANonsenseSequenceOrSentDoNotHoldUpACatchUp) {
  const auto channel = unique_channel("catch_up_planted");
  KeptOutReceiver r(url(), durable_options(channel, "planted-receiver"),
                    durable_options(channel, "planted-publisher"),
                    "planted" + channel.substr(channel.size() - 6));
  r.publisher->publish(nlohmann::json("before"));
  ASSERT_TRUE(r.seen.wait_for_count(1, 20s));
  r.role.keep_out(*r.receiver);
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body, sent) VALUES ($1, "
      "'planted', -1, '1', NULL), ($1, 'poison', 1, '{\"p\":1}', -5), ($1, 'no origin "
      "any bus has', 1, '2', NULL), ($1, repeat('o', 100000), 1, '3', NULL)",
      channel);
  for (int i = 0; i < 3; ++i) r.publisher->publish({{"away", i}});
  r.role.let_in();
  // A receiver without secrets takes the table's rows as they are: the
  // publisher's four, and the row with no time.
  ASSERT_TRUE(r.seen.wait_for_count(5, 20s)) << r.seen.size();
  // The catch-up is over; one more live message comes after all it read.
  ASSERT_TRUE(eventually([&] { return r.receiver->stats().reconnects >= 1; }));
  r.publisher->publish(nlohmann::json("after"));
  ASSERT_TRUE(r.seen.wait_for_count(6, 20s)) << r.seen.size();
  ASSERT_EQ(r.seen.size(), 6u);
  std::vector<std::string> origins;
  for (const auto& m : r.seen.messages()) origins.push_back(m.origin);
  EXPECT_EQ(std::count(origins.begin(), origins.end(), "poison"), 1);
  EXPECT_EQ(std::count(origins.begin(), origins.end(), r.publisher->instance_id()), 5);
  EXPECT_TRUE(r.log.gaps().empty());
  for (const auto& e : r.log.errors()) {
    EXPECT_TRUE(e.find("lost its connection") != std::string::npos ||
                e.find("not permitted to log in") != std::string::npos)
        << e;
  }
}

TEST_F(CatchUpTest, ACatchUpThatWaitsOnALockLosesNothing) {
  // An operator's ALTER TABLE or VACUUM FULL holds an ACCESS EXCLUSIVE lock
  // just as the listener comes back: its catch-up waits (past its
  // lock_timeout, it retries), and reads everything once the lock is gone.
  // Nothing depends on how long that takes.
  const auto channel = unique_channel("catch_up_lock");
  const testing::OwnSpillTable table(url(), "catch_up_lock");  // the lock holds up no other test
  auto receiver_options = durable_options(channel, "lock-receiver");
  receiver_options.query_timeout = 2000ms;  // lock_timeout 1 s, and a second left for its error
  receiver_options.spill_table = table.name();
  auto publisher_options = durable_options(channel, "lock-publisher");
  publisher_options.spill_table = table.name();
  KeptOutReceiver r(url(), receiver_options, publisher_options,
                    "lock" + channel.substr(channel.size() - 6), table.qualified());
  r.publisher->publish(nlohmann::json("before"));
  ASSERT_TRUE(r.seen.wait_for_count(1, 20s));
  r.role.keep_out(*r.receiver);
  for (int i = 1; i <= 100; ++i) r.publisher->publish(i);
  pqxx::connection locker_connection(url());
  pqxx::work locker(locker_connection);
  locker.exec("LOCK TABLE " + table.qualified() + " IN ACCESS EXCLUSIVE MODE");
  r.role.let_in();
  // Back, and catching up: its first page waits on the lock, gives up at its
  // lock_timeout, says so, and tries again.
  ASSERT_TRUE(eventually([&] { return r.log.errors_containing("tries again") >= 1; }, 10s));
  std::this_thread::sleep_for(2s);  // the lock is held this long: nothing to poll for
  EXPECT_EQ(r.seen.size(), 1u) << "nothing can be read under the lock";
  EXPECT_EQ(r.receiver->stats().reconnects, 0u) << "not back until it has caught up";
  locker.commit();
  ASSERT_TRUE(r.seen.wait_for_count(101, 20s));
  check_exactly_once_in_order(r.seen);
  EXPECT_EQ(r.seen.size(), 101u);
  EXPECT_TRUE(r.log.gaps().empty());
  // Counted once the catch-up is over, which is after its last page went to
  // the delivery queue: the handler may see that page first (it did, under
  // AddressSanitizer on a fresh machine).
  ASSERT_TRUE(eventually([&] { return r.receiver->stats().reconnects >= 1u; }, 10s));
  EXPECT_EQ(r.receiver->stats().reconnects, 1u) << "one reconnect, however long it waited";
}

TEST_F(CatchUpTest, ATransactionThatCommitsLongAfterItStartedIsReadWhateverItsTimestamp) {
  // A writer (another client, following the protocol) inserts its row and
  // commits eleven seconds later, while the listener is away: its
  // created_at is eleven seconds old when it commits (older than the 10 s
  // margin that syncbus 0.1 allowed, which lost it), and no margin is
  // involved now.
  const auto channel = unique_channel("late_commit");
  KeptOutReceiver r(url(), durable_options(channel, "late-receiver"),
                    durable_options(channel, "late-publisher"),
                    "late" + channel.substr(channel.size() - 6));
  pqxx::connection slow_connection(url());
  pqxx::work slow(slow_connection);
  slow.exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) "
      "VALUES ($1, 'late-writer', 1, '\"late\"')",
      channel);
  slow.exec_params("SELECT pg_notify($1, $2)", channel,
                   R"({"v":1,"origin":"late-writer","seq":1,"spilled":true})");
  r.publisher->publish(nlohmann::json("first"));
  ASSERT_TRUE(r.seen.wait_for_count(1, 20s));
  std::this_thread::sleep_for(11s);  // the transaction is open this long
  r.role.keep_out(*r.receiver);
  slow.commit();
  r.publisher->publish(nlohmann::json("second"));
  r.role.let_in();
  ASSERT_TRUE(r.seen.wait_for_count(3, 20s));
  const auto messages = r.seen.messages();
  EXPECT_EQ(messages[1].body, "late");
  EXPECT_EQ(messages[2].body, "second");
  EXPECT_TRUE(r.log.gaps().empty());
}

// An origin that started while the listener was away, and whose first rows
// were vacuumed before the listener came back: it was born after the
// listener started listening (its "born" transaction is not in the
// listener's start snapshot), so its messages from 1 were owed: a gap.
TEST_F(CatchUpTest, TheVacuumedFirstRowsOfAnOriginBornWhileAwayAreAGap) {
  const auto channel = unique_channel("born_away");
  KeptOutReceiver r(url(), durable_options(channel, "born-away-receiver"),
                    durable_options(channel, "born-away-old"),
                    "born" + channel.substr(channel.size() - 6));
  r.publisher->publish(nlohmann::json("from an older origin"));
  ASSERT_TRUE(r.seen.wait_for_count(1, 20s));
  r.role.keep_out(*r.receiver);
  PostgresClusterBus newcomer(durable_options(channel, "born-away-new"));
  for (int i = 1; i <= 8; ++i) newcomer.publish(i);
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec_params(
      "DELETE FROM public.sync_cluster_spill WHERE channel = $1 AND origin = $2 AND sequence <= 5",
      channel, newcomer.instance_id());
  r.role.let_in();
  ASSERT_TRUE(r.seen.wait_for_count(4, 20s));
  const auto gaps = r.log.known_gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].origin, newcomer.instance_id());
  EXPECT_EQ(gaps[0].first_missing, 1u);
  EXPECT_EQ(gaps[0].last_missing, 5u);
  const auto messages = r.seen.messages();
  EXPECT_EQ(messages[1].sequence, 6u);
  EXPECT_EQ(messages[3].sequence, 8u);
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
  publisher.publish(nlohmann::json("fast one"));  // a higher id, committed and delivered first
  ASSERT_TRUE(seen.wait_for_count(1));

  ASSERT_EQ(testing::terminate_backend(url(), receiver, BusConnection::listener), 1);
  slow.exec_params("SELECT pg_notify($1, $2)", channel,
                   R"({"v":1,"origin":"slow","seq":1,"spilled":true})");
  slow.commit();  // while the listener is (most likely) away

  ASSERT_TRUE(seen.wait_for_count(2, 10s));
  const auto messages = seen.messages();
  EXPECT_EQ(messages[1].origin, "slow");
  EXPECT_EQ(messages[1].body, "slow one");
  publisher.publish(nlohmann::json("after"));
  ASSERT_TRUE(seen.wait_for_count(3, 10s));
  EXPECT_EQ(seen.size(), 3u) << "no duplicates";
  EXPECT_TRUE(log.gaps().empty());
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
      testing::publish_slowly(url(), channel, "four-slow", sequence,
                              sequence % 3 == 0 ? 2000ms : 100ms);
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
  receiver_options.on_error = log.error_handler();
  auto publisher_options = options(channel, "soak-publisher-" + name);
  publisher_options.spill = mode;
  PostgresClusterBus receiver(receiver_options);
  PostgresClusterBus publisher(publisher_options);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());

  constexpr int total = 10000;
  constexpr auto interval = std::chrono::microseconds(500);  // 2,000 a second
  std::vector<std::chrono::milliseconds> reconnect_times;
  std::thread killer([&] {
    // Five kills, however long each takes (publishing may end before the
    // last: its reconnect is measured all the same).
    for (int kill = 1; kill <= 5; ++kill) {
      std::this_thread::sleep_for(800ms);
      // The listener may be between sessions: kill the next one.
      const auto give_up = std::chrono::steady_clock::now() + 10s;
      while (testing::terminate_backend(url(), receiver, BusConnection::listener) != 1 &&
             std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(20ms);
      }
      // From the kill on: not the time this test takes to open its own
      // connection to kill with (a new server process; under load, seen
      // making a reconnect look 1,142 ms long).
      const auto killed_at = std::chrono::steady_clock::now();
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
  killer.join();
  ASSERT_EQ(reconnect_times.size(), 5u);
  std::string took;
  for (const auto t : reconnect_times) took += " " + std::to_string(t.count());
  std::cout << "soak " << name << ": reconnects took (ms):" << took << "\n";
  for (const auto t : reconnect_times) {
    EXPECT_LT(t, 1000ms) << "a reconnect took too long; the receiver's errors:\n"
                         << [&] {
                              std::string all;
                              for (const auto& e : log.errors()) all += "  " + e + "\n";
                              return all;
                            }();
  }

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
