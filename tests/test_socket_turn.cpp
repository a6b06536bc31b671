// SocketTurn: whose turn it is to read a listener's socket, driven from two
// real threads as the listener's and the delivery thread would.
#include "socket_turn.hpp"

#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>

namespace syncbus::detail {
namespace {

using namespace std::chrono_literals;

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

TEST(SocketTurn, OnlyALentSocketCanBeTakenAndTheListenerGetsItBackUnused) {
  SocketTurn turn;
  EXPECT_FALSE(turn.take_lent());  // the listener's
  ASSERT_TRUE(turn.lend());
  EXPECT_TRUE(turn.take_if_unused());  // nobody took it
  EXPECT_FALSE(turn.take_lent());
  ASSERT_TRUE(turn.lend());
  ASSERT_TRUE(turn.take_lent());
  EXPECT_TRUE(turn.held_by_this_thread());
  EXPECT_FALSE(turn.take_if_unused());  // the delivery thread waits on it
  turn.let_go(/*give_back=*/false);
  EXPECT_FALSE(turn.held_by_this_thread());
  EXPECT_FALSE(readable(turn.signal_fd()));  // lent again, quietly
  EXPECT_TRUE(turn.take_lent());             // so it can be taken again
  turn.let_go(false);
  EXPECT_TRUE(turn.take_if_unused());  // while it delivers, the listener reads
}

TEST(SocketTurn, TakingItBackInterruptsTheDeliveryThreadAndWaitsForItToLetGo) {
  SocketTurn turn;
  ASSERT_TRUE(turn.lend());
  std::promise<void> taken;
  std::promise<void> interrupted;
  std::atomic<bool> let_go{false};
  std::thread delivery([&] {
    EXPECT_TRUE(turn.take_lent());
    taken.set_value();
    interrupted.get_future().wait();  // waits on the socket until interrupted
    EXPECT_TRUE(turn.wanted_back());
    std::this_thread::sleep_for(20ms);  // still reading what it had
    let_go.store(true);
    turn.let_go(false);
    EXPECT_FALSE(turn.take_lent());  // the listener's again
  });
  taken.get_future().wait();
  EXPECT_FALSE(turn.take_if_unused());  // in use
  EXPECT_TRUE(turn.take_back([&] { interrupted.set_value(); }));
  EXPECT_TRUE(let_go.load());  // it waited
  delivery.join();
  EXPECT_FALSE(readable(turn.signal_fd()));  // it was waiting: no signal
}

TEST(SocketTurn, AFailedReadGoesBackToTheListenerWithItsError) {
  SocketTurn turn;
  ASSERT_TRUE(turn.lend());
  std::thread delivery([&] {
    ASSERT_TRUE(turn.take_lent());
    turn.let_go(false, std::make_exception_ptr(std::runtime_error("connection lost")));
  });
  delivery.join();
  EXPECT_TRUE(readable(turn.signal_fd()));  // wakes a sleeping listener
  turn.consume_signal();
  EXPECT_FALSE(turn.take_lent());  // the listener's now
  auto failure = turn.take_failure();
  ASSERT_TRUE(failure);
  EXPECT_THROW(std::rethrow_exception(failure), std::runtime_error);
  EXPECT_FALSE(turn.take_failure());  // once
  EXPECT_TRUE(turn.take_back([] { ADD_FAILURE() << "nothing to interrupt"; }));
}

TEST(SocketTurn, ABurstIsGivenBackToTheListener) {
  SocketTurn turn;
  ASSERT_TRUE(turn.lend());
  ASSERT_TRUE(turn.take_lent());
  turn.let_go(/*give_back=*/true);
  EXPECT_TRUE(readable(turn.signal_fd()));
  turn.consume_signal();
  EXPECT_FALSE(turn.take_lent());
  EXPECT_FALSE(turn.take_failure());
}

TEST(SocketTurn, AnIdleDeliveryThreadAsksOnceWhileTheListenerWaitsOnTheSocket) {
  SocketTurn turn;
  EXPECT_FALSE(turn.take_lent());
  EXPECT_FALSE(readable(turn.signal_fd()));  // the listener was not waiting
  turn.listener_waits(true);
  EXPECT_FALSE(turn.take_lent());
  EXPECT_TRUE(readable(turn.signal_fd()));
  turn.consume_signal();
  EXPECT_FALSE(turn.take_lent());
  EXPECT_FALSE(readable(turn.signal_fd()));  // once
  turn.listener_waits(false);
  turn.listener_waits(true);
  EXPECT_FALSE(turn.take_lent());
  EXPECT_TRUE(readable(turn.signal_fd()));  // a new wait, a new ask
  // Lending answers it: the signal is left to mean "given back".
  turn.listener_waits(false);
  ASSERT_TRUE(turn.lend());
  EXPECT_FALSE(readable(turn.signal_fd()));
}

TEST(SocketTurn, ClosingFreesAListenerWaitingForItAndLendsNoMore) {
  SocketTurn turn;
  ASSERT_TRUE(turn.lend());
  ASSERT_TRUE(turn.take_lent());  // this thread plays the delivery thread
  auto listener = std::async(std::launch::async, [&] { return turn.take_back([] {}); });
  EXPECT_EQ(listener.wait_for(50ms), std::future_status::timeout);  // waits for it
  turn.close();
  EXPECT_FALSE(listener.get());  // it must not touch the session
  EXPECT_TRUE(turn.held_by_this_thread());
  turn.let_go(false);
  EXPECT_FALSE(turn.lend());
  EXPECT_FALSE(turn.take_lent());
}

}  // namespace
}  // namespace syncbus::detail
