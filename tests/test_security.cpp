// Hostile input and least privilege, against a real PostgreSQL: what a
// stranger on the channel, a hostile configuration value or a narrow role
// can do to a bus (docs/SECURITY.md lists each case and its test).
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <pqxx/pqxx>

#include <unistd.h>
#include <set>
#include <thread>

#include "conninfo.hpp"
#include "envelope.hpp"
#include "message_auth.hpp"
#include "pg_helpers.hpp"
#include "pg_session.hpp"
#include "pg_snapshot.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using testing::Collector;
using testing::DedicatedServer;
using testing::EventLog;
using testing::eventually;
using testing::unique_channel;

const std::string secret = "a shared secret, 32 bytes long..";
const std::string other_secret = "another secret of enough length.";

// A session that LISTENs on a channel, as any role that can connect may.
class Eavesdropper {
 public:
  Eavesdropper(const std::string& url, const std::string& channel) : connection_(url) {
    receiver_ = std::make_unique<Receiver>(connection_, channel, payloads_);
  }
  // Every payload that arrived within `wait` (at least `count` of them).
  std::vector<std::string> payloads(std::size_t count, std::chrono::milliseconds wait = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (payloads_.size() < count && std::chrono::steady_clock::now() < deadline) {
      connection_.await_notification(0, 50000);
    }
    return payloads_;
  }

 private:
  struct Receiver : pqxx::notification_receiver {
    Receiver(pqxx::connection_base& c, const std::string& channel, std::vector<std::string>& out)
        : pqxx::notification_receiver(c, channel), out_(out) {}
    void operator()(const std::string& payload, int) override { out_.push_back(payload); }
    std::vector<std::string>& out_;
  };
  pqxx::connection connection_;
  std::vector<std::string> payloads_;
  std::unique_ptr<Receiver> receiver_;
};

// `sql` with each {s} replaced by `schema`.
std::string fmt_schema(std::string sql, const std::string& schema) {
  for (auto at = sql.find("{s}"); at != std::string::npos; at = sql.find("{s}", at)) {
    sql.replace(at, 3, schema);
  }
  return sql;
}

// Now, by this machine's clock: the test server runs on it.
std::uint64_t now_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

class SecurityTest : public testing::PostgresTest {
 protected:
  PostgresBusOptions signed_options(const std::string& channel, EventLog* log = nullptr,
                                    std::vector<std::string> secrets = {secret}) const {
    auto o = options(channel);
    o.secrets = std::move(secrets);
    o.heartbeat_interval = 0ms;
    if (log != nullptr) {
      o.on_error = log->error_handler();
      o.on_gap = log->gap_handler();
    }
    return o;
  }
  // NOTIFYs `envelope(pid)`, signed with the secret, from a session whose
  // server process is `pid`: what a holder of the secret sends.
  void signed_notify(const std::string& channel,
                     const std::function<std::string(std::uint64_t pid)>& envelope) const {
    pqxx::connection connection(url());
    pqxx::nontransaction session(connection);
    const auto pid = session.exec1("SELECT pg_backend_pid()")[0].as<std::uint64_t>();
    const detail::MessageAuth auth({secret});
    session.exec_params("SELECT pg_notify($1, $2)", channel,
                        auth.sign_envelope(channel, envelope(pid)));
  }
  std::string forged(const std::string& origin, std::uint64_t sequence,
                     const std::string& body) const {
    return R"({"v":1,"origin":")" + origin + R"(","seq":)" + std::to_string(sequence) +
           R"(,"body":)" + body + "}";
  }
};

// The threat, shown: without a secret, anyone who can connect can speak for
// any bus, and a forgery that guesses the next sequence number hides the
// genuine message behind it.
TEST_F(SecurityTest, WithoutASecretAForgeryIsDeliveredAndHidesTheGenuineMessage) {
  const auto channel = unique_channel("forged_plain");
  PostgresClusterBus victim(options(channel));
  PostgresClusterBus receiver(options(channel));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  victim.publish(nlohmann::json("genuine 1"));
  ASSERT_TRUE(seen.wait_for_count(1));
  raw_notify(channel, forged(victim.instance_id(), 2, R"("forged 2")"));
  ASSERT_TRUE(seen.wait_for_count(2));
  victim.publish(nlohmann::json("genuine 2"));
  victim.publish(nlohmann::json("genuine 3"));
  ASSERT_TRUE(seen.wait_for_count(3));
  std::this_thread::sleep_for(200ms);
  std::vector<std::string> bodies;
  for (const auto& m : seen.messages()) bodies.push_back(m.body.get<std::string>());
  EXPECT_EQ(bodies, (std::vector<std::string>{"genuine 1", "forged 2", "genuine 3"}));
  EXPECT_EQ(receiver.stats().duplicates_dropped, 1u) << "genuine 2 taken for a repeat";
}

TEST_F(SecurityTest, WithASecretForgeriesAndReplaysAreDroppedAndEveryGenuineMessageArrives) {
  const auto channel = unique_channel("forged_signed");
  const auto elsewhere = unique_channel("replayed_elsewhere");
  EventLog log;
  PostgresClusterBus victim(signed_options(channel));
  PostgresClusterBus receiver(signed_options(channel, &log));
  EventLog elsewhere_log;
  PostgresClusterBus receiver_elsewhere(signed_options(elsewhere, &elsewhere_log));
  Collector seen, seen_elsewhere;
  auto s = receiver.subscribe(seen.handler());
  auto s2 = receiver_elsewhere.subscribe(seen_elsewhere.handler());
  Eavesdropper wire(url(), channel);

  victim.publish(nlohmann::json("genuine 1"));
  const auto captured = wire.payloads(1).at(0);
  EXPECT_NE(captured.find(R"(,"mac":")"), std::string::npos) << captured;
  const auto id = victim.instance_id();
  std::size_t forgeries = 0;
  const auto attack = [&](const std::string& target, const std::string& payload) {
    raw_notify(target, payload);
    if (target == channel) ++forgeries;
  };
  // Unsigned, as a bus without the secret would send it.
  attack(channel, forged(id, 2, R"("forged 2")"));
  // Signed, but with another key.
  const detail::MessageAuth impostor({other_secret});
  attack(channel, impostor.sign_envelope(channel, forged(id, 2, R"("forged 2")")));
  // The genuine envelope with its body changed, signature kept.
  auto tampered = captured;
  tampered.replace(tampered.find("genuine 1"), 9, "tampered!");
  attack(channel, tampered);
  // A heartbeat claiming messages that never existed (a false gap).
  attack(channel, R"({"v":1,"origin":")" + id + R"(","seq":99,"heartbeat":true,"mac":")" +
                      std::string(64, 'a') + R"("})");
  // The genuine envelope replayed: on its own channel it is refused (it is
  // sent by another session than the one it was signed for), on another
  // too (the channel is signed).
  attack(channel, captured);
  attack(elsewhere, captured);

  victim.publish(nlohmann::json("genuine 2"));
  victim.publish(nlohmann::json("genuine 3"));
  ASSERT_TRUE(seen.wait_for_count(3));
  ASSERT_TRUE(eventually([&] { return log.errors().size() >= forgeries; }));
  std::this_thread::sleep_for(200ms);
  std::vector<std::string> bodies;
  for (const auto& m : seen.messages()) bodies.push_back(m.body.get<std::string>());
  EXPECT_EQ(bodies, (std::vector<std::string>{"genuine 1", "genuine 2", "genuine 3"}));
  EXPECT_EQ(log.errors().size(), forgeries) << "each forgery reported once";
  EXPECT_TRUE(log.gaps().empty()) << "a forged heartbeat must not invent a gap";
  EXPECT_EQ(log.errors_containing("a replay"), 1u);
  EXPECT_EQ(receiver.stats().duplicates_dropped, 0u) << "the replay never got that far";
  EXPECT_EQ(seen_elsewhere.size(), 0u);
  ASSERT_TRUE(eventually([&] { return elsewhere_log.errors().size() == 1; }));
  EXPECT_EQ(elsewhere_log.errors_containing("matches none of the secrets"), 1u);
}

TEST_F(SecurityTest, SecretsRotateSigningWithTheFirstAndAcceptingEach) {
  const auto channel = unique_channel("rotation");
  // Mid-rotation: the publisher already signs with the new secret; a
  // receiver that knows both accepts it, one that knows only the old refuses.
  PostgresClusterBus rotated(signed_options(channel, nullptr, {other_secret, secret}));
  PostgresClusterBus knows_both(signed_options(channel, nullptr, {secret, other_secret}));
  EventLog old_log;
  PostgresClusterBus knows_old(signed_options(channel, &old_log, {secret}));
  Collector both, old;
  auto s1 = knows_both.subscribe(both.handler());
  auto s2 = knows_old.subscribe(old.handler());
  rotated.publish(nlohmann::json("signed with the new secret"));
  rotated.publish(nlohmann::json(std::string(9000, 'n')));  // and a spilled one
  ASSERT_TRUE(both.wait_for_count(2));
  ASSERT_TRUE(eventually([&] { return old_log.errors().size() == 2; }));
  EXPECT_EQ(old.size(), 0u);
}

TEST_F(SecurityTest, ATamperedOrUnsignedSpillRowIsRefusedEvenUnderAGenuinePointer) {
  const auto channel = unique_channel("tampered_row");
  auto sender_options = signed_options(channel);
  sender_options.spill = SpillMode::always;
  PostgresClusterBus sender(sender_options);
  Eavesdropper wire(url(), channel);
  sender.publish(nlohmann::json("one"));
  sender.publish(nlohmann::json("two"));
  const auto pointers = wire.payloads(2);
  ASSERT_EQ(pointers.size(), 2u);

  // Someone with write access to the table rewrites one row and strips the
  // other's signature; the genuine, signed pointers then reach a listener.
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec_params(
      "UPDATE public.sync_cluster_spill SET mac = NULL WHERE channel = $1 AND sequence = 1",
      channel);
  pqxx::nontransaction(admin).exec_params(
      "UPDATE public.sync_cluster_spill SET body = '\"tampered\"' WHERE channel = $1 AND "
      "sequence = 2",
      channel);
  EventLog log;
  auto receiver_options = signed_options(channel, &log);
  receiver_options.spill = SpillMode::always;
  PostgresClusterBus receiver(receiver_options);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  // The same pointers, validly signed, from a session of the holder of the
  // secret (the wire's copies would be refused as replays before anything
  // else: see ASignedEnvelopeReplayedToABusCreatedLaterIsRefused).
  for (std::uint64_t sequence = 1; sequence <= 2; ++sequence) {
    signed_notify(channel, [&](std::uint64_t pid) {
      return detail::encode_spill_pointer({sender.instance_id(), sequence, 0, pid, now_ms()});
    });
  }
  ASSERT_TRUE(eventually([&] { return log.errors().size() == 2; })) << log.errors().size();
  EXPECT_EQ(log.errors_containing("carries no signature"), 1u);
  EXPECT_EQ(log.errors_containing("matches none of the secrets"), 1u);
  sender.publish(nlohmann::json("three"));
  ASSERT_TRUE(seen.wait_for_count(1));
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(seen.size(), 1u) << "nothing read from a tampered row";
  EXPECT_EQ(seen.messages()[0].body, "three");
  // Each refused row is an exact gap, at once.
  const auto gaps = log.known_gaps();
  ASSERT_EQ(gaps.size(), 2u);
  EXPECT_EQ(gaps[0].first_missing, 1u);
  EXPECT_EQ(gaps[1].first_missing, 2u);
}

// A role that can only connect records a genuine signed envelope, and
// replays it to a bus created after its publisher closed: the signature is
// the publisher's, but it is older than the bus that receives it.
TEST_F(SecurityTest, ASignedEnvelopeReplayedToABusCreatedLaterIsRefused) {
  const auto channel = unique_channel("replay_later");
  Eavesdropper recorder(url(), channel);
  std::string recorded;
  {
    PostgresClusterBus publisher(signed_options(channel));
    publisher.publish({{"transfer", 100}});
    recorded = recorder.payloads(1).at(0);
  }
  // The bus below starts after the publisher closed, by more than the
  // second two buses' clocks may disagree by (SECURITY.md), with room for
  // their estimates' own errors on a loaded machine.
  std::this_thread::sleep_for(2500ms);
  EventLog log;
  auto o = signed_options(channel, &log);
  PostgresClusterBus fresh(o);
  Collector seen;
  auto s = fresh.subscribe(seen.handler());
  raw_notify(channel, recorded);
  ASSERT_TRUE(eventually([&] { return log.errors_containing("a replay") == 1; }))
      << (log.errors().empty() ? "no error" : log.errors().front());
  std::this_thread::sleep_for(100ms);  // time for a delivery that must not happen
  EXPECT_EQ(seen.size(), 0u);
  EXPECT_TRUE(log.gaps().empty()) << "a replay of an origin it never knew is no loss of its";
}

TEST_F(SecurityTest, AForgedPointerToAPlantedRowIsRefused) {
  const auto channel = unique_channel("planted");
  EventLog log;
  PostgresClusterBus receiver(signed_options(channel, &log));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) "
      "VALUES ($1, 'planted', 1, '\"planted\"')",
      channel);
  // A pointer signed with the right secret (as if captured and edited is not
  // possible: the MAC covers it), but the row carries no signature of its own.
  signed_notify(channel, [&](std::uint64_t pid) {
    return detail::encode_spill_pointer({"planted", 1, 0, pid, now_ms()});
  });
  ASSERT_TRUE(eventually([&] { return log.errors_containing("carries no signature") == 1; }));
  ASSERT_TRUE(eventually([&] { return log.known_gaps().size() == 1; }));
  EXPECT_EQ(seen.size(), 0u);
}

// A replay sent from a session that has the signer's process id (which the
// server gives another session once the signer's has ended, after about
// pid_max other processes: seen done in under three minutes where pid_max
// is 32768, and through a session pooler at once). What was signed before
// the bus started listening, from an origin it does not know, is not
// delivered: it may be a replay. A genuine one (a publish in flight as the
// bus started) is reported as a gap.
TEST_F(SecurityTest, AReplayFromTheSignersOwnProcessToABusCreatedLaterIsNotDelivered) {
  const auto channel = unique_channel("replay_same_pid");
  EventLog log;
  PostgresClusterBus fresh(signed_options(channel, &log));
  Collector seen;
  auto s = fresh.subscribe(seen.handler());
  const auto signed_at = now_ms() - 60'000;  // a minute before the bus started
  signed_notify(channel, [&](std::uint64_t pid) {
    return detail::encode_inline({"recorded-origin", 7, 0, pid, signed_at}, R"({"transfer":100})");
  });
  ASSERT_TRUE(eventually([&] { return log.known_gaps().size() == 1; }));
  EXPECT_EQ(seen.size(), 0u) << "a replay was delivered";
  EXPECT_EQ(log.known_gaps()[0].first_missing, 7u);
  // The origin's genuine messages from now on are delivered.
  signed_notify(channel, [&](std::uint64_t pid) {
    return detail::encode_inline({"recorded-origin", 8, 0, pid, now_ms()}, R"({"fresh":true})");
  });
  ASSERT_TRUE(seen.wait_for_count(1));
  EXPECT_EQ(seen.messages()[0].sequence, 8u);
}

// Two buses' estimates of the server's clock differ by a little (half a
// round trip each; more through a proxy that holds small packets back). A
// message published right after a bus started, by a publisher whose
// estimate is a little behind, was signed after that bus started: it is
// delivered. Found from outside (round 2): reported as a gap instead, for
// up to 30 % of such messages behind a 1 ms TCP hop.
TEST_F(SecurityTest, AMessageSignedRightAfterABusStartedByAClockALittleBehindIsDelivered) {
  const auto channel = unique_channel("start_race");
  EventLog log;
  PostgresClusterBus receiver(signed_options(channel, &log));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  signed_notify(channel, [&](std::uint64_t pid) {
    return detail::encode_inline({"behind", 1, 0, pid, now_ms() - 300}, R"({"n":1})");
  });
  ASSERT_TRUE(seen.wait_for_count(1)) << (log.errors().empty() ? "" : log.errors().front());
  EXPECT_TRUE(log.gaps().empty());
}

// A bus that lost its listening connection (with no catch-up: overflow)
// missed what was sent meanwhile, and reported a gap of unknown range. Those
// envelopes, replayed after it is back (through a session pooler that keeps
// the signer's session, or from a reused process id), were signed while it
// could not hear: not delivered, but reported, for an origin it knew (and
// had heard freshly) as for one it never heard. Found from outside
// (round 2): both were delivered.
// In both modes of the receiver: a durable one (SpillMode::always) catches
// up from the table, where inline messages are not; found from outside
// (round 3): it delivered the replay of an overflow publisher's inline
// messages, and without a replay it lost them with no gap at all.
class SecurityOutageTest : public SecurityTest, public ::testing::WithParamInterface<SpillMode> {};

INSTANTIATE_TEST_SUITE_P(ReceiverModes, SecurityOutageTest,
                         ::testing::Values(SpillMode::overflow, SpillMode::always),
                         [](const auto& info) {
                           return info.param == SpillMode::always ? "always" : "overflow";
                         });

TEST_P(SecurityOutageTest, SignedMessagesMissedDuringAnOutageAndReplayedAfterAreNotDelivered) {
  const auto channel = unique_channel("outage_replay");
  testing::RoleThatCanBeKeptOut role(url(), "outage" + channel.substr(channel.size() - 6));
  EventLog log;
  auto receiver_options = signed_options(channel, &log);
  receiver_options.spill = GetParam();
  PostgresClusterBus receiver(role.as_role(receiver_options));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  // One session sends everything: the signer's, as a pooler would keep it.
  pqxx::connection pooled(url());
  const auto pid =
      pqxx::nontransaction(pooled).exec1("SELECT pg_backend_pid()")[0].as<std::uint64_t>();
  const detail::MessageAuth auth({secret});
  const auto envelope = [&](const std::string& origin, std::uint64_t sequence) {
    return auth.sign_envelope(
        channel, detail::encode_inline({origin, sequence, 0, pid, now_ms()}, R"({"n":1})"));
  };
  const auto send = [&](const std::string& payload) {
    pqxx::nontransaction(pooled).exec_params("SELECT pg_notify($1, $2)", channel, payload);
  };
  send(envelope("known", 1));
  ASSERT_TRUE(seen.wait_for_count(1));
  // What follows is signed after the bus started, and before it is back,
  // each by more than the second two clocks may disagree by (and room for
  // their estimates' errors on a loaded machine).
  std::this_thread::sleep_for(2500ms);
  role.keep_out(receiver);
  const auto missed = std::vector<std::string>{envelope("known", 2), envelope("newcomer", 1)};
  for (const auto& payload : missed) send(payload);
  std::this_thread::sleep_for(2500ms);
  role.let_in();
  ASSERT_TRUE(eventually([&] { return receiver.stats().reconnects == 1u; }, 10s));
  ASSERT_TRUE(eventually([&] { return log.gaps().size() == 1u; })) << "the unknown-range gap";
  for (const auto& payload : missed) send(payload);  // the replay
  send(envelope("known", 3));                        // and the origin, freshly
  ASSERT_TRUE(seen.wait_for_count(2));
  std::this_thread::sleep_for(200ms);  // time for a delivery that must not happen
  std::vector<std::string> delivered;
  for (const auto& m : seen.messages()) {
    delivered.push_back(m.origin + "#" + std::to_string(m.sequence));
  }
  EXPECT_EQ(delivered, (std::vector<std::string>{"known#1", "known#3"}));
  std::set<std::string> gaps;
  for (const auto& gap : log.known_gaps()) {
    gaps.insert(gap.origin + "#" + std::to_string(gap.first_missing) + ".." +
                std::to_string(gap.last_missing));
  }
  EXPECT_EQ(gaps, (std::set<std::string>{"known#2..2", "newcomer#1..1"}));
}

// A signed envelope sent by the session it names, but signed longer ago
// than the freshness window: a replay, or a message heard too late (a
// listener that stopped reading; a step of the server's clock). Not
// delivered, and never silently: a gap even for an origin this bus does not
// know. Found from outside (round 2): after a step of the server's clock,
// buses refused each other's messages with no gap at all.
TEST_F(SecurityTest, AMessageSignedLongerAgoThanTheFreshnessWindowIsAGapNeverSilence) {
  const auto channel = unique_channel("too_old");
  EventLog log;
  PostgresClusterBus receiver(signed_options(channel, &log));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  signed_notify(channel, [&](std::uint64_t pid) {
    return detail::encode_inline({"long-ago", 5, 0, pid, now_ms() - 11 * 60'000}, R"({"n":5})");
  });
  ASSERT_TRUE(eventually([&] { return log.known_gaps().size() == 1u; }));
  EXPECT_EQ(log.known_gaps()[0].origin, "long-ago");
  EXPECT_EQ(log.known_gaps()[0].first_missing, 5u);
  EXPECT_EQ(log.known_gaps()[0].last_missing, 5u);
  EXPECT_EQ(log.errors_containing("freshness window"), 1u);
  EXPECT_EQ(seen.size(), 0u);
}

// Someone who may INSERT (and DELETE, or waits for vacuum) writes genuine
// rows again after their origin closed: they carry a new transaction id, so
// a catch-up reads them, but also their signing time, which their MAC
// covers: older than the bus, from an origin it never knew, they are not
// delivered.
TEST_F(SecurityTest, GenuineRowsWrittenAgainAreNotDeliveredToABusThatNeverSawThem) {
  const auto channel = unique_channel("rows_again");
  auto durable = [&](EventLog* log) {
    auto o = signed_options(channel, log);
    o.spill = SpillMode::always;
    return o;
  };
  pqxx::connection admin(url());
  {
    PostgresClusterBus publisher(durable(nullptr));
    for (int i = 1; i <= 3; ++i) publisher.publish({{"old", i}});
  }
  pqxx::nontransaction(admin).exec(
      "CREATE TEMP TABLE saved AS SELECT * FROM public.sync_cluster_spill WHERE channel = " +
      admin.quote(channel) +
      "; DELETE FROM public.sync_cluster_spill WHERE channel = " + admin.quote(channel));
  // The receiver below starts after those were signed, by more than the
  // second by which two buses' clocks may disagree (SECURITY.md), with room
  // for their estimates' errors on a loaded machine.
  std::this_thread::sleep_for(2500ms);
  testing::RoleThatCanBeKeptOut role(url(), "again" + channel.substr(channel.size() - 6));
  EventLog log;
  PostgresClusterBus receiver(role.as_role(durable(&log)));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  role.keep_out(receiver);
  pqxx::nontransaction(admin).exec(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body, mac, born, sent) "
      "SELECT channel, origin, sequence, body, mac, born, sent FROM saved");
  role.let_in();
  ASSERT_TRUE(eventually([&] { return receiver.stats().reconnects == 1u; }));
  ASSERT_TRUE(eventually([&] { return log.known_gaps().size() == 3; }))
      << log.known_gaps().size() << " gaps";
  EXPECT_EQ(seen.size(), 0u) << "rows written again were delivered";
}

// A role that may only INSERT plants an unsigned row ahead of an origin's
// next messages. Refused, it proves nothing: it is reported, and the
// genuine messages around it are delivered (it must not pass for a lost
// one and make them "duplicates").
TEST_F(SecurityTest, AnUnsignedRowPlantedAheadOfAnOriginHidesNothing) {
  const auto channel = unique_channel("planted_ahead");
  auto durable = [&](EventLog* log) {
    auto o = signed_options(channel, log);
    o.spill = SpillMode::always;
    return o;
  };
  testing::RoleThatCanBeKeptOut role(url(), "ahead" + channel.substr(channel.size() - 6));
  EventLog log;
  PostgresClusterBus receiver(role.as_role(durable(&log)));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  PostgresClusterBus publisher(durable(nullptr));
  for (int i = 1; i <= 15; ++i) publisher.publish(i);
  ASSERT_TRUE(seen.wait_for_count(15));
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) VALUES ($1, $2, "
      "30, '{\"planted\":true}')",
      channel, publisher.instance_id());
  role.keep_out(receiver);
  for (int i = 16; i <= 29; ++i) publisher.publish(i);
  role.let_in();
  ASSERT_TRUE(seen.wait_for_count(29, 20s)) << seen.size();
  check_exactly_once_in_order(seen);
  EXPECT_TRUE(log.gaps().empty());
  EXPECT_EQ(log.errors_containing("carries no signature"), 1u);
  EXPECT_EQ(receiver.stats().duplicates_dropped, 0u);
}

// The same plant met by a read-back: a receiver whose handlers fell behind
// reads an origin back page by page, and a page can hold nothing but the
// planted rows. Found from outside (round 2, r3): the read stayed on that
// page for ever (70,000 errors a second, the origin's later messages never
// delivered, no gap). The read goes on past refused rows.
TEST_F(SecurityTest, ARunOfRowsPlantedAheadDoesNotHoldAReadBackInPlace) {
  const auto channel = unique_channel("planted_reread");
  auto durable = [&](EventLog* log) {
    auto o = signed_options(channel, log);
    o.spill = SpillMode::always;
    return o;
  };
  EventLog log;
  auto receiver_options = durable(&log);
  receiver_options.delivery_queue_capacity = 4;
  PostgresClusterBus receiver(receiver_options);
  testing::HeldSubscription held(receiver);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  auto publisher_options = durable(nullptr);
  publisher_options.listen = false;
  PostgresClusterBus publisher(publisher_options);

  publisher.publish(1);
  ASSERT_TRUE(held.wait_until_held());
  for (int i = 2; i <= 19; ++i) publisher.publish(i);  // 6 on are dropped, to be read back
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) "
      "SELECT $1, $2, g, '{\"planted\":true}' FROM generate_series(20, 49) g",
      channel, publisher.instance_id());
  for (int i = 20; i <= 49; ++i) EXPECT_THROW(publisher.publish(i), database_error) << i;
  for (int i = 50; i <= 60; ++i) publisher.publish(i);
  held.release();

  ASSERT_TRUE(seen.wait_for_count(30, 20s)) << seen.size();
  std::vector<std::uint64_t> delivered;
  for (const auto& m : seen.messages()) delivered.push_back(m.sequence);
  std::vector<std::uint64_t> acked;
  for (std::uint64_t i = 1; i <= 60; ++i) {
    if (i < 20 || i > 49) acked.push_back(i);
  }
  EXPECT_EQ(delivered, acked) << "every acknowledged message, once, in order";
  ASSERT_TRUE(eventually([&] { return log.gaps().size() == 1; }));
  EXPECT_EQ(log.gaps()[0].first_missing, 20u);
  EXPECT_EQ(log.gaps()[0].last_missing, 49u);
  const auto errors = receiver.stats().errors;
  EXPECT_LE(errors, 30u) << "each planted row is refused once";
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(receiver.stats().errors, errors) << "nothing is read over and over";
}

// synchronous_commit = off from the environment (a role's settings,
// PGOPTIONS, the conninfo's options): a crash then loses commits already
// acknowledged. Found from outside (round 3): an always-mode publisher lost
// acknowledged messages through `pg_ctl -m immediate` (2 to 3 in most
// runs). Every session of a bus turns it back on; a stronger setting stays.
TEST_F(SecurityTest, ASessionWithSynchronousCommitOffFromItsEnvironmentCommitsDurably) {
  for (const auto& [from, expected] : std::vector<std::pair<std::string, std::string>>{
           {"off", "on"}, {"local", "local"}, {"remote_apply", "remote_apply"}}) {
    auto session = detail::open_session(url(), "syncbus:t_sync_commit");
    pqxx::nontransaction(*session).exec("SET synchronous_commit = " + from);
    detail::configure_session(*session, std::chrono::seconds(5));
    EXPECT_EQ(pqxx::nontransaction(*session).exec1("SHOW synchronous_commit")[0].as<std::string>(),
              expected)
        << "from " << from;
  }
}

// A search_path from the environment (PGOPTIONS, the conninfo's options,
// ALTER ROLE ... SET) can put someone else's schema ahead of pg_catalog.
// Found from outside (round 2): its pg_notify(), pg_backend_pid() and
// clock_timestamp() then ran as the bus's role (reading what that role may
// read), and a skewed clock_timestamp() made every message of that bus
// refused. Every session of a bus sets its own search_path first.
TEST_F(SecurityTest, AHostileSearchPathRunsNothingOfItsOwn) {
  pqxx::connection admin(url());
  const auto schema = "syncbus_t_evil_" + std::to_string(::getpid());
  std::string shadows =
      "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}; "
      "CREATE TABLE {s}.called (what text); ";
  for (const auto& [name, signature, returns, body] : std::vector<std::array<std::string, 4>>{
           {"pg_notify", "(text, text)", "void", "PERFORM pg_catalog.pg_notify($1, $2)"},
           {"pg_backend_pid", "()", "integer", "RETURN pg_catalog.pg_backend_pid()"},
           {"clock_timestamp", "()", "timestamptz",
            "RETURN pg_catalog.clock_timestamp() - interval '20 minutes'"},
           {"now", "()", "timestamptz", "RETURN pg_catalog.now()"},
           {"pg_current_xact_id", "()", "xid8", "RETURN pg_catalog.pg_current_xact_id()"},
           {"pg_current_snapshot", "()", "pg_snapshot", "RETURN pg_catalog.pg_current_snapshot()"},
           {"pg_visible_in_snapshot", "(xid8, pg_snapshot)", "boolean",
            "RETURN pg_catalog.pg_visible_in_snapshot($1, $2)"},
       }) {
    shadows += "CREATE FUNCTION {s}." + name + signature + " RETURNS " + returns +
               " LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {s}.called VALUES ('" + name + "'); " +
               body + "; END $$; ";
  }
  pqxx::nontransaction(admin).exec(fmt_schema(shadows, schema));

  for (const auto spill : {SpillMode::overflow, SpillMode::always}) {
    SCOPED_TRACE(spill == SpillMode::always ? "always" : "overflow");
    const auto channel = unique_channel("search_path");
    EventLog log;
    auto o = signed_options(channel, &log);
    o.spill = spill;
    o.conninfo = detail::with_connection_options(
        url(), {{"options", "-c search_path=" + schema + ",pg_catalog"}}, {});
    PostgresClusterBus receiver(o);
    Collector seen;
    auto s = receiver.subscribe(seen.handler());
    PostgresClusterBus publisher(o);
    publisher.publish(nlohmann::json("small"));
    publisher.publish(nlohmann::json(std::string(9000, 'x')));  // spilled in either mode
    publisher.publish(nlohmann::json("last"));
    ASSERT_TRUE(seen.wait_for_count(3)) << seen.size();
    check_exactly_once_in_order(seen);
    EXPECT_TRUE(log.errors().empty()) << log.errors().front();
    EXPECT_TRUE(log.gaps().empty());
  }
  const auto called = pqxx::nontransaction(admin).exec("SELECT what FROM " + schema + ".called");
  EXPECT_EQ(called.size(), 0u) << "a function of the hostile schema ran: "
                               << called[0][0].as<std::string>();
  pqxx::nontransaction(admin).exec("DROP SCHEMA " + schema + " CASCADE");
}

// A signed envelope names the server process of the session that sends it.
// A publish retried on a new session (its first one was killed) must name
// the new one, or every receiver refuses it as a replay: an acknowledged
// message lost.
TEST_F(SecurityTest, ASignedPublishRetriedOnANewSessionIsDeliveredNotRefusedAsAReplay) {
  for (const auto spill : {SpillMode::overflow, SpillMode::always}) {
    SCOPED_TRACE(spill == SpillMode::always ? "always" : "overflow");
    const auto channel = unique_channel("signed_retry");
    EventLog log;
    auto o = signed_options(channel, &log);
    o.spill = spill;
    PostgresClusterBus receiver(o);
    Collector seen;
    auto s = receiver.subscribe(seen.handler());
    auto publisher_options = signed_options(channel);
    publisher_options.spill = spill;
    publisher_options.listen = false;
    PostgresClusterBus publisher(publisher_options);
    publisher.publish(nlohmann::json("one"));
    ASSERT_TRUE(seen.wait_for_count(1));
    ASSERT_EQ(testing::terminate_backend(url(), publisher, testing::BusConnection::publisher), 1);
    publisher.publish(nlohmann::json("after"));  // retried on a new session
    publisher.publish(nlohmann::json(std::string(9000, 's')));
    ASSERT_TRUE(seen.wait_for_count(3)) << (log.errors().empty() ? "" : log.errors().front());
    check_exactly_once_in_order(seen);
    EXPECT_TRUE(log.errors().empty()) << log.errors().front();
    EXPECT_TRUE(log.gaps().empty());
  }
}

// The table's name may come from configuration that others can write: a
// table made by someone else, carrying code (which would run as the bus's
// role on every message), is refused at construction.
TEST_F(SecurityTest, ASpillTableCarryingCodeIsRefused) {
  pqxx::connection admin(url());
  const auto schema = "syncbus_t_code_" + std::to_string(::getpid());
  pqxx::nontransaction(admin).exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE; CREATE SCHEMA " +
                                   schema);
  const std::string columns =
      "(channel text NOT NULL, origin text NOT NULL, sequence bigint NOT NULL, body text NOT "
      "NULL, mac text, created_at timestamptz NOT NULL DEFAULT now(), xid xid8 DEFAULT "
      "pg_current_xact_id(), born xid8, sent bigint, PRIMARY KEY (channel, origin, sequence))";
  const std::vector<std::pair<std::string, std::string>> shapes{
      {"plain", ""},
      {"trigger",
       "CREATE FUNCTION {s}.steal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; "
       "END $$; CREATE TRIGGER steal BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION "
       "{s}.steal()"},
      {"rule", "CREATE RULE noisy AS ON INSERT TO {t} DO ALSO NOTIFY somewhere"},
      {"policy", "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"},
      {"default", "ALTER TABLE {t} ALTER COLUMN created_at SET DEFAULT clock_timestamp()"},
      {"extra_default", "ALTER TABLE {t} ADD COLUMN note text DEFAULT current_user"},
      {"generated",
       "ALTER TABLE {t} ADD COLUMN size int GENERATED ALWAYS AS (length(body)) STORED"},
      {"check", "ALTER TABLE {t} ADD CHECK (length(body) >= 0)"},
      {"index", "CREATE INDEX ON {t} (lower(origin))"},
      {"domain",
       "CREATE DOMAIN {s}.texty AS text CHECK (VALUE <> ''); ALTER TABLE {t} ALTER COLUMN origin "
       "TYPE {s}.texty"},
      {"child", "CREATE TABLE {s}.child () INHERITS ({t})"},
  };
  const auto fill = [&](std::string sql, const std::string& table) {
    for (const auto& [from, to] :
         {std::pair<std::string, std::string>{"{t}", schema + "." + table}, {"{s}", schema}}) {
      for (auto at = sql.find(from); at != std::string::npos; at = sql.find(from, at)) {
        sql.replace(at, from.size(), to);
      }
    }
    return sql;
  };
  for (const auto& [name, code] : shapes) {
    const auto table = "spill_" + name;
    pqxx::nontransaction(admin).exec("CREATE TABLE " + schema + "." + table + " " + columns +
                                     "; CREATE INDEX ON " + schema + "." + table + " (xid); " +
                                     fill(code, table));
    auto o = options(unique_channel("code"));
    o.spill_schema = schema;
    o.spill_table = table;
    o.create_spill_table = false;
    if (name == "plain") {
      EXPECT_NO_THROW(PostgresClusterBus bus(o)) << "a table of the right shape is used";
      continue;
    }
    try {
      PostgresClusterBus bus(o);
      ADD_FAILURE() << "used a spill table with a " << name;
    } catch (const configuration_error& e) {
      EXPECT_NE(std::string(e.what()).find("refusing the spill table"), std::string::npos)
          << name << ": " << e.what();
    }
  }
  pqxx::nontransaction(admin).exec("DROP SCHEMA " + schema + " CASCADE");
}

// A genuine signed pointer read more than 10 minutes after it was signed:
// not a replay (it comes from the session it names) but a listener that was
// busy, say catching up for that long. Its rows are read back from the
// table, where their own signatures and times are checked: the message is
// delivered, not refused as stale.
TEST_F(SecurityTest, ASignedPointerReadLateIsReadBackNotRefused) {
  const auto channel = unique_channel("late_pointer");
  EventLog log;
  auto o = signed_options(channel, &log);
  o.spill = SpillMode::always;
  PostgresClusterBus receiver(o);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  const detail::MessageAuth auth({secret});
  pqxx::connection connection(url());
  pqxx::work writer(connection);
  const auto pid = writer.exec1("SELECT pg_backend_pid()")[0].as<std::uint64_t>();
  const auto born =
      detail::parse_xid(writer.exec1("SELECT pg_current_xact_id()::text")[0].as<std::string>());
  const auto now = now_ms();
  const std::string body = R"({"late":true})";
  writer.exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body, mac, born, sent) "
      "VALUES ($1, 'late-origin', 1, $2, $3, $4::text::xid8, $5)",
      channel, body,
      auth.row_mac({channel, "late-origin", 1, detail::MessageAuth::RowStamp{born, now}, body}),
      std::to_string(born), static_cast<std::int64_t>(now));
  const auto eleven_minutes_ago = now - 11 * 60 * 1000;
  writer.exec_params(
      "SELECT pg_notify($1, $2)", channel,
      auth.sign_envelope(channel, detail::encode_spill_pointer(
                                      {"late-origin", 1, born, pid, eleven_minutes_ago})));
  writer.commit();
  ASSERT_TRUE(seen.wait_for_count(1, 10s));
  EXPECT_EQ(seen.messages()[0].body, nlohmann::json({{"late", true}}));
  EXPECT_TRUE(log.gaps().empty());
}

TEST_F(SecurityTest, AlwaysModeShowsAStrangerOnTheChannelOnlyPointers) {
  const auto channel = unique_channel("confidential");
  auto o = options(channel);
  o.spill = SpillMode::always;
  PostgresClusterBus bus(o);
  Eavesdropper stranger(url(), channel);
  bus.publish({{"card", "4111 1111 1111 1111"}});
  const auto seen_on_the_wire = stranger.payloads(1).at(0);
  // Neither the key nor the number. (Not a fragment of it: the envelope's
  // "sent", milliseconds since 1970, contained "4111" in one CI run, as any
  // such number can: 1796041111458.)
  EXPECT_EQ(seen_on_the_wire.find("4111 1111"), std::string::npos) << seen_on_the_wire;
  EXPECT_EQ(seen_on_the_wire.find("card"), std::string::npos) << seen_on_the_wire;
  EXPECT_NE(seen_on_the_wire.find(R"("spilled":true)"), std::string::npos);
}

TEST_F(SecurityTest, AnOversizedSpillRowIsRefusedWithoutBeingLoaded) {
  const auto channel = unique_channel("oversized_row");
  EventLog log;
  auto o = options(channel);
  o.max_message_bytes = 1000;
  o.on_error = log.error_handler();
  o.on_gap = log.gap_handler();
  PostgresClusterBus receiver(o);
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  EXPECT_THROW(receiver.publish(nlohmann::json(std::string(2000, 'x'))), payload_too_large);
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) "
      "VALUES ($1, 'big', 1, repeat('x', 5000000))",
      channel);
  raw_notify(channel, detail::encode_spill_pointer("big", 1));
  raw_notify(channel, forged("big", 2, R"("small")"));
  ASSERT_TRUE(seen.wait_for_count(1));
  EXPECT_EQ(seen.messages()[0].body, "small");
  EXPECT_EQ(log.errors_containing("5000000 bytes"), 1u);
  // Refused, so lost: an exact gap at once (even as the origin's first message).
  ASSERT_EQ(log.known_gaps().size(), 1u);
  EXPECT_EQ(log.known_gaps()[0].first_missing, 1u);
  EXPECT_EQ(log.known_gaps()[0].last_missing, 1u);
}

// Names from configuration (environment variables): each is refused with a
// clear error or used exactly as written, and none runs as SQL.
TEST_F(SecurityTest, HostileChannelNamesRoundTripExactlyOrAreRefused) {
  const std::vector<std::string> accepted = {
      "x",
      "MixedCase_Channel",
      "mixedcase_channel",  // a different channel from the one above
      "quote\"and'apostrophe",
      "; DROP TABLE sentinel_channels_" + std::to_string(::getpid()) + "; --",
      "comment/* */--",
      "back\\slash\\\\",
      "unicode_канал_🚀_語",
      "space and\ttab",
      std::string(63, 'c')};
  pqxx::connection admin(url());
  const auto sentinel = "sentinel_channels_" + std::to_string(::getpid());
  pqxx::nontransaction(admin).exec("CREATE TABLE IF NOT EXISTS " + sentinel + " (id int); " +
                                   "TRUNCATE " + sentinel + "; INSERT INTO " + sentinel +
                                   " VALUES (1)");
  std::vector<std::unique_ptr<PostgresClusterBus>> buses;
  std::vector<std::unique_ptr<Collector>> seen;
  std::vector<Subscription> subscriptions;
  const auto suffix = std::to_string(::getpid() % 1000);
  std::vector<std::string> channels;
  for (auto name : accepted) {
    if (name.size() < 60) name += suffix;  // unique to this run
    channels.push_back(name);
    buses.push_back(std::make_unique<PostgresClusterBus>(options(name)));
    seen.push_back(std::make_unique<Collector>());
    subscriptions.push_back(buses.back()->subscribe(seen.back()->handler()));
  }
  for (std::size_t i = 0; i < buses.size(); ++i) {
    EXPECT_EQ(buses[i]->channel(), channels[i]);
    buses[i]->publish(nlohmann::json(channels[i]));
    buses[i]->publish({{"channel", channels[i]}, {"pad", std::string(9000, 'p')}});  // spilled
  }
  for (std::size_t i = 0; i < buses.size(); ++i) {
    ASSERT_TRUE(seen[i]->wait_for_count(2)) << channels[i];
    std::this_thread::sleep_for(50ms);
    const auto messages = seen[i]->messages();
    ASSERT_EQ(messages.size(), 2u) << "exactly its own channel's messages: " << channels[i];
    EXPECT_EQ(messages[0].body, channels[i]);
    EXPECT_EQ(messages[1].body["channel"], channels[i]);
  }
  // Each name reached PostgreSQL exactly: the spilled rows carry it.
  for (std::size_t i = 0; i < buses.size(); ++i) {
    EXPECT_EQ(pqxx::nontransaction(admin)
                  .exec_params1("SELECT count(*) FROM public.sync_cluster_spill WHERE channel = $1 "
                                "AND origin = $2",
                                channels[i], buses[i]->instance_id())[0]
                  .as<int>(),
              1)
        << channels[i];
  }
  EXPECT_EQ(pqxx::nontransaction(admin).exec1("SELECT count(*) FROM " + sentinel)[0].as<int>(), 1)
      << "no name ran as SQL";

  for (const auto& refused : {std::string(), std::string(64, 'c'), std::string(200, 'd'),
                              std::string("nul\0inside", 10), std::string("bad\xff utf8")}) {
    try {
      PostgresClusterBus bus(options(refused));
      ADD_FAILURE() << "accepted " << ::testing::PrintToString(refused);
    } catch (const configuration_error& e) {
      EXPECT_NE(std::string(e.what()).find("PostgresBusOptions::channel"), std::string::npos)
          << e.what();
    }
  }
}

TEST_F(SecurityTest, HostileTableNamesAreQuotedNeverExecuted) {
  pqxx::connection admin(url());
  const auto sentinel = "sentinel_tables_" + std::to_string(::getpid());
  pqxx::nontransaction(admin).exec("CREATE TABLE IF NOT EXISTS " + sentinel + " (id int); " +
                                   "TRUNCATE " + sentinel + "; INSERT INTO " + sentinel +
                                   " VALUES (1)");
  const auto suffix = std::to_string(::getpid() % 100000);
  const std::vector<std::pair<std::string, std::string>> names = {
      {"public", "Spill\"Table;DROP TABLE " + sentinel + ";--"},
      {"public", "spill/*comment*/" + suffix},
      {"public", "таблица_🚀_" + suffix},
      {"Hostile \"Schema\"" + suffix, "spill"},
      {"public", std::string(56, 't') + suffix.substr(0, 5)}};
  for (const auto& [schema, table] : names) {
    pqxx::nontransaction(admin).exec("CREATE SCHEMA IF NOT EXISTS " + admin.quote_name(schema));
    const auto channel = unique_channel("table_name");
    auto o = options(channel);
    o.spill_schema = schema;
    o.spill_table = table;
    PostgresClusterBus bus(o);
    Collector seen;
    auto s = bus.subscribe(seen.handler());
    bus.publish(nlohmann::json(std::string(9000, 's')));
    ASSERT_TRUE(seen.wait_for_count(1)) << table;
    EXPECT_EQ(bus.vacuum(0ms), 1) << table;
    // The table has exactly the name it was given.
    EXPECT_EQ(pqxx::nontransaction(admin)
                  .exec_params1("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON "
                                "n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                                schema, table)[0]
                  .as<int>(),
              1)
        << schema << "." << table;
  }
  EXPECT_EQ(pqxx::nontransaction(admin).exec1("SELECT count(*) FROM " + sentinel)[0].as<int>(), 1);
  auto too_long = options(unique_channel("table_name"));
  too_long.spill_table = std::string(64, 't');
  EXPECT_THROW(PostgresClusterBus bus(too_long), configuration_error);
}

TEST_F(SecurityTest, SecretsNeverAppearInErrorsLogsOrStats) {
  const std::string password = "pw-never-shown-4417";
  // An unreachable server, a password in key=value form and in a URI that
  // libpq cannot parse (it quotes the bad token: the password).
  for (const std::string conninfo : {"host=127.0.0.1 port=1 connect_timeout=2 password=" + password,
                                     "postgresql://app:" + password + "%zz@127.0.0.1:1/app"}) {
    auto o = options(unique_channel("secret_conninfo"));
    o.conninfo = conninfo;
    try {
      PostgresClusterBus bus(o);
      ADD_FAILURE() << "connected to port 1";
    } catch (const std::exception& e) {
      EXPECT_EQ(std::string(e.what()).find(password), std::string::npos) << e.what();
    }
  }
  // The HMAC secret, in what a bus reports about forgeries and in stats().
  const auto channel = unique_channel("secret_hmac");
  EventLog log;
  PostgresClusterBus bus(signed_options(channel, &log));
  raw_notify(channel, forged("x", 1, "1"));
  detail::MessageAuth wrong({other_secret});
  raw_notify(channel, wrong.sign_envelope(channel, forged("x", 1, "1")));
  ASSERT_TRUE(eventually([&] { return log.errors().size() == 2; }));
  for (const auto& e : log.errors()) {
    EXPECT_EQ(e.find(secret), std::string::npos) << e;
    EXPECT_EQ(e.find(other_secret), std::string::npos) << e;
  }
  EXPECT_EQ(bus.stats().last_error.find(secret), std::string::npos);
}

// Roles: what each needs, and what a bus says at construction when a grant
// is missing. Each test works in a schema of its own, with the spill table
// created ahead of time by the superuser (as a migration would).
class PrivilegeTest : public testing::PostgresTest {
 protected:
  void SetUp() override {
    testing::PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    admin_ = std::make_unique<pqxx::connection>(url());
    const auto tag = std::to_string(::getpid()) + "_" + std::to_string(counter_++);
    schema_ = "syncbus_t_priv_" + tag;
    role_ = "syncbus_t_role_" + tag;
    admin(sql("CREATE SCHEMA {0}; CREATE ROLE {1} LOGIN; GRANT USAGE ON SCHEMA {0} TO {1}", schema_,
              role_));
    // The migration: the table, made by the owner.
    auto o = options(unique_channel("migration"));
    o.spill_schema = schema_;
    PostgresClusterBus owner(o);
  }
  void TearDown() override {
    if (!admin_) return;
    admin(sql("DROP SCHEMA {0} CASCADE; DROP OWNED BY {1}; DROP ROLE {1}", schema_, role_));
  }
  static std::string sql(std::string text, const std::string& zero, const std::string& one = "") {
    for (std::string::size_type at; (at = text.find("{0}")) != std::string::npos;) {
      text.replace(at, 3, zero);
    }
    for (std::string::size_type at; (at = text.find("{1}")) != std::string::npos;) {
      text.replace(at, 3, one);
    }
    return text;
  }
  void admin(const std::string& sql) { pqxx::nontransaction(*admin_).exec(sql); }
  void grant(const std::string& what) { admin(sql(what, schema_ + ".sync_cluster_spill", role_)); }
  PostgresBusOptions as_role(SpillMode mode) const {
    auto o = options(unique_channel("privileges"));
    o.conninfo = detail::with_connection_options(url(), {{"user", role_}}, {});
    o.spill_schema = schema_;
    o.create_spill_table = false;
    o.spill = mode;
    return o;
  }
  std::string refusal(SpillMode mode) const {
    try {
      PostgresClusterBus bus(as_role(mode));
    } catch (const configuration_error& e) {
      return e.what();
    }
    return "";
  }

  std::unique_ptr<pqxx::connection> admin_;
  std::string schema_;
  std::string role_;
  static inline int counter_ = 0;
};

TEST_F(PrivilegeTest, ARoleWithoutGrantsIsToldEveryMissingOneAtConstruction) {
  const auto start = std::chrono::steady_clock::now();
  const auto why = refusal(SpillMode::overflow);
  // At once, not after retries or a timeout (query_timeout: 10 s): one
  // connection and a few catalog queries, which a loaded machine has taken
  // over a second for.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s) << "at construction, no retrying";
  for (const auto needed :
       {"SELECT on table", "INSERT on table", "GRANT SELECT ON TABLE", "GRANT INSERT ON TABLE"}) {
    EXPECT_NE(why.find(needed), std::string::npos) << needed << " in: " << why;
  }
  EXPECT_NE(why.find(role_), std::string::npos) << why;
}

TEST_F(PrivilegeTest, AListenerNeedsSelectAndAPublisherInsert) {
  grant("GRANT SELECT ON {0} TO {1}");
  // SpillMode::never never writes to the table: reading is enough.
  EXPECT_EQ(refusal(SpillMode::never), "");
  const auto why = refusal(SpillMode::overflow);
  EXPECT_NE(why.find("INSERT on table"), std::string::npos) << why;
  EXPECT_EQ(why.find("SELECT on table"), std::string::npos) << why;
  grant("GRANT INSERT ON {0} TO {1}");
  EXPECT_EQ(refusal(SpillMode::always), "");

  // A publisher with exactly those grants works end to end, spilling...
  PostgresClusterBus bus(as_role(SpillMode::always));
  Collector seen;
  auto s = bus.subscribe(seen.handler());
  bus.publish(nlohmann::json("with least privilege"));
  ASSERT_TRUE(seen.wait_for_count(1));
  // ...but vacuuming is the vacuum job's: DELETE.
  try {
    bus.vacuum(0ms);
    FAIL() << "vacuumed without DELETE";
  } catch (const database_error& e) {
    EXPECT_EQ(e.sqlstate(), "42501") << e.what();
  }
  grant("GRANT DELETE ON {0} TO {1}");
  // ...and noting what it deletes, for positions: without the removal
  // log's grants it deletes nothing (rather than delete rows unnoted), and
  // says which table it may not write.
  try {
    bus.vacuum(0ms);
    FAIL() << "vacuumed without noting it in the removal log";
  } catch (const database_error& e) {
    EXPECT_EQ(e.sqlstate(), "42501") << e.what();
    EXPECT_NE(std::string(e.what()).find("sync_cluster_spill_removed"), std::string::npos)
        << e.what();
  }
  grant("GRANT SELECT, INSERT, UPDATE ON {0}_removed TO {1}");
  EXPECT_EQ(bus.vacuum(0ms), 1);
}

// A publish-only bus reads nothing: INSERT is all it needs, even in
// SpillMode::always, whose bodies a role without SELECT then cannot read back.
TEST_F(PrivilegeTest, APublishOnlyBusNeedsInsertButNotSelect) {
  grant("GRANT INSERT ON {0} TO {1}");
  auto o = as_role(SpillMode::always);
  const auto listening = refusal(SpillMode::always);
  EXPECT_NE(listening.find("SELECT on table"), std::string::npos) << listening;
  o.listen = false;
  PostgresClusterBus publish_only(o);
  auto reader_options = options(o.channel, "reader");
  reader_options.spill_schema = schema_;
  reader_options.spill = SpillMode::always;
  PostgresClusterBus reader(reader_options);
  Collector seen;
  auto s = reader.subscribe(seen.handler());
  publish_only.publish(nlohmann::json("written, not readable by its writer"));
  ASSERT_TRUE(seen.wait_for_count(1));
  EXPECT_EQ(seen.messages()[0].body, "written, not readable by its writer");
  EXPECT_EQ(seen.messages()[0].origin, publish_only.instance_id());
}

// Tables made by syncbus 0.1 had a bigserial id: INSERT then also needs USAGE
// on its sequence, and the bus says so. They also lack the columns that
// catching up by transaction needs: a bus that may not add them (here it
// does not own the table) names the migration, which its owner runs.
TEST_F(PrivilegeTest, AnOlderTableWithAnIdSequenceNeedsUsageOnIt) {
  admin(
      sql("DROP TABLE {0}.sync_cluster_spill; CREATE TABLE {0}.sync_cluster_spill (id "
          "bigserial PRIMARY KEY, channel text NOT NULL, origin text NOT NULL, sequence bigint "
          "NOT NULL, body text NOT NULL, mac text, created_at timestamptz NOT NULL DEFAULT "
          "now(), UNIQUE (channel, origin, sequence))",
          schema_));
  grant("GRANT SELECT, INSERT ON {0} TO {1}");
  const auto migration = refusal(SpillMode::overflow);
  EXPECT_NE(migration.find("was made by an older syncbus"), std::string::npos) << migration;
  const auto sql_at = migration.find("ALTER TABLE");
  ASSERT_NE(sql_at, std::string::npos) << migration;
  admin(migration.substr(sql_at));  // what the error says to run, as the owner
  const auto why = refusal(SpillMode::overflow);
  EXPECT_NE(why.find("USAGE on sequence " + schema_ + ".sync_cluster_spill_id_seq"),
            std::string::npos)
      << why;
  grant("GRANT USAGE ON SEQUENCE {0}_id_seq TO {1}");
  EXPECT_EQ(refusal(SpillMode::overflow), "");
  PostgresClusterBus bus(as_role(SpillMode::always));
  Collector seen;
  auto s = bus.subscribe(seen.handler());
  bus.publish(nlohmann::json("into the older table"));
  ASSERT_TRUE(seen.wait_for_count(1));
}

TEST_F(PrivilegeTest, AMissingTableThatTheRoleMayNotCreateNamesTheMigration) {
  admin(sql("DROP TABLE {0}.sync_cluster_spill", schema_));
  auto o = as_role(SpillMode::overflow);
  o.create_spill_table = true;
  try {
    PostgresClusterBus bus(o);
    FAIL() << "created a table without CREATE on the schema";
  } catch (const configuration_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("may not create it"), std::string::npos) << what;
    EXPECT_NE(what.find("CREATE TABLE IF NOT EXISTS"), std::string::npos) << what;
    EXPECT_NE(what.find("create_spill_table = false"), std::string::npos) << what;
  }
}

// A hot standby (a second throwaway cluster streaming from the first):
// LISTEN and pg_notify() do not work there, so a bus refuses it at once.
TEST(StandbyTest, ABusRefusesAServerInRecovery) {
  DedicatedServer primary;
  if (!primary.started()) {
    if (testing::running_in_ci()) FAIL() << "could not start a dedicated PostgreSQL";
    GTEST_SKIP() << "no PostgreSQL server binaries";
  }
  const auto standby = primary.start_replica();
  ASSERT_FALSE(standby.empty()) << "could not start a streaming replica";
  PostgresBusOptions o;
  o.conninfo = standby;
  o.channel = unique_channel("standby");
  try {
    PostgresClusterBus bus(o);
    FAIL() << "a bus started on a standby";
  } catch (const configuration_error& e) {
    EXPECT_NE(std::string(e.what()).find("standby"), std::string::npos) << e.what();
  }
  o.conninfo = primary.url();
  EXPECT_NO_THROW(PostgresClusterBus bus(o));
}

// PgBouncer in transaction mode hands each transaction any server
// connection: a LISTEN is lost as soon as its transaction ends. The bus
// proves a NOTIFY round trip at construction and refuses such a path.
TEST(PoolerTest, ATransactionPoolerIsRefusedAndASessionPoolerWorks) {
  DedicatedServer server;
  if (!server.started()) {
    if (testing::running_in_ci()) FAIL() << "could not start a dedicated PostgreSQL";
    GTEST_SKIP() << "no PostgreSQL server binaries";
  }
  const auto transaction_pooled = server.start_pgbouncer("transaction");
  if (transaction_pooled.empty()) {
    if (testing::running_in_ci()) FAIL() << "could not start PgBouncer";
    GTEST_SKIP() << "PgBouncer is not installed";
  }
  PostgresBusOptions o;
  o.conninfo = transaction_pooled;
  o.channel = unique_channel("pooled");
  const auto start = std::chrono::steady_clock::now();
  try {
    PostgresClusterBus bus(o);
    FAIL() << "a bus started behind a transaction pooler";
  } catch (const configuration_error& e) {
    EXPECT_NE(std::string(e.what()).find("pool_mode=transaction"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);

  const auto session_pooled = server.start_pgbouncer("session");
  ASSERT_FALSE(session_pooled.empty());
  o.conninfo = session_pooled;
  PostgresClusterBus bus(o);
  Collector seen;
  auto s = bus.subscribe(seen.handler());
  bus.publish(nlohmann::json("through a session pooler"));
  EXPECT_TRUE(seen.wait_for_count(1));
}

}  // namespace
}  // namespace syncbus
