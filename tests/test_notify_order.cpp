// What the durable catch-up stands on, shown against a real server before
// anything is built on it (docs/PROTOCOL.md, "Catching up"):
//
// A listening session that, in one transaction, takes pg_current_snapshot()
// and NOTIFYs a private channel it also listens on has received every
// notification of every transaction visible in that snapshot (and committed
// after its LISTEN) once its own notification comes back.
//
// Why, from PostgreSQL's async.c: a transaction puts its notifications into
// the one server-wide queue at pre-commit, holding a lock until its commit
// is done, and a listening backend reads the queue in order. A transaction
// visible in the snapshot committed before the snapshot was taken, so its
// entries are in the queue before the marker's own.
//
// This test does it with raw connections, no syncbus code but the snapshot
// parser: writers commit NOTIFYs with random delays between their NOTIFY and
// their COMMIT (so commits come out of order), and the listener sends markers
// as fast as it can.
#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pg_helpers.hpp"
#include "pg_snapshot.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using detail::PgSnapshot;
using testing::unique_channel;

class NotifyOrderTest : public testing::PostgresTest {};

// Records what a listening connection received, in order.
class Received final : public pqxx::notification_receiver {
 public:
  Received(pqxx::connection_base& connection, const std::string& channel,
           std::vector<std::string>& sink)
      : pqxx::notification_receiver(connection, channel), sink_(sink) {}
  void operator()(const std::string& payload, int) override { sink_.push_back(payload); }

 private:
  std::vector<std::string>& sink_;
};

TEST_F(NotifyOrderTest, AMarkerComesBackOnlyAfterEveryTransactionVisibleInItsSnapshot) {
  const auto channel = unique_channel("notify_order");
  const auto marker_channel = unique_channel("notify_order_marker");

  pqxx::connection listening(url());
  std::vector<std::string> received;  // the bus channel's payloads, in order
  std::vector<std::string> markers;
  Received on_channel(listening, channel, received);
  Received on_markers(listening, marker_channel, markers);

  // Each writer notifies "<xid>" and commits after a random pause: most at
  // once, some after milliseconds, a few after a quarter of a second.
  std::atomic<bool> writing{true};
  std::mutex committed_mutex;
  std::set<std::uint64_t> committed;
  std::vector<std::thread> writers;
  for (int w = 0; w < 6; ++w) {
    writers.emplace_back([&, w] {
      pqxx::connection connection(url());
      std::mt19937 random(static_cast<unsigned>(w) * 7919u + 1u);
      while (writing) {
        pqxx::work transaction(connection);
        const auto xid =
            transaction.exec1("SELECT pg_current_xact_id()::text")[0].as<std::string>();
        transaction.exec_params("SELECT pg_notify($1, $2)", channel, xid);
        const auto roll = random() % 100;
        if (roll >= 97) {
          std::this_thread::sleep_for(250ms);
        } else if (roll >= 70) {
          std::this_thread::sleep_for(std::chrono::milliseconds(random() % 20));
        }
        transaction.commit();
        std::lock_guard<std::mutex> lock(committed_mutex);
        committed.insert(detail::parse_xid(xid));
      }
    });
  }

  // Each marker: the snapshot, and how many bus notifications had arrived
  // when its own came back.
  struct Check {
    PgSnapshot snapshot;
    std::size_t received_before;
  };
  std::vector<Check> checks;
  const auto until = std::chrono::steady_clock::now() + 3s;
  for (int token = 0; std::chrono::steady_clock::now() < until; ++token) {
    const auto text = pqxx::nontransaction(listening)
                          .exec_params1("SELECT pg_current_snapshot()::text, pg_notify($1, $2)",
                                        marker_channel, std::to_string(token))[0]
                          .as<std::string>();
    const auto snapshot = PgSnapshot::parse(text);
    const auto token_text = std::to_string(token);
    while (markers.empty() || markers.back() != token_text) {
      listening.await_notification(1, 0);
    }
    checks.push_back({snapshot, received.size()});
  }
  writing = false;
  for (auto& t : writers) t.join();

  // Every transaction visible in a marker's snapshot arrived before it.
  std::map<std::uint64_t, std::size_t> position;  // xid -> index in `received`
  for (std::size_t i = 0; i < received.size(); ++i) position[detail::parse_xid(received[i])] = i;
  std::size_t visible_checked = 0, early_arrivals = 0;
  for (const auto& check : checks) {
    for (const auto xid : committed) {
      const auto at = position.find(xid);
      if (check.snapshot.visible(xid)) {
        ++visible_checked;
        ASSERT_NE(at, position.end()) << "transaction " << xid << " was never received";
        ASSERT_LT(at->second, check.received_before)
            << "transaction " << xid << " is visible in " << check.snapshot.text()
            << " but its notification came after the marker's";
      } else if (at != position.end() && at->second < check.received_before) {
        ++early_arrivals;  // not visible, yet arrived first: erring on the old side
      }
    }
  }
  EXPECT_GT(checks.size(), 100u);
  EXPECT_GT(committed.size(), 500u);
  EXPECT_GT(visible_checked, 10000u);
  std::cout << "markers " << checks.size() << ", transactions " << committed.size()
            << ", visible checks " << visible_checked
            << ", not visible yet arrived before the marker " << early_arrivals << "\n";
}

TEST_F(NotifyOrderTest, TheSnapshotParserAgreesWithTheServer) {
  // A transaction held open puts an id in the snapshot's in-progress list.
  pqxx::connection holder_connection(url());
  pqxx::work holder(holder_connection);
  const auto held =
      detail::parse_xid(holder.exec1("SELECT pg_current_xact_id()::text")[0].as<std::string>());
  pqxx::connection connection(url());
  std::vector<std::uint64_t> later;
  for (int i = 0; i < 3; ++i) {
    later.push_back(detail::parse_xid(pqxx::nontransaction(connection)
                                          .exec1("SELECT pg_current_xact_id()::text")[0]
                                          .as<std::string>()));
  }
  const auto text = pqxx::nontransaction(connection)
                        .exec1("SELECT pg_current_snapshot()::text")[0]
                        .as<std::string>();
  const auto snapshot = PgSnapshot::parse(text);
  EXPECT_EQ(snapshot.text(), text);
  EXPECT_FALSE(snapshot.visible(held));
  std::vector<std::uint64_t> probes{held, held + 100000, 1, snapshot.xmin(), snapshot.xmax()};
  probes.insert(probes.end(), later.begin(), later.end());
  for (const auto xid : probes) {
    const bool server =
        pqxx::nontransaction(connection)
            .exec_params1("SELECT pg_visible_in_snapshot($1::text::xid8, $2::pg_snapshot)",
                          std::to_string(xid), text)[0]
            .as<bool>();
    EXPECT_EQ(snapshot.visible(xid), server) << xid << " in " << text;
  }
  holder.commit();
}

}  // namespace
}  // namespace syncbus
