// PostgresClusterBus against a real PostgreSQL (the ctest fixture's throwaway
// server, or SYNCBUS_TEST_DATABASE_URL).
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <atomic>
#include <future>
#include <map>
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

class PostgresBusTest : public testing::PostgresTest {};

TEST_F(PostgresBusTest, ThreeBusesOnOneChannelSeeEveryMessageInOrder) {
  const auto channel = unique_channel("three");
  PostgresClusterBus a(options(channel)), b(options(channel)), c(options(channel));
  std::vector<PostgresClusterBus*> buses{&a, &b, &c};
  Collector seen[3];
  std::vector<Subscription> subscriptions;
  for (int i = 0; i < 3; ++i) subscriptions.push_back(buses[i]->subscribe(seen[i].handler()));

  constexpr int per_bus = 20;
  for (int n = 1; n <= per_bus; ++n) {
    for (auto* bus : buses) bus->publish({{"n", n}, {"from", bus->instance_id()}});
  }
  for (auto& collector : seen) {
    ASSERT_TRUE(collector.wait_for_count(3 * per_bus));
    std::map<std::string, std::uint64_t> last;
    for (const auto& m : collector.messages()) {
      EXPECT_EQ(m.sequence, last[m.origin] + 1) << "out of order from " << m.origin;
      EXPECT_EQ(m.body.at("n"), static_cast<int>(m.sequence));
      EXPECT_EQ(m.body.at("from"), m.origin);
      last[m.origin] = m.sequence;
    }
    for (auto* bus : buses) EXPECT_EQ(last[bus->instance_id()], std::uint64_t{per_bus});
  }
}

// BusStats::delivery_lag counts every message handed on, inline or
// spilled, another bus's or its own, signed or not: each says when it was
// sent. One that waited behind a slow handler shows the wait.
TEST_F(PostgresBusTest, EveryDeliveredMessageIsCountedInTheDeliveryLag) {
  const auto channel = unique_channel("lag");
  PostgresClusterBus sender(options(channel)), receiver(options(channel));
  // The slow handler waits until the others are published, then 600 ms
  // more: their lag is at least that, however long anything else takes.
  std::atomic<bool> slow_began{false};
  std::promise<void> others_published;
  auto others_are_published = others_published.get_future().share();
  Collector seen;
  auto at_receiver = receiver.subscribe([&](const ClusterMessage& m) {
    if (m.body == "slow") {
      slow_began = true;
      others_are_published.wait();
      std::this_thread::sleep_for(std::chrono::milliseconds(600));
    }
    seen.handler()(m);
  });
  Collector own;
  auto at_sender = sender.subscribe(own.handler());
  sender.publish(nlohmann::json("slow"));
  ASSERT_TRUE(eventually([&] { return slow_began.load(); }));
  sender.publish(nlohmann::json("waits"));
  sender.publish(nlohmann::json(std::string(20000, 's')));  // through the table
  others_published.set_value();
  ASSERT_TRUE(seen.wait_for_count(3));
  ASSERT_TRUE(own.wait_for_count(3));

  for (auto* bus : {&receiver, &sender}) {
    ASSERT_TRUE(eventually([&] { return bus->stats().delivery_lag.count == 3; }))
        << bus->stats().delivery_lag.count;
    const auto lag = bus->stats().delivery_lag;
    // Not a unit off by a thousand: under a minute in all.
    EXPECT_LT(lag.sum_ms, 60000.0);
  }
  // A peer's `sent` may be anything: the message is delivered, and a time
  // years away is no time (not a lag of centuries, nor an overflow).
  const std::vector<std::string> far_times{"9223372036854775807", "1", "4102444800000"};
  for (std::size_t i = 0; i < far_times.size(); ++i) {
    raw_notify(channel, R"({"v":1,"origin":"far","seq":)" + std::to_string(i + 1) + R"(,"sent":)" +
                            far_times[i] + R"(,"body":"from afar"})");
  }
  ASSERT_TRUE(seen.wait_for_count(5));
  EXPECT_EQ(receiver.stats().delivery_lag.count, 3u);
  // "waits" and the spilled one waited behind "slow" for 600 ms at least.
  EXPECT_GE(testing::lags_over(receiver.stats().delivery_lag, 500), 2u);
  EXPECT_GE(receiver.stats().delivery_lag.sum_ms, 2 * 500.0);
}

TEST_F(PostgresBusTest, AnotherChannelSeesNoneOfIt) {
  const auto channel = unique_channel("busy");
  const auto other_channel = unique_channel("quiet");
  PostgresClusterBus a(options(channel)), b(options(channel));
  PostgresClusterBus outsider(options(other_channel));
  Collector at_b, at_outsider;
  auto sb = b.subscribe(at_b.handler());
  auto so = outsider.subscribe(at_outsider.handler());
  for (int i = 0; i < 10; ++i) a.publish(i);
  a.publish(
      nlohmann::json(std::string(20000, 'x')));  // spilled: the row is not the outsider's either
  ASSERT_TRUE(at_b.wait_for_count(11));
  // The outsider's listener is live and in order: once its own marker
  // arrives, anything from the other channel would have arrived before it.
  outsider.publish(nlohmann::json("marker"));
  ASSERT_TRUE(at_outsider.wait_for_count(1));
  const auto seen = at_outsider.messages();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].body, "marker");
}

TEST_F(PostgresBusTest, ChannelNamesAreUsedExactlyAsWritten) {
  // Mixed case, spaces, quotes: LISTEN quotes the name, pg_notify gets it as
  // a parameter, so both sides agree and no name is folded or injected.
  for (const std::string channel :
       {std::string("MixedCase_") + unique_channel("x"), std::string("with space \"quote\" 'x';--"),
        std::string("ünïcødé-") + unique_channel("u")}) {
    EventLog errors;
    auto o = options(channel.substr(0, 63));
    o.on_error = errors.error_handler();
    PostgresClusterBus bus(o);
    Collector seen;
    auto s = bus.subscribe(seen.handler());
    bus.publish(nlohmann::json("hi"));
    ASSERT_TRUE(seen.wait_for_count(1)) << channel;
    EXPECT_EQ(seen.messages()[0].body, "hi");
    EXPECT_TRUE(errors.errors().empty()) << errors.errors()[0];
  }
  // The lower-case twin of a mixed-case channel is a different channel.
  const auto mixed = "Case_" + unique_channel("c");
  std::string lower = mixed;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  PostgresClusterBus upper_bus(options(mixed)), lower_bus(options(lower));
  Collector at_lower;
  auto s = lower_bus.subscribe(at_lower.handler());
  upper_bus.publish(nlohmann::json("not for you"));
  lower_bus.publish(nlohmann::json("marker"));
  ASSERT_TRUE(at_lower.wait_for_count(1));
  ASSERT_EQ(at_lower.size(), 1u);
  EXPECT_EQ(at_lower.messages()[0].body, "marker");
}

TEST_F(PostgresBusTest, InvalidOptionsAreRejectedClearly) {
  auto o = options(std::string(64, 'c'));
  try {
    PostgresClusterBus bus(o);
    FAIL() << "a 64-byte channel was accepted";
  } catch (const configuration_error& e) {
    EXPECT_NE(std::string(e.what()).find("63 bytes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(PostgresClusterBus(options("")), configuration_error);
  PostgresBusOptions no_conninfo;
  EXPECT_THROW(PostgresClusterBus{no_conninfo}, configuration_error);
  auto bad_id = options(unique_channel("id"));
  bad_id.instance_id = "bad id'; DROP TABLE x";
  EXPECT_THROW(PostgresClusterBus{bad_id}, configuration_error);
}

TEST_F(PostgresBusTest, UnreachableServerIsAConnectionErrorWithoutThePassword) {
  PostgresBusOptions o;
  o.conninfo = "host=127.0.0.1 port=1 dbname=x user=x password=hunter2secret connect_timeout=2";
  try {
    PostgresClusterBus bus(o);
    FAIL() << "connected to port 1";
  } catch (const connection_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("could not connect"), std::string::npos) << what;
    EXPECT_EQ(what.find("hunter2secret"), std::string::npos) << what;
  }
}

TEST_F(PostgresBusTest, GarbageOnTheChannelReachesOnErrorAndDeliveryGoesOn) {
  const auto channel = unique_channel("garbage");
  EventLog errors;
  auto o = options(channel);
  o.on_error = errors.error_handler();
  PostgresClusterBus bus(o);
  Collector seen;
  auto s = bus.subscribe(seen.handler());

  bus.publish(nlohmann::json("before"));
  raw_notify(channel, "garbage");
  raw_notify(channel, R"({"v":1,"origin":"x","seq":1,"body":)");  // truncated
  raw_notify(channel, R"({"v":99,"origin":"x","seq":1,"body":1})");
  raw_notify(channel, R"({"v":1,"origin":"ghost","seq":5,"spilled":true})");
  raw_notify(channel, "");
  bus.publish(nlohmann::json("after"));

  ASSERT_TRUE(seen.wait_for_count(2));
  ASSERT_TRUE(eventually([&] { return errors.errors().size() >= 5; }));
  const auto messages = seen.messages();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].body, "before");
  EXPECT_EQ(messages[1].body, "after");
  EXPECT_EQ(messages[1].sequence, 2u);
  EXPECT_EQ(errors.errors().size(), 5u);
  EXPECT_EQ(errors.errors_containing("not JSON"), 3u);  // garbage, truncated, empty
  EXPECT_EQ(errors.errors_containing("version 99"), 1u);
  EXPECT_EQ(errors.errors_containing("ghost#5"), 1u);
}

// A handler that subscribes while another is busy hears what arrives from
// then on, not what was already waiting for the busy one.
TEST_F(PostgresBusTest, ALateSubscriberDoesNotHearWhatArrivedBeforeIt) {
  const auto channel = unique_channel("late_subscriber");
  auto o = options(channel, "late-subscriber");
  o.delivery_queue_capacity = 1;
  PostgresClusterBus bus(o);
  PostgresClusterBus sender(options(channel, "late-sender"));
  testing::HeldSubscription busy(bus);
  sender.publish(nlohmann::json("a"));
  ASSERT_TRUE(busy.wait_until_held());
  sender.publish(nlohmann::json("b"));  // waits in the queue, which is then full...
  sender.publish(nlohmann::json("c"));  // ...so this one is dropped: "b" has arrived
  ASSERT_TRUE(testing::eventually([&] { return bus.stats().dropped_queue_full == 1; }));
  Collector late;
  auto subscription = bus.subscribe(late.handler());
  busy.release();
  // The sender keeps dropping until the gap for "c" is reported: then "d".
  ASSERT_TRUE(testing::eventually([&] { return bus.stats().gaps == 1; }));
  sender.publish(nlohmann::json("d"));
  ASSERT_TRUE(late.wait_for_count(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // time for what it must not hear
  const auto heard = late.messages();
  ASSERT_EQ(heard.size(), 1u);
  EXPECT_EQ(heard[0].body, "d");
}

TEST_F(PostgresBusTest, AThrowingHandlerIsReportedAndOthersStillReceive) {
  const auto channel = unique_channel("throw");
  EventLog errors;
  auto o = options(channel);
  o.on_error = errors.error_handler();
  PostgresClusterBus bus(o);
  Collector seen;
  auto bad = bus.subscribe([](const ClusterMessage&) { throw std::logic_error("oops"); });
  auto good = bus.subscribe(seen.handler());
  bus.publish(1);
  bus.publish(2);
  ASSERT_TRUE(seen.wait_for_count(2));
  ASSERT_TRUE(eventually([&] { return errors.errors().size() == 2; }));
  EXPECT_EQ(errors.errors_containing("oops"), 2u);
}

TEST_F(PostgresBusTest, CloseIsQuickIdempotentAndFinal) {
  const auto channel = unique_channel("close");
  PostgresClusterBus a(options(channel)), b(options(channel));
  Collector at_b;
  auto s = b.subscribe(at_b.handler());
  const auto start = std::chrono::steady_clock::now();
  b.close();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  b.close();
  EXPECT_THROW(b.publish(1), closed_error);
  EXPECT_THROW((void)b.subscribe([](const ClusterMessage&) {}), closed_error);
  EXPECT_THROW(b.vacuum(std::chrono::seconds(1)), closed_error);
  a.publish(1);  // b's listener is gone: nothing reaches at_b
  Collector at_a;
  auto sa = a.subscribe(at_a.handler());
  a.publish(2);
  ASSERT_TRUE(at_a.wait_for_count(1));
  EXPECT_EQ(at_b.size(), 0u);
}

TEST_F(PostgresBusTest, ConcurrentPublishersOnOneBusKeepPerOriginOrder) {
  const auto channel = unique_channel("threads");
  EventLog errors;
  auto receiver_options = options(channel);
  receiver_options.on_error = errors.error_handler();
  PostgresClusterBus publisher(options(channel)), receiver(receiver_options);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  constexpr int threads = 4;
  constexpr int per_thread = 100;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        // Every 10th message spills, so inline and spilled ones interleave.
        const std::size_t size = i % 10 == 0 ? 9000 : 10;
        publisher.publish({{"t", t}, {"i", i}, {"pad", std::string(size, 'p')}});
      }
    });
  }
  for (auto& w : workers) w.join();
  ASSERT_TRUE(seen.wait_for_count(threads * per_thread))
      << seen.size() << " arrived; errors: " << errors.errors().size()
      << (errors.errors().empty() ? "" : " first: " + errors.errors()[0]);
  std::uint64_t last = 0;
  std::map<int, int> next_i_per_thread;
  for (const auto& m : seen.messages()) {
    EXPECT_EQ(m.origin, publisher.instance_id());
    EXPECT_EQ(m.sequence, last + 1);
    last = m.sequence;
    const int t = m.body.at("t");
    EXPECT_EQ(m.body.at("i").get<int>(), next_i_per_thread[t]++);
  }
  EXPECT_EQ(last, std::uint64_t{threads * per_thread});
}

TEST_F(PostgresBusTest, ConnectionsCarryAnApplicationName) {
  const auto channel = unique_channel("appname");
  auto o = options(channel);
  o.instance_id = "app-name-test";
  PostgresClusterBus bus(o);
  const auto name = "syncbus:" + bus.instance_id();
  EXPECT_EQ(testing::sessions_named(url(), name), 1) << "the publisher";
  EXPECT_EQ(testing::sessions_named(url(), name + ":listen"), 1) << "the listener";
  EXPECT_EQ(bus.instance_id().rfind("app-name-test.", 0), 0u) << "the name, then this run's part";

  o.application_name = "billing-engine";
  PostgresClusterBus named(o);
  EXPECT_EQ(testing::sessions_named(url(), "billing-engine"), 1);
  EXPECT_EQ(testing::sessions_named(url(), "billing-engine:listen"), 1);
}

// A bus that only publishes opens no listening session (the server would
// wake it for every message, and it would wake to discard its own), and
// says so if asked to subscribe; what it sends, inline or spilled, is heard.
TEST_F(PostgresBusTest, APublishOnlyBusHasNoListeningSessionAndRefusesSubscribe) {
  const auto channel = unique_channel("publish_only");
  auto o = options(channel, "sender");
  o.listen = false;
  PostgresClusterBus sender(o);
  const auto name = "syncbus:" + sender.instance_id();
  EXPECT_EQ(testing::sessions_named(url(), name), 1) << "the publisher";
  EXPECT_EQ(testing::sessions_named(url(), name + ":listen"), 0) << "no listener";
  try {
    const auto never = sender.subscribe([](const ClusterMessage&) {});
    FAIL() << "a publish-only bus accepted a handler it could never call";
  } catch (const configuration_error& e) {
    EXPECT_NE(std::string(e.what()).find("listen = false"), std::string::npos) << e.what();
  }

  PostgresClusterBus receiver(options(channel, "receiver"));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  const std::string big(9000, 'b');  // over a payload: spilled
  sender.publish(nlohmann::json("small"));
  sender.publish(nlohmann::json(big));
  sender.publish_async(nlohmann::json("async")).get();
  ASSERT_TRUE(seen.wait_for_count(3));
  const auto m = seen.messages();
  EXPECT_EQ(m[0].body, "small");
  EXPECT_EQ(m[1].body, big);
  EXPECT_EQ(m[2].body, "async");
  testing::check_exactly_once_in_order(seen);
  EXPECT_EQ(sender.stats().spilled, 1u);
}

// Instances are restarted under the same configured name (a host or pod
// name). The new run must not be taken for a repeat of the old one: neither
// by receivers (dropped as duplicates) nor by the spill table's unique key.
TEST_F(PostgresBusTest, AnInstanceRestartedUnderTheSameNameIsHeard) {
  const auto channel = unique_channel("restarted");
  EventLog log;
  auto receiver_options = durable_options(channel);
  receiver_options.on_error = log.error_handler();
  receiver_options.on_gap = log.gap_handler();
  PostgresClusterBus receiver(receiver_options);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  std::string first_id;
  {
    PostgresClusterBus first_run(durable_options(channel, "engine-1"));
    first_id = first_run.instance_id();
    for (int i = 0; i < 3; ++i) first_run.publish(i);
    ASSERT_TRUE(seen.wait_for_count(3));
  }
  PostgresClusterBus second_run(durable_options(channel, "engine-1"));
  EXPECT_NE(second_run.instance_id(), first_id);
  second_run.publish(nlohmann::json("after the restart"));  // spilled: a fresh key
  ASSERT_TRUE(seen.wait_for_count(4));
  EXPECT_EQ(seen.messages().back().body, "after the restart");
  EXPECT_EQ(seen.messages().back().origin, second_run.instance_id());
  EXPECT_EQ(receiver.stats().duplicates_dropped, 0u);
  EXPECT_TRUE(log.gaps().empty());
  EXPECT_TRUE(log.errors().empty());
}

// The library prints nothing; what it has to say goes to the log handler.
TEST_F(PostgresBusTest, TheLogHandlerHearsTheBusAndTheLibraryPrintsNothingItself) {
  const auto channel = unique_channel("log");
  std::mutex mutex;
  std::vector<std::pair<LogLevel, std::string>> records;
  auto o = options(channel);
  o.log = [&](LogLevel level, const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex);
    records.emplace_back(level, message);
  };
  const auto logged = [&](LogLevel level, const std::string& part) {
    std::lock_guard<std::mutex> lock(mutex);
    return std::count_if(records.begin(), records.end(), [&](const auto& r) {
      return r.first == level && r.second.find(part) != std::string::npos;
    });
  };
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  {
    PostgresClusterBus bus(o);
    Collector seen;
    auto s = bus.subscribe(seen.handler());
    EXPECT_EQ(logged(LogLevel::info, "listening on channel \"" + channel + "\""), 1);
    bus.publish(nlohmann::json("inline"));
    bus.publish(nlohmann::json(std::string(9000, 's')));
    raw_notify(channel, "garbage");  // an error: on_error and the log
    raw_notify(channel, R"({"v":1,"origin":"peer","seq":1,"body":1})");
    raw_notify(channel, R"({"v":1,"origin":"peer","seq":4,"body":4})");  // a gap
    ASSERT_TRUE(seen.wait_for_count(4));
    ASSERT_EQ(testing::terminate_backend(url(), bus, BusConnection::listener), 1);
    ASSERT_TRUE(eventually([&] { return logged(LogLevel::info, "is back after") == 1; }));
    EXPECT_EQ(logged(LogLevel::error, "not a valid syncbus envelope"), 1);
    EXPECT_EQ(logged(LogLevel::warning, "missed 2 message(s) of peer: #2 to #3"), 1);
    EXPECT_EQ(logged(LogLevel::error, "lost its connection"), 1);
    // The reconnect's gap is reported by the delivery thread, after "is back".
    EXPECT_TRUE(eventually([&] { return logged(LogLevel::warning, "may be missed") >= 1; }));
  }
  EXPECT_EQ(logged(LogLevel::info, "closing"), 1);
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_STREQ(to_string(LogLevel::warning), "warning");
}

TEST_F(PostgresBusTest, ListenerRecoversFromATerminatedBackend) {
  const auto channel = unique_channel("reconnect");
  EventLog errors;
  auto o = options(channel);
  o.instance_id = "reconnect-listener";
  o.on_error = errors.error_handler();
  PostgresClusterBus listener(o);
  PostgresClusterBus publisher(options(channel));
  Collector seen;
  auto s = listener.subscribe(seen.handler());
  publisher.publish(nlohmann::json("first"));
  ASSERT_TRUE(seen.wait_for_count(1));

  ASSERT_EQ(testing::terminate_backend(url(), listener, BusConnection::listener), 1);
  ASSERT_TRUE(eventually([&] { return errors.errors_containing("lost its connection") >= 1; }));
  // Once reconnected, new messages flow again.
  ASSERT_TRUE(eventually([&] {
    publisher.publish(nlohmann::json("probe"));
    return seen.wait_for_count(2, std::chrono::milliseconds(100));
  }));
}

TEST_F(PostgresBusTest, PublishOnAKilledConnectionIsRetriedWithTheSameSequence) {
  const auto channel = unique_channel("pubkill");
  auto o = options(channel);
  o.instance_id = "killed-publisher";
  o.heartbeat_interval = std::chrono::milliseconds(0);
  PostgresClusterBus bus(o);
  Collector seen;
  auto s = bus.subscribe(seen.handler());
  bus.publish(nlohmann::json("one"));
  ASSERT_TRUE(seen.wait_for_count(1));

  ASSERT_EQ(testing::terminate_backend(url(), bus, BusConnection::publisher), 1);

  // The dead connection is noticed, replaced, and the message sent again
  // within the publish deadline: the caller sees success.
  bus.publish(nlohmann::json("after"));
  bus.publish(nlohmann::json(std::string(9000, 's')));  // and the spill path on the new connection
  ASSERT_TRUE(seen.wait_for_count(3));
  const auto messages = seen.messages();
  EXPECT_EQ(messages[1].body, "after");
  EXPECT_EQ(messages[1].sequence, 2u);
  EXPECT_EQ(messages[2].sequence, 3u);
  EXPECT_EQ(bus.stats().published, 3u);
}

}  // namespace
}  // namespace syncbus
