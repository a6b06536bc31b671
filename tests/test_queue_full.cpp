// What a PostgresClusterBus does when its handlers fall behind: the listener
// keeps reading whatever they do; what the full delivery queue drops is read
// back from the spill table (SpillMode::always) or reported as exact gaps.
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <unistd.h>
#include <atomic>
#include <fstream>
#include <future>
#include <iostream>
#include <thread>

#include "pg_helpers.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using testing::check_exactly_once_in_order;
using testing::Collector;
using testing::EventLog;
using testing::eventually;
using testing::expect_each_delivered_or_in_a_gap_once;
using testing::HeldSubscription;
using testing::unique_channel;

double notification_queue_usage(const std::string& url) {
  pqxx::connection admin(url);
  return pqxx::nontransaction(admin).exec1("SELECT pg_notification_queue_usage()")[0].as<double>();
}

class QueueFullTest : public testing::PostgresTest {};

// A bus whose handlers are held on its first message until held.release(),
// so that what follows waits in (and overflows) its delivery queue; it
// records what it delivers, and its gaps and errors.
struct HeldReceiver {
  explicit HeldReceiver(PostgresBusOptions options) : bus(logged(std::move(options), log)) {}

  static PostgresBusOptions logged(PostgresBusOptions options, EventLog& log) {
    options.on_gap = log.gap_handler();
    options.on_error = log.error_handler();
    return options;
  }

  EventLog log;
  PostgresClusterBus bus;
  HeldSubscription held{bus};
  Collector seen;
  Subscription record = bus.subscribe(seen.handler());
};

TEST_F(QueueFullTest, AlwaysModeReadsBackWhatAFullQueueDroppedInOrder) {
  const auto channel = unique_channel("reread");
  auto slow_options = durable_options(channel, "reread-slow");
  slow_options.delivery_queue_capacity = 50;
  HeldReceiver slow(slow_options);
  PostgresClusterBus first_sender(durable_options(channel, "reread-sender-1"));
  PostgresClusterBus second_sender(durable_options(channel, "reread-sender-2"));

  first_sender.publish(nlohmann::json("first"));
  ASSERT_TRUE(slow.held.wait_until_held());
  constexpr int per_sender = 1000;
  std::thread second([&] {
    for (int i = 1; i <= per_sender; ++i) second_sender.publish(i);
  });
  for (int i = 2; i <= per_sender; ++i) first_sender.publish(i);
  second.join();
  ASSERT_TRUE(eventually([&] { return slow.bus.stats().dropped_queue_full >= per_sender; }));
  EXPECT_LT(notification_queue_usage(url()), 0.01) << "the listener kept reading";
  slow.held.release();

  ASSERT_TRUE(slow.seen.wait_for_count(2 * per_sender, 30s));
  std::this_thread::sleep_for(200ms);  // time for a duplicate to show up
  const auto last = check_exactly_once_in_order(slow.seen);
  EXPECT_EQ(last.at(first_sender.instance_id()), std::uint64_t{per_sender});
  EXPECT_EQ(last.at(second_sender.instance_id()), std::uint64_t{per_sender});
  EXPECT_EQ(slow.seen.size(), 2u * per_sender) << "no duplicates";
  EXPECT_TRUE(slow.log.gaps().empty()) << "nothing was lost, so no gap may be reported";
  EXPECT_TRUE(slow.log.errors().empty());
  const auto stats = slow.bus.stats();
  EXPECT_GE(stats.reread_from_table, 2u * per_sender - 2 * 50);
  EXPECT_EQ(stats.delivered, 2u * per_sender);
  EXPECT_EQ(stats.gaps, 0u);
}

// Spilled bodies of 20 KB against a queue of 100 KB: the byte bound, not the
// 65,536 messages, decides what waits behind a blocked handler.
TEST_F(QueueFullTest, TheDeliveryQueueHoldsNoMoreThanItsBytesAndReportsTheRestAsExactGaps) {
  const auto channel = unique_channel("queue_bytes");
  constexpr std::size_t queue_bytes = 100'000;
  const std::string large(20'000, 'q');
  auto slow_options = options(channel, "bytes-slow");
  slow_options.delivery_queue_bytes = queue_bytes;
  HeldReceiver slow(slow_options);
  PostgresClusterBus sender(options(channel, "bytes-sender"));

  sender.publish(nlohmann::json("first"));
  ASSERT_TRUE(slow.held.wait_until_held());
  constexpr int total = 41;
  for (int i = 2; i <= total; ++i) sender.publish(nlohmann::json(large));
  // The handler holds "first"; 2 to 5 wait in the queue; 6 to 41 are dropped.
  ASSERT_TRUE(eventually([&] { return slow.bus.stats().dropped_queue_full + 5 >= total; }))
      << slow.bus.stats().dropped_queue_full << " dropped";
  EXPECT_LT(notification_queue_usage(url()), 0.01) << "the listener kept reading";
  slow.held.release();

  ASSERT_TRUE(eventually([&] {
    const auto s = slow.bus.stats();
    return s.delivered + s.messages_missing == std::uint64_t{total};
  }));
  // "first", then what fits in 100,000 bytes of 20,002-byte bodies: four.
  EXPECT_EQ(slow.seen.size(), 5u);
  expect_each_delivered_or_in_a_gap_once(slow.seen, slow.log, total);
  EXPECT_TRUE(slow.log.errors().empty());
}

TEST_F(QueueFullTest, AlwaysModeReadsBackWhatTheByteBoundDroppedInOrder) {
  const auto channel = unique_channel("reread_bytes");
  const std::string large(20'000, 'r');
  auto slow_options = durable_options(channel, "reread-bytes-slow");
  slow_options.delivery_queue_bytes = 100'000;
  HeldReceiver slow(slow_options);
  PostgresClusterBus sender(durable_options(channel, "reread-bytes-sender"));

  sender.publish(nlohmann::json("first"));
  ASSERT_TRUE(slow.held.wait_until_held());
  constexpr int total = 200;
  for (int i = 2; i <= total; ++i) sender.publish(nlohmann::json(large));
  ASSERT_TRUE(eventually([&] { return slow.bus.stats().dropped_queue_full >= total - 10; }));
  slow.held.release();

  ASSERT_TRUE(slow.seen.wait_for_count(total, 30s)) << slow.seen.size() << " delivered";
  std::this_thread::sleep_for(200ms);  // time for a duplicate to show up
  const auto last = check_exactly_once_in_order(slow.seen);
  EXPECT_EQ(last.at(sender.instance_id()), std::uint64_t{total});
  EXPECT_EQ(slow.seen.size(), std::size_t{total});
  EXPECT_TRUE(slow.log.gaps().empty()) << "nothing was lost, so no gap may be reported";
  EXPECT_TRUE(slow.log.errors().empty());
  EXPECT_GE(slow.bus.stats().reread_from_table, std::uint64_t{total - 10});
}

TEST_F(QueueFullTest, AByteBoundOfZeroIsRefused) {
  auto o = options(unique_channel("queue_bytes_zero"));
  o.delivery_queue_bytes = 0;
  try {
    PostgresClusterBus bus(o);
    FAIL() << "a queue that holds no bytes cannot deliver";
  } catch (const configuration_error& e) {
    EXPECT_NE(std::string(e.what()).find("delivery_queue_bytes"), std::string::npos) << e.what();
  }
}

TEST_F(QueueFullTest, RowsVacuumedBeforeTheyAreReadBackAreAnExactGap) {
  const auto channel = unique_channel("reread_vacuumed");
  auto slow_options = durable_options(channel, "vacuumed-slow");
  slow_options.delivery_queue_capacity = 10;
  HeldReceiver slow(slow_options);
  PostgresClusterBus sender(durable_options(channel, "vacuumed-sender"));

  sender.publish(1);
  ASSERT_TRUE(slow.held.wait_until_held());
  constexpr int total = 200;
  for (int i = 2; i <= total; ++i) sender.publish(i);
  ASSERT_TRUE(eventually([&] { return slow.bus.stats().dropped_queue_full > 0; }));
  EXPECT_EQ(sender.vacuum(0ms), total) << "every row is older than 0 ms";
  slow.held.release();
  sender.publish(total + 1);  // reveals the hole to the sequence check

  ASSERT_TRUE(eventually([&] {
    const auto s = slow.bus.stats();
    return s.delivered + s.messages_missing == total + 1u;
  }));
  expect_each_delivered_or_in_a_gap_once(slow.seen, slow.log, total + 1);
  EXPECT_FALSE(slow.log.gaps().empty());
  EXPECT_EQ(slow.seen.messages().back().sequence, total + 1u);
}

TEST_F(QueueFullTest, ReadingBackIsRefusedWithoutAlwaysMode) {
  auto o = options(unique_channel("reread_refused"));
  o.queue_full_policy = QueueFullPolicy::drop_and_reread;
  try {
    PostgresClusterBus bus(o);
    FAIL() << "drop_and_reread needs SpillMode::always";
  } catch (const configuration_error& e) {
    EXPECT_NE(std::string(e.what()).find("SpillMode::always"), std::string::npos) << e.what();
  }
}

std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// Sanitizers keep freed memory in quarantine: resident size says nothing there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool resident_size_is_meaningful = false;
#else
constexpr bool resident_size_is_meaningful = true;
#endif

TEST_F(QueueFullTest, AHandlerBlockedForAMinuteWhile100kMessagesFlow) {
  const auto channel = unique_channel("blocked_minute");
  constexpr std::size_t capacity = 10000;
  constexpr int total = 100000;
  const std::string kilobyte(1000, 'k');
  EventLog slow_log;
  auto slow_options = durable_options(channel, "minute-slow");
  slow_options.delivery_queue_capacity = capacity;
  slow_options.on_gap = slow_log.gap_handler();
  slow_options.on_error = slow_log.error_handler();
  PostgresClusterBus slow(slow_options);
  EventLog others_log;
  auto observer_options = options(channel, "minute-observer");
  observer_options.on_gap = others_log.gap_handler();
  observer_options.on_error = others_log.error_handler();
  PostgresClusterBus observer(observer_options);
  auto sender_options = durable_options(channel, "minute-sender");
  sender_options.on_error = others_log.error_handler();
  PostgresClusterBus sender(sender_options);
  // Counts rather than keeps: this process's resident size is measured.
  std::atomic<int> observed{0};
  std::atomic<bool> observed_in_order{true};
  auto observe = observer.subscribe([&](const ClusterMessage& m) {
    if (m.sequence != static_cast<std::uint64_t>(observed + 1)) observed_in_order = false;
    ++observed;
  });
  HeldSubscription held(slow);
  Collector seen;
  auto record = slow.subscribe(seen.handler());

  sender.publish(nlohmann::json(kilobyte));
  ASSERT_TRUE(held.wait_until_held());
  const auto blocked_at = std::chrono::steady_clock::now();
  const auto resident_before = resident_bytes();
  std::size_t resident_peak = resident_before;
  double usage_peak = 0;
  std::atomic<bool> flowing{true};
  std::thread sampler([&] {
    while (flowing) {
      resident_peak = std::max(resident_peak, resident_bytes());
      usage_peak = std::max(usage_peak, notification_queue_usage(url()));
      std::this_thread::sleep_for(200ms);
    }
  });
  for (int i = 2; i <= total; ++i) sender.publish(nlohmann::json(kilobyte));
  const auto published_in = std::chrono::steady_clock::now() - blocked_at;
  std::this_thread::sleep_until(blocked_at + 60s);  // the handler blocks for a minute
  flowing = false;
  sampler.join();
  held.release();

  ASSERT_TRUE(seen.wait_for_count(total, 120s)) << seen.size() << " delivered";
  ASSERT_TRUE(eventually([&] { return observed == total; }, 60s)) << observed << " observed";
  EXPECT_TRUE(observed_in_order);
  const auto last = check_exactly_once_in_order(seen);
  EXPECT_EQ(last.at(sender.instance_id()), std::uint64_t{total});
  EXPECT_EQ(seen.size(), std::size_t{total});
  EXPECT_TRUE(slow_log.gaps().empty());
  EXPECT_TRUE(slow_log.errors().empty());
  EXPECT_LT(usage_peak, 0.01) << "the blocked bus held back the server's NOTIFY queue";
  EXPECT_EQ(others_log.errors(), std::vector<std::string>{}) << "the other buses saw an error";
  EXPECT_TRUE(others_log.gaps().empty());
  const auto grown_mb = (resident_peak - resident_before) / 1e6;
  std::cout << "100,000 x 1 KB published in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(published_in).count()
            << " ms; blocked bus: dropped " << slow.stats().dropped_queue_full << ", read back "
            << slow.stats().reread_from_table << "; resident size grew " << grown_mb
            << " MB; NOTIFY queue usage peak " << usage_peak << "\n";
  if (resident_size_is_meaningful) {
    // The blocked bus's queue holds 10,000 messages of about 1 KB (12 MB
    // measured); the 100,000 bodies alone would be 100 MB. What else could
    // grow is a listener falling behind (libpq buffers its backlog of
    // notifications without bound): the three buses here must keep up.
    EXPECT_LT(grown_mb, 30.0) << "memory grew with the traffic, not with the queue";
  }
}

// The bus's own messages come to its handlers from its publisher's thread,
// while its listener reads back what the full queue withheld: a message
// committed after a read began must be read again, not dropped when the
// hold is lifted.
TEST_F(QueueFullTest, ItsOwnMessagesReadBackWhileItKeepsPublishingAllArriveInOrder) {
  const auto channel = unique_channel("own_reread");
  EventLog log;
  auto o = durable_options(channel, "own-reread");
  o.delivery_queue_capacity = 4;
  o.on_gap = log.gap_handler();
  o.on_error = log.error_handler();
  PostgresClusterBus bus(o);
  Collector seen;
  const auto record = seen.handler();
  auto subscription = bus.subscribe([&](const ClusterMessage& m) {
    record(m);
    std::this_thread::sleep_for(20us);  // slower than publishing
  });
  constexpr int total = 5000;
  std::vector<std::future<void>> acknowledged;
  for (int i = 1; i <= total; ++i) acknowledged.push_back(bus.publish_async(i));
  for (auto& a : acknowledged) a.get();
  ASSERT_TRUE(seen.wait_for_count(total, 60s)) << seen.size() << " of " << total;
  std::this_thread::sleep_for(200ms);  // time for a duplicate to show up
  check_exactly_once_in_order(seen);
  EXPECT_EQ(seen.size(), std::size_t{total});
  EXPECT_TRUE(log.gaps().empty()) << log.gaps().size() << " gaps, the first at #"
                                  << log.gaps().front().first_missing;
  EXPECT_GT(bus.stats().reread_from_table, 0u) << "the queue was full, and read back";
}

// In overflow, a bus's own messages go through its delivery queue like
// anyone's: a full queue drops them and reports them as an exact gap of its
// own origin (asked from outside, round 8: the row on a bus's own messages
// did not say so).
TEST_F(QueueFullTest, InOverflowItsOwnMessagesDroppedByAFullQueueAreAnExactGapOfItsOrigin) {
  const auto channel = unique_channel("own_overflow_full");
  auto o = options(channel, "own-overflow");
  o.delivery_queue_capacity = 4;
  HeldReceiver own(o);
  own.bus.publish(nlohmann::json("first"));
  ASSERT_TRUE(own.held.wait_until_held());
  constexpr int total = 40;
  for (int i = 2; i <= total; ++i) own.bus.publish(i);
  ASSERT_TRUE(eventually([&] { return own.bus.stats().dropped_queue_full > 0; }));
  own.held.release();
  ASSERT_TRUE(eventually([&] {
    const auto s = own.bus.stats();
    return s.delivered + s.messages_missing == std::uint64_t{total};
  })) << own.bus.stats().delivered
      << " delivered, " << own.bus.stats().messages_missing << " missing";
  std::this_thread::sleep_for(200ms);  // time for a duplicate to show up
  expect_each_delivered_or_in_a_gap_once(own.seen, own.log, total);
  ASSERT_FALSE(own.log.gaps().empty());
  for (const auto& gap : own.log.gaps()) EXPECT_EQ(gap.origin, own.bus.instance_id());
  EXPECT_LT(own.seen.size(), std::size_t{total});
  EXPECT_TRUE(own.log.errors().empty());
}

// A publish of the bus's own that fails while its origin is withheld: its
// handlers hear of the loss once the origin is read back, even when nothing
// follows it (no later message, and its own heartbeats do not reach it).
TEST_F(QueueFullTest, AnOwnPublishThatFailedWhileItsOriginWasWithheldIsReportedAsAGap) {
  const auto channel = unique_channel("own_failed");
  const auto table = "syncbus_t_fail_" + channel.substr(channel.size() - 9);
  auto o = durable_options(channel, "own-failed");
  o.spill_table = table;
  o.delivery_queue_capacity = 2;
  HeldReceiver bus(o);
  {
    // A publish of the body "fail" fails on the server.
    pqxx::connection admin(url());
    pqxx::nontransaction(admin).exec(
        "CREATE FUNCTION public." + table +
        "_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF NEW.body = '\"fail\"' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
        "RETURN NEW; END $$; CREATE TRIGGER refuse BEFORE INSERT ON public." +
        table + " FOR EACH ROW EXECUTE FUNCTION public." + table + "_refuse()");
  }
  bus.bus.publish(nlohmann::json("first"));
  ASSERT_TRUE(bus.held.wait_until_held());
  for (int i = 2; i <= 6; ++i) bus.bus.publish(i);  // 2 and 3 wait; 4 on are withheld
  ASSERT_TRUE(eventually([&] { return bus.bus.stats().dropped_queue_full >= 3; }));
  EXPECT_THROW(bus.bus.publish(nlohmann::json("fail")), database_error);  // sequence 7
  bus.held.release();
  ASSERT_TRUE(bus.seen.wait_for_count(6, 20s));
  ASSERT_TRUE(eventually([&] { return bus.log.known_gaps().size() == 1; }, 10s))
      << "the failed publish, #7, was never reported";
  const auto gap = bus.log.known_gaps().front();
  EXPECT_EQ(gap.origin, bus.bus.instance_id());
  EXPECT_EQ(gap.first_missing, 7u);
  EXPECT_EQ(gap.last_missing, 7u);
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec("DROP TABLE public." + table + "; DROP FUNCTION public." +
                                   table + "_refuse()");
}

// With the byte bound, a small message of a new origin can fit where its
// large first one did not: its first message's loss must not go unreported.
TEST_F(QueueFullTest, ANewOriginsFirstMessageDroppedByTheByteBoundIsAGap) {
  const auto channel = unique_channel("first_dropped");
  auto slow_options = options(channel, "first-dropped-slow");
  slow_options.delivery_queue_bytes = 30'000;
  HeldReceiver slow(slow_options);
  PostgresClusterBus old_sender(options(channel, "first-dropped-old"));
  old_sender.publish(nlohmann::json("first"));
  ASSERT_TRUE(slow.held.wait_until_held());
  old_sender.publish(nlohmann::json(std::string(20'000, 'o')));  // waits in the queue
  PostgresClusterBus new_sender(options(channel, "first-dropped-new"));
  new_sender.publish(nlohmann::json(std::string(20'000, 'n')));  // does not fit
  new_sender.publish(nlohmann::json("small"));                   // would fit
  ASSERT_TRUE(eventually([&] { return slow.bus.stats().dropped_queue_full == 2; }))
      << slow.bus.stats().dropped_queue_full;
  slow.held.release();
  // Until its gap is reported, the origin keeps dropping: "after" is sent
  // once it is.
  ASSERT_TRUE(eventually([&] { return slow.log.known_gaps().size() == 1; }));
  new_sender.publish(nlohmann::json("after"));
  ASSERT_TRUE(eventually([&] { return slow.seen.size() == 3; }));
  const auto gaps = slow.log.known_gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].origin, new_sender.instance_id());
  EXPECT_EQ(gaps[0].first_missing, 1u);
  EXPECT_EQ(gaps[0].last_missing, 2u);
  EXPECT_EQ(slow.seen.messages().back().body, "after");
}

}  // namespace
}  // namespace syncbus
