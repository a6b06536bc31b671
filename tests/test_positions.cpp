// Positions (ClusterMessage::position) on a real server: each one names
// exactly what its bus had delivered, read back from the spill table as
// docs/PROTOCOL.md ("Positions") says another bus would read it.
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <atomic>
#include <future>
#include <set>
#include <thread>

#include "pg_helpers.hpp"
#include "position_token.hpp"
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

using Key = std::pair<std::string, std::uint64_t>;

struct Row {
  std::string origin;
  std::uint64_t sequence = 0;
  std::uint64_t xid = 0;
};

std::vector<Row> rows_of(const std::string& url, const std::string& channel) {
  pqxx::connection connection(url);
  std::vector<Row> rows;
  for (const auto& row : pqxx::nontransaction(connection)
                             .exec_params("SELECT origin, sequence, xid::text FROM "
                                          "public.sync_cluster_spill WHERE channel = $1",
                                          channel)) {
    rows.push_back(
        {row[0].as<std::string>(), row[1].as<std::uint64_t>(), detail::parse_xid(row[2].c_str())});
  }
  return rows;
}

// The rows a position does not name: those another bus would deliver to a
// client resuming from it.
std::set<Key> after(const detail::DecodedPosition& position, const std::vector<Row>& rows) {
  std::set<Key> out;
  for (const auto& row : rows) {
    const auto cursor = position.cursors.find(row.origin);
    const bool named = cursor != position.cursors.end() ? row.sequence <= cursor->second
                                                        : position.snapshot.visible(row.xid);
    if (!named) out.emplace(row.origin, row.sequence);
  }
  return out;
}

// Every message's position, against the table once everything is in it:
// what it leaves out is exactly what the bus delivered after that message.
void expect_each_position_exact(const std::vector<ClusterMessage>& delivered,
                                const std::vector<Row>& rows, const std::string& channel,
                                std::size_t most_cursors) {
  const auto key = detail::position_channel_key("public", "sync_cluster_spill", channel);
  std::set<Key> later;
  for (const auto& m : delivered) later.emplace(m.origin, m.sequence);
  std::size_t wrong = 0;
  for (const auto& m : delivered) {
    later.erase({m.origin, m.sequence});
    ASSERT_FALSE(m.position.empty()) << m.origin << "#" << m.sequence;
    const auto position = detail::decode_position(key, m.position);
    EXPECT_LE(position.cursors.size(), most_cursors) << m.position;
    const auto resumed = after(position, rows);
    if (resumed != later && ++wrong <= 3) {
      std::vector<Key> missing, extra;
      std::set_difference(later.begin(), later.end(), resumed.begin(), resumed.end(),
                          std::back_inserter(missing));
      std::set_difference(resumed.begin(), resumed.end(), later.begin(), later.end(),
                          std::back_inserter(extra));
      ADD_FAILURE()
          << "after " << m.origin << "#" << m.sequence << " (snapshot " << position.snapshot.text()
          << ", " << position.cursors.size() << " cursors): " << missing.size()
          << " delivered later but named, first "
          << (missing.empty() ? "-" : missing[0].first + "#" + std::to_string(missing[0].second))
          << "; " << extra.size() << " not named but delivered before, first "
          << (extra.empty() ? "-" : extra[0].first + "#" + std::to_string(extra[0].second));
    }
  }
  EXPECT_EQ(wrong, 0u) << "of " << delivered.size() << " positions";
}

class PositionTest : public testing::PostgresTest {
 protected:
  // Three publishers, one of them the receiver itself; one transaction
  // that commits a second after later ones (its INSERT waits on a row
  // another session holds); the listener's connection killed in the middle
  // (a catch-up); marks all along. Each of the ~870 positions is checked.
  // `queue_capacity` and `handler_pause`: a receiver whose queue fills,
  // so that origins are held back and read back from the table.
  void each_position_is_exact(const std::string& channel, std::size_t queue_capacity,
                              std::chrono::microseconds handler_pause);
};

void PositionTest::each_position_is_exact(const std::string& channel, std::size_t queue_capacity,
                                          std::chrono::microseconds handler_pause) {
  EventLog log;
  auto receiver_options = durable_options(channel, "position-receiver");
  receiver_options.on_error = log.error_handler();
  receiver_options.on_gap = log.gap_handler();
  if (queue_capacity != 0) receiver_options.delivery_queue_capacity = queue_capacity;
  PostgresClusterBus receiver(receiver_options);
  PostgresClusterBus steady(durable_options(channel, "position-steady"));
  PostgresClusterBus late(durable_options(channel, "position-late"));
  Collector seen;
  auto collect = seen.handler();
  auto s = receiver.subscribe([&](const ClusterMessage& m) {
    collect(m);
    if (handler_pause.count() > 0) std::this_thread::sleep_for(handler_pause);
  });

  // steady: bursts of 20 (batch envelopes), for about four seconds, so
  // that several marks come back in between.
  constexpr int rounds = 40, burst = 20;
  std::thread steady_thread([&] {
    for (int round = 0; round < rounds; ++round) {
      std::vector<std::future<void>> sent;
      for (int i = 0; i < burst; ++i)
        sent.push_back(steady.publish_async({{"r", round}, {"i", i}}));
      for (auto& f : sent) f.get();
      std::this_thread::sleep_for(100ms);
    }
  });
  // The receiver's own messages, which reach it from its publisher.
  std::thread own_thread([&] {
    for (int i = 0; i < 30; ++i) {
      receiver.publish({{"own", i}});
      std::this_thread::sleep_for(120ms);
    }
  });

  // late: 1..10, 11, then 12 waits on a row another session holds, with
  // its transaction id taken, while steady commits; it commits a second
  // later, then 13..20.
  for (int i = 1; i <= 10; ++i) late.publish({{"late", i}});
  pqxx::connection holder(url());
  pqxx::work hold(holder);
  hold.exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) "
      "VALUES ($1, $2, 12, '{}')",
      channel, late.instance_id());
  late.publish({{"late", 11}});
  auto twelve = std::async(std::launch::async, [&] { late.publish({{"late", 12}}); });
  ASSERT_TRUE(eventually(
      [&] {
        pqxx::connection admin(url());
        return pqxx::nontransaction(admin)
                   .exec_params1(
                       "SELECT count(*) FROM pg_stat_activity WHERE application_name "
                       "= $1 AND wait_event = 'transactionid'",
                       testing::application_name_of(late))[0]
                   .as<int>() == 1;
      },
      5s));
  std::this_thread::sleep_for(1s);
  hold.abort();
  twelve.get();
  for (int i = 13; i <= 20; ++i) late.publish({{"late", i}});

  // A catch-up in the middle.
  ASSERT_EQ(testing::terminate_backend(url(), receiver, BusConnection::listener), 1);
  steady_thread.join();
  own_thread.join();

  const std::size_t total = rounds * burst + 20 + 30;
  ASSERT_TRUE(seen.wait_for_count(total, 30s)) << seen.size();
  check_exactly_once_in_order(seen);
  EXPECT_EQ(seen.size(), total);
  EXPECT_TRUE(log.gaps().empty());
  EXPECT_GE(receiver.stats().reconnects, 1u);
  if (queue_capacity != 0) EXPECT_GT(receiver.stats().reread_from_table, 0u);
  const auto messages = seen.messages();
  expect_each_position_exact(messages, rows_of(url(), channel), channel, /*most_cursors=*/3);
  // Marks came back, and let go of the cursors of origins they cover.
  const auto key = detail::position_channel_key("public", "sync_cluster_spill", channel);
  EXPECT_TRUE(std::any_of(messages.begin(), messages.end(), [&](const ClusterMessage& m) {
    return detail::decode_position(key, m.position).cursors.size() <= 1;
  }));
}

TEST_F(PositionTest, EachPositionNamesExactlyWhatItsBusHadDelivered) {
  each_position_is_exact(unique_channel("positions"), 0, {});
}

TEST_F(PositionTest, EachPositionIsExactWhileAFullQueueHoldsOriginsBack) {
  each_position_is_exact(unique_channel("positions_held"), 8, 5ms);
}

TEST_F(PositionTest, OnlyADurableBusGivesPositions) {
  const auto channel = unique_channel("positions_overflow");
  PostgresClusterBus receiver(options(channel, "overflow-receiver"));
  Collector seen;
  auto s = receiver.subscribe(seen.handler());
  receiver.publish({{"n", 1}});
  PostgresClusterBus other(options(channel, "overflow-other"));
  other.publish({{"n", 2}});
  ASSERT_TRUE(seen.wait_for_count(2));
  for (const auto& m : seen.messages()) EXPECT_TRUE(m.position.empty()) << m.position;
}

}  // namespace
}  // namespace syncbus
