// Faults injected into a real PostgreSQL that each test starts for itself
// (tests/pg/test_server.sh), since they freeze, stop and restart it.
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>

#include "pg_helpers.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using testing::Collector;
using testing::DedicatedServer;
using testing::EventLog;
using testing::eventually;
using testing::unique_channel;

// A listening bus and a publishing bus that have exchanged a first message.
struct ListenerAndPublisher {
  ListenerAndPublisher(PostgresBusOptions listener_options, PostgresBusOptions publisher_options)
      : listener(std::move(listener_options)), publisher(std::move(publisher_options)) {
    publisher.publish(nlohmann::json("before"));
    EXPECT_TRUE(seen.wait_for_count(1));
  }
  PostgresClusterBus listener;
  PostgresClusterBus publisher;
  Collector seen;
  Subscription subscription = listener.subscribe(seen.handler());
};

class FaultTest : public ::testing::Test {
 public:
  void SetUp() override {
    if (!server_.started()) {
      if (testing::running_in_ci()) FAIL() << "could not start a dedicated PostgreSQL";
      GTEST_SKIP() << "no PostgreSQL server binaries to start a dedicated server";
    }
  }
  PostgresBusOptions options(const std::string& channel, EventLog* log = nullptr) {
    PostgresBusOptions o;
    o.conninfo = server_.url();
    o.channel = channel;
    o.heartbeat_interval = 0ms;
    o.publish_timeout = 1000ms;
    o.ping_interval = 300ms;
    o.ping_timeout = 500ms;
    if (log != nullptr) {
      o.on_error = log->error_handler();
      o.on_gap = log->gap_handler();
    }
    return o;
  }
  static std::size_t arrived(const Collector& seen, const std::string& body) {
    std::size_t n = 0;
    for (const auto& m : seen.messages()) n += m.body == body;
    return n;
  }
  // Publishes `body` (again after each failure: the server may still be on
  // its way back) until `seen` has it, or `within` passes.
  static bool publish_until_heard(PostgresClusterBus& publisher, const Collector& seen,
                                  const std::string& body, std::chrono::milliseconds within) {
    return eventually(
        [&] {
          try {
            publisher.publish(nlohmann::json(body));
          } catch (const connection_error&) {
            return false;
          }
          return eventually([&] { return arrived(seen, body) > 0; }, 500ms);
        },
        within);
  }
  static std::chrono::milliseconds since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  }

  DedicatedServer server_;
};

TEST_F(FaultTest, AFrozenServerIsNoticedAndPublishFailsWithinItsDeadline) {
  const auto channel = unique_channel("frozen");
  EventLog log;
  ListenerAndPublisher buses(options(channel, &log), options(channel));
  auto& [listener, publisher, seen, subscription] = buses;
  EventLog other_log;
  auto other = std::make_unique<PostgresClusterBus>(options(channel, &other_log));
  // A durable listener too: it also sends markers, and must ping all the same.
  EventLog durable_log;
  auto durable_options = options(unique_channel("frozen_always"), &durable_log);
  durable_options.spill = SpillMode::always;
  PostgresClusterBus durable(durable_options);

  server_.freeze();
  const auto frozen_at = std::chrono::steady_clock::now();
  EXPECT_THROW(publisher.publish(nlohmann::json("during")), timeout_error);
  EXPECT_GE(since(frozen_at), 900ms);
  // The deadline (1 s) and a loaded machine's slack: the promise is that it
  // does not hang (without the deadline it would wait for ever).
  EXPECT_LT(since(frozen_at), 4000ms) << "publish must not hang past its deadline";
  // The next publish must reconnect first; a frozen server accepts the TCP
  // connection and then says nothing, so connecting is bounded by the
  // deadline too.
  const auto second_at = std::chrono::steady_clock::now();
  EXPECT_THROW(publisher.publish(nlohmann::json("during, again")), timeout_error);
  EXPECT_LT(since(second_at), 4000ms) << "reconnecting must not overrun publish's deadline";
  // The listener pings after 300 ms of silence and gives up on it after 500.
  ASSERT_TRUE(eventually(
      [&] {
        return log.errors_containing("no answer from PostgreSQL within 500 ms while pinging") > 0;
      },
      5s));
  EXPECT_LT(since(frozen_at), 8000ms);
  EXPECT_TRUE(eventually(
      [&] { return durable_log.errors_containing("no answer from PostgreSQL") > 0; }, 1000ms))
      << "the durable listener noticed too";
  // Another bus's listener is now trying to reconnect to the frozen server
  // (connect_timeout: 5 s). close() cuts that attempt short.
  ASSERT_TRUE(eventually([&] { return other_log.errors_containing("while pinging") > 0; }, 5s));
  std::this_thread::sleep_for(100ms);  // well into its connection attempt
  const auto closing = std::chrono::steady_clock::now();
  other.reset();
  EXPECT_LT(since(closing), 1000ms) << "close() must interrupt a connection attempt";

  server_.thaw();
  // Back: the listener reports that it may have missed messages, and both
  // sides work again.
  ASSERT_TRUE(eventually([&] { return log.unknown_gaps() > 0; }, 10s));
  ASSERT_TRUE(publish_until_heard(publisher, seen, "after", 15s));
  // The timed-out publishes' outcome was unknown: the server, once thawed,
  // may still have committed what it had already received. Either way each
  // arrives at most once, and in order.
  EXPECT_LE(arrived(seen, "during"), 1u);
  EXPECT_LE(arrived(seen, "during, again"), 1u);
  const auto messages = seen.messages();
  EXPECT_EQ(messages.front().body, "before");
  EXPECT_EQ(messages.back().body, "after");
  for (std::size_t i = 1; i < messages.size(); ++i) {
    EXPECT_GT(messages[i].sequence, messages[i - 1].sequence);
  }
}

TEST_F(FaultTest, ABusCreatedAgainstAFrozenServerFailsWithinConnectTimeout) {
  server_.freeze();
  auto o = options(unique_channel("frozen_start"));
  o.conninfo += " connect_timeout=2";
  const auto start = std::chrono::steady_clock::now();
  try {
    PostgresClusterBus bus(o);
    ADD_FAILURE() << "a frozen server cannot be connected to";
  } catch (const connection_error& e) {
    EXPECT_NE(std::string(e.what()).find("could not connect"), std::string::npos) << e.what();
  }
  EXPECT_GE(since(start), 1900ms);
  EXPECT_LT(since(start), 3000ms) << "connecting is bounded by connect_timeout";
}

// The server stopped for a while (5 s, then 30 s), then started again.
class OutageTest : public FaultTest, public ::testing::WithParamInterface<std::chrono::seconds> {};

TEST_P(OutageTest, RetriesAreGentleCloseIsQuickAndAlwaysModeLosesNothing) {
  const auto outage = GetParam();
  const auto channel = unique_channel("outage");
  EventLog log;
  ListenerAndPublisher buses(options(channel, &log), options(channel));
  auto& [listener, publisher, seen, subscription] = buses;
  PostgresClusterBus closed_during_outage(options(channel));
  // A durable pair on the same server: what it acknowledged before the
  // outage and after arrives exactly once, with no gap.
  EventLog durable_log;
  auto durable = options(unique_channel("outage_always"), &durable_log);
  durable.spill = SpillMode::always;
  PostgresClusterBus durable_receiver(durable);
  Collector durable_seen;
  auto durable_subscription = durable_receiver.subscribe(durable_seen.handler());
  auto durable_sender_options = durable;
  durable_sender_options.on_error = nullptr;
  durable_sender_options.on_gap = nullptr;
  PostgresClusterBus durable_sender(durable_sender_options);
  for (int i = 0; i < 50; ++i) durable_sender.publish(i);

  server_.down("fast");
  const auto down_at = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(outage);  // the outage itself: nothing to poll for
  // A handful of attempts a second at most (backoff capped at 1 s, with
  // jitter), never a busy loop, and never giving up.
  const auto failed_attempts = log.errors_containing("could not connect");
  const auto seconds = static_cast<std::size_t>(outage.count());
  EXPECT_GE(failed_attempts, seconds / 2);
  EXPECT_LE(failed_attempts, 2 * seconds + 6);
  EXPECT_THROW(publisher.publish(nlohmann::json("during")), connection_error);
  const auto closing = std::chrono::steady_clock::now();
  closed_during_outage.close();
  EXPECT_LT(since(closing), 1000ms);

  server_.up();
  const auto up_at = std::chrono::steady_clock::now();
  // The vacuum job runs with an age above the outage: it keeps every row a
  // listener may still need.
  EXPECT_EQ(durable_sender.vacuum(since(down_at) + 10s), 0);
  ASSERT_TRUE(eventually([&] { return listener.stats().reconnects > 0; }, 10s));
  // Its next attempt comes within the backoff's cap (1 s), and then takes
  // what connecting takes: tens of milliseconds idle, over a second seen
  // on a loaded machine.
  EXPECT_LT(since(up_at), 5000ms) << "re-listening must follow the server";
  EXPECT_TRUE(eventually([&] { return log.unknown_gaps() >= 1; }, 5s));
  // The publisher's session died with the server: its next publish
  // reconnects first, within publish_timeout (1 s here) on an idle machine.
  ASSERT_TRUE(publish_until_heard(publisher, seen, "after", 10s));
  EXPECT_EQ(seen.messages().back().body, "after");

  for (int i = 50; i < 100; ++i) {
    ASSERT_TRUE(eventually([&] {
      try {
        durable_sender.publish(i);
        return true;
      } catch (const connection_error&) {
        return false;  // not acknowledged: publish it again
      }
    }));
  }
  ASSERT_TRUE(durable_seen.wait_for_count(100, 10s)) << durable_seen.size();
  std::uint64_t last = 0;
  std::multiset<int> bodies;
  for (const auto& m : durable_seen.messages()) {
    EXPECT_GT(m.sequence, last) << "in order, once";
    last = m.sequence;
    bodies.insert(m.body.get<int>());
  }
  for (int i = 0; i < 100; ++i) EXPECT_EQ(bodies.count(i), 1u) << "message " << i;
  EXPECT_TRUE(durable_log.gaps().empty()) << "always mode catches up instead of reporting gaps";
}

INSTANTIATE_TEST_SUITE_P(Durations, OutageTest, ::testing::Values(5s, 30s),
                         [](const ::testing::TestParamInfo<std::chrono::seconds>& info) {
                           return std::to_string(info.param.count()) + "s";
                         });

TEST_F(FaultTest, APublishThatFailedAtTheTailOfABurstIsRevealedByTheHeartbeat) {
  const auto channel = unique_channel("tail");
  EventLog log, own_log;
  auto publisher_options = options(channel, &own_log);
  publisher_options.instance_id = "tail-publisher";
  publisher_options.heartbeat_interval = 100ms;
  ListenerAndPublisher buses(options(channel, &log), publisher_options);
  auto& [listener, publisher, seen, subscription] = buses;
  Collector own;
  auto own_subscription = publisher.subscribe(own.handler());

  // The server goes away: publish 2 is retried until its deadline, fails, and
  // uses up its sequence number, which no later message will reveal.
  server_.down("fast");
  EXPECT_THROW(publisher.publish(nlohmann::json("lost")), timeout_error);
  // The publishing bus's own subscribers hear of its messages from it: they
  // learn of the loss at once (its outcome is unknown: a loss to them).
  ASSERT_TRUE(eventually([&] { return own_log.known_gaps().size() == 1; }, 1s));
  const auto own_gaps = own_log.known_gaps();
  EXPECT_EQ(own_gaps[0].origin, publisher.instance_id());
  EXPECT_EQ(own_gaps[0].first_missing, 2u);
  EXPECT_EQ(own_gaps[0].last_missing, 2u);
  server_.up();

  std::vector<GapEvent> exact;
  ASSERT_TRUE(eventually(
      [&] {
        exact = log.known_gaps();
        return !exact.empty();
      },
      15s));
  EXPECT_EQ(exact[0].origin, publisher.instance_id());
  EXPECT_EQ(exact[0].first_missing, 2u);
  EXPECT_EQ(exact[0].last_missing, 2u);
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(own.size(), 0u) << "subscribed after the first message";
  publisher.publish(nlohmann::json("after"));
  ASSERT_TRUE(own.wait_for_count(1));
  EXPECT_EQ(own.messages()[0].sequence, 3u);
  EXPECT_EQ(own_log.known_gaps().size(), 1u) << "the loss is reported once";
}

// SpillMode::always through a server restart: every publish that returned is
// delivered exactly once, in order, whatever the shutdown mode.
void expect_always_survives_restart(FaultTest& test, DedicatedServer& server,
                                    const std::string& mode) {
  const auto channel = unique_channel("always_restart_" + mode);
  auto receiver_options = test.options(channel);
  receiver_options.spill = SpillMode::always;
  auto publisher_options = test.options(channel);
  publisher_options.spill = SpillMode::always;
  publisher_options.instance_id = "restart-publisher";
  PostgresClusterBus receiver(receiver_options);
  PostgresClusterBus publisher(publisher_options);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());

  std::uint64_t acknowledged = 0;
  const auto publish_some = [&](int count) {
    for (int i = 0; i < count; ++i) {
      try {
        publisher.publish(static_cast<int>(acknowledged));
        ++acknowledged;
      } catch (const connection_error&) {
        // Not acknowledged: not promised (it may still arrive, as a gap's
        // neighbour, but never twice).
      }
    }
  };
  publish_some(100);
  server.down(mode);
  server.up();
  publish_some(100);
  ASSERT_TRUE(eventually([&] { return seen.size() >= acknowledged; }, 20s));
  std::uint64_t last = 0;
  std::set<int> bodies;
  for (const auto& m : seen.messages()) {
    EXPECT_GT(m.sequence, last) << "in order, once";
    last = m.sequence;
    bodies.insert(m.body.get<int>());
  }
  for (int i = 0; i < static_cast<int>(acknowledged); ++i) {
    EXPECT_EQ(bodies.count(i), 1u) << "acknowledged message " << i << " was not delivered";
  }
}

TEST_F(FaultTest, AlwaysModeDeliversEveryAcknowledgedMessageThroughAFastRestart) {
  expect_always_survives_restart(*this, server_, "fast");
}

TEST_F(FaultTest, AlwaysModeDeliversEveryAcknowledgedMessageThroughAnImmediateRestart) {
  expect_always_survives_restart(*this, server_, "immediate");
}

TEST_F(FaultTest, AnImmediateRestartIsSurvivedByBothSides) {
  const auto channel = unique_channel("restart");
  EventLog log;
  ListenerAndPublisher buses(options(channel, &log), options(channel));
  auto& [listener, publisher, seen, subscription] = buses;

  server_.down("immediate");
  server_.up();
  const auto up_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return listener.stats().reconnects > 0; }, 10s));
  EXPECT_LT(since(up_at), 5000ms) << "the backoff's cap (1 s) and a connection";
  ASSERT_TRUE(publish_until_heard(publisher, seen, "after", 10s));
}

// A session that LISTENs and then sits in an open transaction: it stops
// reading, pins the tail of the server-wide NOTIFY queue, and so, in time,
// stops every NOTIFY on the server.
class WedgedListener {
 public:
  WedgedListener(const std::string& url, const std::string& application_name,
                 const std::string& channel)
      : connection_(url + " application_name=" + application_name) {
    pqxx::nontransaction(connection_).exec("LISTEN " + connection_.quote_name(channel));
    open_ = std::make_unique<pqxx::work>(connection_);
    open_->exec("SELECT 1");
  }
  int pid() const { return connection_.backendpid(); }

 private:
  pqxx::connection connection_;
  std::unique_ptr<pqxx::work> open_;
};

TEST_F(FaultTest, AFillingNotifyQueueIsSeenInStatsAndReported) {
  const auto channel = unique_channel("queue_usage");
  WedgedListener wedged(server_.url(), "some-other-app", channel);
  EventLog log;
  auto o = options(channel, &log);
  o.queue_usage_interval = 200ms;
  o.queue_usage_warning = 0.001;  // 0.1% of the 8 GB queue: about 8 MB
  PostgresClusterBus bus(o);
  const std::string body(7000, 'q');
  for (int i = 0; i < 2000; ++i)
    bus.publish(nlohmann::json(body));  // about 14 MB pinned by the wedged session
  ASSERT_TRUE(eventually([&] { return bus.stats().notification_queue_usage >= 0.001; }, 10s));
  ASSERT_TRUE(eventually([&] { return log.errors_containing("NOTIFY queue is") > 0; }, 10s));
}

TEST_F(FaultTest, TheWatchdogTerminatesStuckSyncbusSessionsOnly) {
  const auto channel = unique_channel("watchdog");
  WedgedListener stuck_syncbus(server_.url(), "syncbus:wedged", channel);
  WedgedListener stuck_stranger(server_.url(), "not-syncbus", channel);
  EventLog log;
  auto o = options(channel, &log);
  o.watchdog_interval = 200ms;
  o.watchdog_stuck_after = 300ms;
  // Pings are not this test's subject: at FaultTest's 500 ms, one answered
  // late on a loaded machine would be a reconnect, and the count below 1.
  o.ping_interval = 2000ms;
  o.ping_timeout = 3000ms;
  PostgresClusterBus bus(o);
  ASSERT_TRUE(eventually([&] { return bus.stats().stuck_listeners_terminated >= 1; }, 10s));
  // pg_terminate_backend() only signals: the backend leaves a moment later.
  EXPECT_TRUE(eventually(
      [&] { return testing::sessions_named(server_.url(), "syncbus:wedged") == 0; }, 5s));
  EXPECT_EQ(testing::sessions_named(server_.url(), "not-syncbus"), 1)
      << "only syncbus sessions are ours";
  EXPECT_GE(log.errors_containing("watchdog terminated"), 1u);
  // The bus's own sessions never sit in a transaction: they are untouched.
  Collector seen;
  auto s = bus.subscribe(seen.handler());
  bus.publish(nlohmann::json("still working"));
  ASSERT_TRUE(seen.wait_for_count(1, 5s));
  EXPECT_EQ(bus.stats().reconnects, 0u);
}

// A client's position survives the server: taken before a restart, it is
// resumed after it, on another bus, with nothing lost or repeated.
TEST_F(FaultTest, APositionTakenBeforeAServerRestartResumesAfterIt) {
  const auto channel = unique_channel("restart_resume");
  EventLog log;
  auto durable = [&](EventLog* l) {
    auto o = options(channel, l);
    o.spill = SpillMode::always;
    return o;
  };
  PostgresClusterBus a(durable(&log));
  PostgresClusterBus b(durable(&log));
  PostgresClusterBus publisher(durable(nullptr));
  Collector on_a;
  auto sa = a.subscribe(on_a.handler());
  for (int i = 1; i <= 10; ++i) publisher.publish({{"i", i}});
  ASSERT_TRUE(on_a.wait_for_count(10));
  const auto at_ten = on_a.messages().back().position;
  sa.unsubscribe();

  server_.down("fast");
  server_.up();
  // Each publish again until it is committed (the first ones may find the
  // connection gone: they throw, and commit nothing).
  const auto publish = [&](int i) {
    for (int attempt = 0; attempt < 100; ++attempt) {
      try {
        publisher.publish({{"i", i}});
        return;
      } catch (const connection_error&) {
        std::this_thread::sleep_for(100ms);
      }
    }
    FAIL() << "could not publish " << i;
  };
  for (int i = 11; i <= 20; ++i) publish(i);
  ASSERT_TRUE(eventually([&] { return b.stats().reconnects >= 1; }, 10s));
  Collector resumed;
  auto r = b.subscribe_from(at_ten, resumed.handler());
  publish(21);
  ASSERT_TRUE(resumed.wait_for_count(11, 10s)) << resumed.size();
  std::this_thread::sleep_for(300ms);
  const auto got = resumed.messages();
  ASSERT_EQ(got.size(), 11u);
  // A publish that failed leaves its number unused: bodies say which.
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].body.at("i"), 11 + static_cast<int>(i));
    if (i > 0) EXPECT_GT(got[i].sequence, got[i - 1].sequence);
  }
}

}  // namespace
}  // namespace syncbus
