// Group commit against a real PostgreSQL: publishes that arrive while a
// transaction is in flight share the next one, and yet every caller returns
// only once its own message is committed, or with the error of its batch.
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>

#include <pqxx/pqxx>
#include <regex>

#include <atomic>
#include <set>
#include <thread>

#include "pg_helpers.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using testing::check_exactly_once_in_order;
using testing::Collector;
using testing::eventually;
using testing::unique_channel;

class GroupCommitTest : public testing::PostgresTest {
 protected:
  // `threads` threads publish `each` messages through one bus; body(t, i)
  // gives thread t's i-th body.
  template <typename Body>
  static void publish_from_threads(PostgresClusterBus& bus, int threads, int each, Body body) {
    std::vector<std::thread> publishers;
    for (int t = 0; t < threads; ++t) {
      publishers.emplace_back([&, t] {
        for (int i = 0; i < each; ++i) bus.publish(body(t, i));
      });
    }
    for (auto& p : publishers) p.join();
  }
};

TEST_F(GroupCommitTest, SixteenThreadsShareTransactionsAndEveryMessageArrivesOnceInOrder) {
  const auto channel = unique_channel("group");
  PostgresClusterBus sender(options(channel, "group-sender"));
  PostgresClusterBus first(options(channel)), second(options(channel));
  Collector seen_first, seen_second;
  auto a = first.subscribe(seen_first.handler());
  auto b = second.subscribe(seen_second.handler());
  constexpr int threads = 16, each = 250;
  const std::string padding(180, 'p');  // about 200-byte bodies
  publish_from_threads(sender, threads, each, [&](int t, int i) {
    return nlohmann::json{{"t", t}, {"i", i}, {"pad", padding}};
  });
  constexpr std::size_t total = threads * each;
  for (auto* seen : {&seen_first, &seen_second}) {
    ASSERT_TRUE(seen->wait_for_count(total, 30s)) << seen->size();
    check_exactly_once_in_order(*seen);
    // Each thread's messages in its own publish order.
    std::vector<int> next(threads, 0);
    for (const auto& m : seen->messages()) {
      const int t = m.body["t"];
      EXPECT_EQ(m.body["i"], next[t]++) << "thread " << t;
    }
  }
  const auto stats = sender.stats();
  EXPECT_EQ(stats.published, total);
  EXPECT_LT(stats.publish_batches, total) << "no two messages ever shared a transaction";
  std::cout << total << " messages from " << threads << " threads in " << stats.publish_batches
            << " transactions\n";
}

TEST_F(GroupCommitTest, ALoneMessageGoesAtOnceInTheSingleMessageForm) {
  const auto channel = unique_channel("lone");
  pqxx::connection raw(url());
  pqxx::nontransaction(raw).exec("LISTEN " + raw.quote_name(channel));
  std::vector<std::string> payloads;
  struct Receiver : pqxx::notification_receiver {
    Receiver(pqxx::connection_base& c, const std::string& channel, std::vector<std::string>& out)
        : pqxx::notification_receiver(c, channel), out_(out) {}
    void operator()(const std::string& payload, int) override { out_.push_back(payload); }
    std::vector<std::string>& out_;
  } receiver(raw, channel, payloads);
  PostgresClusterBus sender(options(channel, "lone-sender"));
  sender.publish(nlohmann::json("alone"));
  for (int i = 0; i < 100 && payloads.empty(); ++i) raw.await_notification(0, 50000);
  ASSERT_EQ(payloads.size(), 1u);
  // The single-message form, with the origin's birth transaction and when
  // it was sent.
  const std::regex single(R"(\{"v":1,"origin":")" + sender.instance_id() +
                          R"(","seq":1,"born":[1-9][0-9]*,"sent":[1-9][0-9]{12},"body":"alone"\})");
  EXPECT_TRUE(std::regex_match(payloads[0], single)) << payloads[0];
  EXPECT_EQ(sender.stats().publish_batches, 1u);
}

TEST_F(GroupCommitTest, MixedSizesKeepOrderAndOnlyTheLargeOnesSpill) {
  const auto channel = unique_channel("mixed");
  PostgresClusterBus sender(options(channel, "mixed-sender"));
  PostgresClusterBus receiver(options(channel));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  constexpr int threads = 8, each = 60;
  // Every third message is 20 KB and must spill; the others pack together.
  const auto body = [](int t, int i) {
    return nlohmann::json{{"t", t}, {"i", i}, {"pad", std::string(i % 3 == 0 ? 20000 : 150, 'm')}};
  };
  publish_from_threads(sender, threads, each, body);
  constexpr std::size_t total = threads * each;
  ASSERT_TRUE(seen.wait_for_count(total, 30s)) << seen.size();
  check_exactly_once_in_order(seen);
  for (const auto& m : seen.messages()) EXPECT_EQ(m.body, body(m.body["t"], m.body["i"]));
  EXPECT_EQ(sender.stats().spilled, std::uint64_t{threads * (each / 3)});
}

TEST_F(GroupCommitTest, AFailedBatchFailsEveryCallerInItAndNoneOfThemIsDelivered) {
  const auto channel = unique_channel("failing");
  const std::string table = "group_commit_spill_" + std::to_string(::getpid());
  auto sender_options = options(channel, "failing-sender");
  sender_options.spill_table = table;
  PostgresClusterBus sender(sender_options);
  auto receiver_options = options(channel);
  receiver_options.spill_table = table;
  PostgresClusterBus receiver(receiver_options);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  // Without the table every batch holding a large message fails as a whole,
  // small messages batched with it included.
  {
    pqxx::connection admin(url());
    pqxx::nontransaction(admin).exec("DROP TABLE public." + admin.quote_name(table));
  }
  std::mutex mutex;
  std::set<std::string> acknowledged;
  std::atomic<int> failed{0};
  std::vector<std::thread> publishers;
  for (int t = 0; t < 8; ++t) {
    publishers.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        const std::string id = std::to_string(t) + "/" + std::to_string(i);
        const bool large = (t + i) % 4 == 0;
        try {
          sender.publish({{"id", id}, {"pad", std::string(large ? 9000 : 100, 'x')}});
          std::lock_guard<std::mutex> lock(mutex);
          acknowledged.insert(id);
        } catch (const database_error& e) {
          EXPECT_NE(std::string(e.what()).find(table), std::string::npos) << e.what();
          ++failed;
        }
      }
    });
  }
  for (auto& p : publishers) p.join();
  EXPECT_GE(failed.load(), 80) << "every large message fails";
  // What was acknowledged arrives, and nothing else does.
  ASSERT_TRUE(seen.wait_for_count(acknowledged.size(), 30s));
  std::this_thread::sleep_for(300ms);
  std::set<std::string> delivered;
  for (const auto& m : seen.messages()) delivered.insert(m.body["id"].get<std::string>());
  EXPECT_EQ(delivered, acknowledged);
  EXPECT_EQ(seen.size(), acknowledged.size());
  EXPECT_EQ(sender.stats().published, acknowledged.size());
}

TEST_F(GroupCommitTest, PublishAsyncCommitsInCallOrderAndReportsThroughTheFuture) {
  const auto channel = unique_channel("async");
  auto o = options(channel, "async-sender");
  o.spill = SpillMode::never;
  PostgresClusterBus sender(o);
  PostgresClusterBus receiver(options(channel));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  std::vector<std::future<void>> committed;
  constexpr int total = 5000;
  for (int i = 0; i < total; ++i) committed.push_back(sender.publish_async(i));
  // Refusals come through the future too, and take no sequence number.
  auto too_large = sender.publish_async(nlohmann::json(std::string(9000, 'x')));
  committed.push_back(sender.publish_async(total));
  for (auto& f : committed) EXPECT_NO_THROW(f.get());
  EXPECT_THROW(too_large.get(), payload_too_large);
  ASSERT_TRUE(seen.wait_for_count(total + 1, 30s)) << seen.size();
  check_exactly_once_in_order(seen);  // consecutive: the refused one used no number
  for (const auto& m : seen.messages()) EXPECT_EQ(m.body, m.sequence - 1);
  EXPECT_LT(sender.stats().publish_batches, std::uint64_t{total} / 4)
      << "queued messages should share transactions";
  sender.close();
  EXPECT_THROW(sender.publish_async(1).get(), closed_error);
}

TEST_F(GroupCommitTest, LingerGathersALonePublishersMessagesIntoFewerTransactions) {
  const auto channel = unique_channel("linger");
  auto o = options(channel, "linger-sender");
  o.publish_linger = 2ms;
  PostgresClusterBus sender(o);
  std::vector<std::future<void>> committed;
  for (int i = 0; i < 2000; ++i) committed.push_back(sender.publish_async(i));
  for (auto& f : committed) f.get();
  EXPECT_LT(sender.stats().publish_batches, 200u);
  o.publish_linger = -1us;
  EXPECT_THROW(PostgresClusterBus bad(o), configuration_error);
}

// The publish queue is bounded in bytes: while a transaction is stuck,
// publish_async waits for room (backpressure) and, past its deadline, fails
// without sending anything; memory does not grow with the callers' zeal.
TEST_F(GroupCommitTest, AFullPublishQueueMakesPublishersWaitThenTimeOut) {
  const auto channel = unique_channel("queue_bytes");
  const std::string table = "queue_bytes_spill_" + std::to_string(::getpid());
  auto o = options(channel, "queue-bytes");
  o.spill_table = table;
  o.publish_queue_bytes = 30000;
  o.publish_timeout = 1000ms;
  o.heartbeat_interval = 0ms;
  PostgresClusterBus bus(o);
  Collector seen;
  auto s = bus.subscribe(seen.handler());
  // Another session holds the spill table: the bus's INSERT waits for it.
  pqxx::connection admin(url());
  auto hold = std::make_unique<pqxx::work>(admin);
  hold->exec("LOCK TABLE public." + admin.quote_name(table) + " IN ACCESS EXCLUSIVE MODE");
  const std::string big(9000, 'q');  // spilled: 9 KB a message
  std::vector<std::future<void>> futures;
  futures.push_back(bus.publish_async(nlohmann::json(big)));  // in flight, blocked
  // Only once its INSERT waits on the lock (it is then no longer queued,
  // and the next three fill the queue instead of joining its batch).
  ASSERT_TRUE(eventually([&] {
    return testing::a_session_waits_to_lock(url(), "public." + admin.quote_name(table));
  }));
  for (int i = 0; i < 3; ++i)
    futures.push_back(bus.publish_async(nlohmann::json(big)));  // 27 KB queued
  const auto before = std::chrono::steady_clock::now();
  futures.push_back(bus.publish_async(nlohmann::json("refused " + big)));  // no room
  const auto waited = std::chrono::steady_clock::now() - before;
  EXPECT_GE(waited, 800ms) << "publish_async waits for room";
  EXPECT_THROW(futures.back().get(), timeout_error);
  futures.pop_back();
  hold->abort();  // let the stuck transaction through
  for (auto& f : futures) {
    try {
      f.get();
    } catch (const timeout_error&) {
      // The ones that waited behind the lock may have passed their deadline.
    }
  }
  bus.publish(nlohmann::json("afterwards"));
  ASSERT_TRUE(eventually([&] {
    const auto m = seen.messages();
    return !m.empty() && m.back().body == "afterwards";
  }));
  for (const auto& m : seen.messages()) EXPECT_NE(m.body, "refused " + big) << "never sent";
}

}  // namespace
}  // namespace syncbus
