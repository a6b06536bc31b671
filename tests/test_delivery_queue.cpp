// The delivery queue's bounds, driven directly: what a full queue keeps, drops
// and reports, counted in messages and in bytes of bodies.
#include <gtest/gtest.h>

#include "delivery_queue.hpp"

#include <poll.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "test_support.hpp"
#include "wake_fd.hpp"

namespace syncbus::detail {
namespace {

using namespace std::chrono_literals;
using testing::Collector;
using testing::EventLog;
using testing::HeldSubscription;

Inbound message(std::uint64_t sequence, std::size_t body_bytes) {
  Inbound item{Inbound::Kind::message, {"origin-a", sequence, sequence}};
  item.body_bytes = body_bytes;
  return item;
}

std::vector<std::uint64_t> sequences(const Collector& seen) {
  std::vector<std::uint64_t> out;
  for (const auto& m : seen.messages()) out.push_back(m.sequence);
  return out;
}

struct BoundedQueue {
  explicit BoundedQueue(DeliveryQueue::Capacity capacity,
                        QueueFullPolicy policy = QueueFullPolicy::drop_and_report_gap)
      : queue({}, log.gap_handler(), stats, capacity, policy) {}

  EventLog log;
  std::shared_ptr<StatsCounters> stats = std::make_shared<StatsCounters>();
  DeliveryQueue queue;
  HeldSubscription held{queue};
  Collector seen;
  Subscription recorded = queue.subscribe(seen.handler());
};

TEST(DeliveryQueue, IsFullWhenItsBodiesReachTheByteBoundAndReportsWhatItDroppedAsAnExactGap) {
  BoundedQueue q({1000, 10'000});
  q.queue.post(message(1, 1000));
  ASSERT_TRUE(q.held.wait_until_held());
  // 2..11 are 10,000 bytes: they fit exactly, far below the message bound.
  for (std::uint64_t s = 2; s <= 20; ++s) q.queue.post(message(s, 1000));
  EXPECT_EQ(q.stats->dropped_queue_full.load(), 9u);
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));

  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  const auto gaps = q.log.gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].origin, "origin-a");
  EXPECT_EQ(gaps[0].first_missing, 12u);
  EXPECT_EQ(gaps[0].last_missing, 20u);
}

TEST(DeliveryQueue, TakesAMessageLargerThanTheByteBoundWhenItIsAlone) {
  BoundedQueue q({1000, 100});
  q.queue.post(message(1, 10));
  ASSERT_TRUE(q.held.wait_until_held());
  q.queue.post(message(2, 5000));  // alone in the queue: taken
  q.queue.post(message(3, 1));     // behind 5,000 bytes: dropped
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));
  q.queue.post(message(4, 5000));  // the queue has emptied: taken again
  ASSERT_TRUE(q.queue.wait_idle(10s));

  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 4}));
  const auto gaps = q.log.gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].first_missing, 3u);
  EXPECT_EQ(gaps[0].last_missing, 3u);
}

TEST(DeliveryQueue, TheMessageBoundStillHoldsForSmallBodies) {
  BoundedQueue q({5, 1'000'000});
  q.queue.post(message(1, 1));
  ASSERT_TRUE(q.held.wait_until_held());
  for (std::uint64_t s = 2; s <= 10; ++s) q.queue.post(message(s, 1));
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(q.stats->dropped_queue_full.load(), 4u);
}

Inbound of(const std::string& origin, std::uint64_t sequence,
           Inbound::Kind kind = Inbound::Kind::message) {
  return Inbound{kind, {origin, sequence, sequence}};
}

std::vector<Inbound> rows(std::uint64_t first, std::uint64_t last, std::size_t body_bytes = 1) {
  std::vector<Inbound> out;
  for (auto s = first; s <= last; ++s) out.push_back(message(s, body_bytes));
  return out;
}

TEST(DeliveryQueue, ReadsBackOnlyWhatFitsTheByteBoundAndTheRestLater) {
  BoundedQueue q({1000, 3000}, QueueFullPolicy::drop_and_reread);
  q.queue.post(message(1, 1000));
  ASSERT_TRUE(q.held.wait_until_held());
  for (std::uint64_t s = 2; s <= 5; ++s) q.queue.post(message(s, 1000));  // 5 is dropped
  EXPECT_FALSE(q.queue.next_reread()) << "no room in bytes: nothing to read back yet";
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));

  auto request = q.queue.next_reread();
  ASSERT_TRUE(request);
  EXPECT_EQ(request->read.origin, "origin-a");
  EXPECT_EQ(request->read.from, 5u);
  // 5, 6 and 7 fill the 3,000 bytes; 8 and 9 wait.
  q.queue.post_reread(*request, rows(5, 9, 1000), 10, /*reached_end=*/true);
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7}));

  request = q.queue.next_reread();
  ASSERT_TRUE(request) << "8 and 9 are still to be read back";
  EXPECT_EQ(request->read.from, 8u);
  q.queue.post_reread(*request, rows(8, 9, 1000), 10, /*reached_end=*/true);
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_FALSE(q.queue.next_reread()) << "nothing is withheld any more";
  EXPECT_TRUE(q.log.gaps().empty()) << "nothing was lost";
}

// A page of rows the transport refused (planted by a role that can only
// INSERT, say) is behind the read all the same: the next read starts past
// it, so such rows cannot hold an origin's read-back in place for ever.
TEST(DeliveryQueue, ARereadGoesOnPastAPageOfRefusedRows) {
  BoundedQueue q({3, 1'000'000}, QueueFullPolicy::drop_and_reread);
  q.queue.post(message(1, 1));
  ASSERT_TRUE(q.held.wait_until_held());
  for (std::uint64_t s = 2; s <= 6; ++s) q.queue.post(message(s, 1));  // 5, 6 dropped
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));

  auto request = q.queue.next_reread();
  ASSERT_TRUE(request);
  EXPECT_EQ(request->read.from, 5u);
  // The page held 5..260, all refused: nothing handed on, read past 261.
  q.queue.post_reread(*request, {}, 261, /*reached_end=*/false);
  request = q.queue.next_reread();
  ASSERT_TRUE(request) << "the rest of the origin is still to be read";
  EXPECT_EQ(request->read.from, 261u) << "the refused page is not read again";
  q.queue.post_reread(*request, rows(261, 262), 263, /*reached_end=*/true);
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 261, 262}));
  EXPECT_FALSE(q.queue.next_reread());
  const auto gaps = q.log.gaps();
  ASSERT_EQ(gaps.size(), 1u) << "what the refused rows stood in for is reported";
  EXPECT_EQ(gaps[0].first_missing, 5u);
  EXPECT_EQ(gaps[0].last_missing, 260u);
}

// The bus's own messages come from its publisher's thread while its
// listener reads back: one committed after the read began, posted before
// the read's results, must not be dropped when the hold is lifted.
TEST(DeliveryQueue, AMessageArrivingWhileAReadIsInFlightIsReadAgainNotLost) {
  BoundedQueue q({4, 1'000'000}, QueueFullPolicy::drop_and_reread);
  q.queue.post(message(1, 1));
  ASSERT_TRUE(q.held.wait_until_held());
  for (std::uint64_t s = 2; s <= 7; ++s) q.queue.post(message(s, 1));  // 6 and 7 withheld
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));
  auto request = q.queue.next_reread();
  ASSERT_TRUE(request);
  EXPECT_EQ(request->read.from, 6u);
  EXPECT_EQ(request->read.known_to, 7u);
  // Meanwhile 8 commits and is posted: withheld, since its origin is.
  q.queue.post(message(8, 1));
  // The read, begun before 8 committed, found 6 and 7 and reached the end.
  q.queue.post_reread(*request, rows(6, 7), 8, /*reached_end=*/true);
  request = q.queue.next_reread();
  ASSERT_TRUE(request) << "8 arrived after the read began: read again";
  EXPECT_EQ(request->read.from, 8u);
  q.queue.post_reread(*request, rows(8, 8), 9, /*reached_end=*/true);
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_FALSE(q.queue.next_reread());
  EXPECT_TRUE(q.log.gaps().empty());
}

// A publish of the bus's own that failed while its origin was withheld:
// its number is known, and a read that finds no row for it reports it.
TEST(DeliveryQueue, ALossKnownWhileWithheldIsReportedWhenTheReadFindsNoRow) {
  BoundedQueue q({3, 1'000'000}, QueueFullPolicy::drop_and_reread);
  q.queue.post(message(1, 1));
  ASSERT_TRUE(q.held.wait_until_held());
  for (std::uint64_t s = 2; s <= 5; ++s) q.queue.post(message(s, 1));  // 5 withheld
  q.queue.post(of("origin-a", 6, Inbound::Kind::lost));                // a failed publish
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));
  const auto request = q.queue.next_reread();
  ASSERT_TRUE(request);
  EXPECT_EQ(request->read.known_to, 6u);
  q.queue.post_reread(*request, rows(5, 5), 6, /*reached_end=*/true);
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  const auto gaps = q.log.gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].first_missing, 6u);
  EXPECT_EQ(gaps[0].last_missing, 6u);
  EXPECT_FALSE(q.queue.next_reread());
}

// With the byte bound, a small message can fit where a large one did not:
// an origin that dropped one drops the rest until the handlers catch up, so
// its gap is reported, and reported before what follows.
TEST(DeliveryQueue, AnOriginThatDroppedAMessageDropsItsNextOnesUntilTheGapIsReported) {
  BoundedQueue q({1000, 10'000});
  q.queue.post(message(1, 5000));
  ASSERT_TRUE(q.held.wait_until_held());
  q.queue.post(message(2, 5000));
  q.queue.post(of("new-origin", 1));
  q.queue.post([] {
    auto big = of("newer-origin", 1);
    big.body_bytes = 20'000;  // does not fit
    return big;
  }());
  q.queue.post(of("newer-origin", 2));  // would fit: dropped all the same
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));
  q.queue.post(of("newer-origin", 3));
  ASSERT_TRUE(q.queue.wait_idle(10s));
  const auto gaps = q.log.gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].origin, "newer-origin");
  EXPECT_EQ(gaps[0].first_missing, 1u);
  EXPECT_EQ(gaps[0].last_missing, 2u);
  std::vector<std::string> delivered;
  for (const auto& m : q.seen.messages())
    delivered.push_back(m.origin + "#" + std::to_string(m.sequence));
  EXPECT_EQ(delivered, (std::vector<std::string>{"origin-a#1", "origin-a#2", "new-origin#1",
                                                 "newer-origin#3"}));
}

TEST(DeliveryQueue, AHandlerSubscribedWhileAnotherIsBusyHearsNothingThatWasWaiting) {
  BoundedQueue q({1000});
  q.queue.post(message(1, 1));
  ASSERT_TRUE(q.held.wait_until_held());
  q.queue.post(message(2, 1));  // waits behind the held handler
  Collector late;
  auto subscription = q.queue.subscribe(late.handler());
  q.queue.post(message(3, 1));  // arrives once the late handler is there
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(sequences(q.seen), (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(sequences(late), (std::vector<std::uint64_t>{3}));
}

TEST(DeliveryQueue, AnUnreadableRowWithholdsItsOriginAndIsReadBackAfterAPause) {
  BoundedQueue q({1000});
  q.queue.post(message(1, 1));
  ASSERT_TRUE(q.held.wait_until_held());
  q.held.release();
  const auto posted = std::chrono::steady_clock::now();
  q.queue.post(of("origin-a", 2, Inbound::Kind::unfetched));
  q.queue.post(message(3, 1));  // behind it: withheld too
  q.queue.post(of("origin-b", 1));
  ASSERT_TRUE(q.queue.wait_idle(10s));
  // The pause (100 ms) runs from the post; how long the rest took here is
  // the machine's business.
  const auto due = q.queue.next_reread_due();
  EXPECT_GE(due, posted + 100ms);
  EXPECT_LT(due, std::chrono::steady_clock::now() + 1s);
  if (std::chrono::steady_clock::now() < due) {
    EXPECT_FALSE(q.queue.next_reread()) << "not before the pause";
  }
  std::this_thread::sleep_until(due);
  auto request = q.queue.next_reread();
  ASSERT_TRUE(request);
  EXPECT_EQ(request->read.from, 2u);
  EXPECT_EQ(request->read.known_to, 3u);
  // The read fails again: the pause doubles.
  EXPECT_EQ(q.queue.reread_failed(*request), 200ms);
  EXPECT_FALSE(q.queue.next_reread());
  std::this_thread::sleep_until(q.queue.next_reread_due());
  request = q.queue.next_reread();
  ASSERT_TRUE(request);
  q.queue.post_reread(*request, rows(2, 3), 4, /*reached_end=*/true);
  ASSERT_TRUE(q.queue.wait_idle(10s));
  std::vector<std::string> delivered;
  for (const auto& m : q.seen.messages())
    delivered.push_back(m.origin + "#" + std::to_string(m.sequence));
  EXPECT_EQ(delivered,
            (std::vector<std::string>{"origin-a#1", "origin-b#1", "origin-a#2", "origin-a#3"}));
  EXPECT_TRUE(q.log.gaps().empty());
}

// A heartbeat (or a goodbye) may be the only word of a loss at an origin's
// tail: a full queue does not drop it, but delivers it after what it holds.
TEST(DeliveryQueue, AGoodbyeTurnedAwayByAFullQueueStillRevealsALossAtTheTail) {
  BoundedQueue q({2});
  q.queue.post(message(1, 1));
  ASSERT_TRUE(q.held.wait_until_held());
  q.queue.post(message(2, 1));
  q.queue.post(message(3, 1));  // the queue is full
  // An origin born after this bus, whose only publish failed, closes.
  auto goodbye = of("closed-origin", 1, Inbound::Kind::goodbye);
  goodbye.origin_is_new = true;
  q.queue.post(std::move(goodbye));
  q.held.release();
  ASSERT_TRUE(q.queue.wait_idle(10s));
  const auto gaps = q.log.known_gaps();
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].origin, "closed-origin");
  EXPECT_EQ(gaps[0].first_missing, 1u);
  EXPECT_EQ(gaps[0].last_missing, 1u);
}

TEST(DeliveryQueue, AGapsCountStopsAtTheLargestNumberRatherThanWrapping) {
  BoundedQueue q({1000});
  q.queue.post(message(1, 1));
  ASSERT_TRUE(q.held.wait_until_held());
  q.held.release();
  for (const auto* origin : {"far-a", "far-b", "far-c"}) {
    auto first = of(origin, 1, Inbound::Kind::heartbeat);
    q.queue.post(std::move(first));
    q.queue.post(of(origin, 9'223'372'036'854'775'807u, Inbound::Kind::heartbeat));
  }
  ASSERT_TRUE(q.queue.wait_idle(10s));
  EXPECT_EQ(q.stats->messages_missing.load(), UINT64_MAX);
}

// What stats() counts, the callbacks have been given: a gap is counted once
// on_gap has returned, as a message once its handlers are done. (A test
// waiting for the counters, then reading what on_gap recorded, saw the
// counters first under AddressSanitizer.)
TEST(DeliveryQueue, AGapIsCountedOnceOnGapHasReturned) {
  std::shared_ptr<StatsCounters> stats = std::make_shared<StatsCounters>();
  std::promise<void> called;
  std::promise<void> release;
  auto released = release.get_future().share();
  DeliveryQueue queue(
      {},
      [&](const GapEvent&) {
        called.set_value();
        released.wait();
      },
      stats, {100}, QueueFullPolicy::drop_and_report_gap);
  Collector seen;
  auto recorded = queue.subscribe(seen.handler());
  queue.post(message(1, 10));
  queue.post(message(5, 10));  // 2..4 missing
  ASSERT_EQ(called.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_EQ(stats->gaps.load(), 0u);
  EXPECT_EQ(stats->messages_missing.load(), 0u);
  release.set_value();
  ASSERT_TRUE(seen.wait_for_count(2));
  ASSERT_TRUE(queue.wait_idle(10s));
  EXPECT_EQ(stats->gaps.load(), 1u);
  EXPECT_EQ(stats->messages_missing.load(), 3u);
}

// An IdleReader that plays a transport's socket: each "message" put in its
// inbox makes its wait return, and it posts it, as the listener does.
class InboxReader final : public IdleReader {
 public:
  explicit InboxReader(DeliveryQueue& queue) : queue_(queue) {}
  void put(std::uint64_t sequence) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      inbox_.push_back(sequence);
    }
    input_.signal();
  }
  bool read_while_idle(int wake_fd, std::chrono::milliseconds most) override {
    calls_.fetch_add(1);
    reader_thread_.store(std::this_thread::get_id());
    inside_.store(true);
    pollfd fds[2] = {{input_.fd(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<long long>(most.count(), 10'000)));
    if (ready > 0 && fds[1].revents != 0) woken_.fetch_add(1);
    if (ready > 0 && fds[0].revents != 0) {
      input_.consume();
      std::vector<std::uint64_t> read;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        read.swap(inbox_);
      }
      for (const auto s : read) queue_.post(message(s, 10));
    }
    inside_.store(false);
    return true;
  }
  int calls() const { return calls_.load(); }
  int woken() const { return woken_.load(); }
  bool inside() const { return inside_.load(); }
  std::thread::id reader_thread() const { return reader_thread_.load(); }

 private:
  DeliveryQueue& queue_;
  std::mutex mutex_;
  std::vector<std::uint64_t> inbox_;
  WakeFd input_;
  std::atomic<int> calls_{0};
  std::atomic<int> woken_{0};
  std::atomic<bool> inside_{false};
  std::atomic<std::thread::id> reader_thread_{};
};

TEST(DeliveryQueue, AnIdleDeliveryThreadReadsItselfAndDeliversWhatItReadOnTheSameThread) {
  std::shared_ptr<StatsCounters> stats = std::make_shared<StatsCounters>();
  DeliveryQueue queue({}, {}, stats, {100}, QueueFullPolicy::drop_and_report_gap);
  Collector seen;
  std::atomic<std::thread::id> handler_thread{};
  auto recorded = queue.subscribe([&](const ClusterMessage& m) {
    handler_thread.store(std::this_thread::get_id());
    seen.handler()(m);
  });
  InboxReader reader(queue);
  queue.set_idle_reader(&reader);
  EXPECT_EQ(reader.calls(), 0);  // not before it is offered
  queue.offer_idle_read();
  ASSERT_TRUE(testing::eventually([&] { return reader.inside(); }));
  EXPECT_TRUE(queue.idle());
  reader.put(1);
  reader.put(2);
  ASSERT_TRUE(seen.wait_for_count(2));
  EXPECT_EQ(handler_thread.load(), reader.reader_thread());
  // Called again once what it posted is delivered, without a new offer.
  ASSERT_TRUE(testing::eventually([&] { return reader.inside(); }));
  reader.put(3);
  ASSERT_TRUE(seen.wait_for_count(3));
  EXPECT_EQ(sequences(seen), (std::vector<std::uint64_t>{1, 2, 3}));
  queue.set_idle_reader(nullptr);
  EXPECT_FALSE(reader.inside());  // it waited for the reader to return
}

TEST(DeliveryQueue, APostFromAnotherThreadEndsTheIdleReadAndIsDeliveredAtOnce) {
  std::shared_ptr<StatsCounters> stats = std::make_shared<StatsCounters>();
  DeliveryQueue queue({}, {}, stats, {100}, QueueFullPolicy::drop_and_report_gap);
  Collector seen;
  auto recorded = queue.subscribe(seen.handler());
  InboxReader reader(queue);
  queue.set_idle_reader(&reader);
  queue.offer_idle_read();
  ASSERT_TRUE(testing::eventually([&] { return reader.inside(); }));
  queue.post(message(1, 10));  // a bus's own message, say
  ASSERT_TRUE(seen.wait_for_count(1));
  EXPECT_GE(reader.woken(), 1);
  queue.set_idle_reader(nullptr);
}

TEST(DeliveryQueue, StoppingEndsAnIdleReadInProgress) {
  std::shared_ptr<StatsCounters> stats = std::make_shared<StatsCounters>();
  DeliveryQueue queue({}, {}, stats, {100}, QueueFullPolicy::drop_and_report_gap);
  InboxReader reader(queue);
  queue.set_idle_reader(&reader);
  queue.offer_idle_read();
  ASSERT_TRUE(testing::eventually([&] { return reader.inside(); }));
  const auto began = std::chrono::steady_clock::now();
  queue.stop();  // joins the thread: the read returned
  EXPECT_FALSE(reader.inside());
  EXPECT_LT(std::chrono::steady_clock::now() - began, 5s);  // not its 10 s wait
}

}  // namespace
}  // namespace syncbus::detail
