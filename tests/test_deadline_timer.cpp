#include "deadline_timer.hpp"

#include <syncbus/errors.hpp>

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "statement_deadline.hpp"

namespace syncbus::detail {
namespace {

using namespace std::chrono_literals;

DeadlineTimer::Clock::time_point from_now(DeadlineTimer::Clock::duration d) {
  return DeadlineTimer::Clock::now() + d;
}

// A connected pair of sockets, closed on destruction.
struct SocketPair {
  int fds[2] = {-1, -1};
  SocketPair() { EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0); }
  ~SocketPair() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
};

TEST(DeadlineTimer, APassedDeadlineUnblocksAReadAtOnce) {
  DeadlineTimer timer;
  SocketPair pair;
  const auto start = std::chrono::steady_clock::now();
  const auto guard = timer.arm(pair.fds[0], from_now(50ms));
  char byte;
  // Blocks until the timer shuts the socket down: then reads end-of-file.
  EXPECT_EQ(::recv(pair.fds[0], &byte, 1, 0), 0);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 45ms);
  EXPECT_LT(waited, 2s);
  EXPECT_TRUE(guard.expired());
  EXPECT_FALSE(guard.cut_for_stop());
}

TEST(DeadlineTimer, ADisarmedDeadlineLeavesTheSocketAlone) {
  DeadlineTimer timer;
  SocketPair pair;
  {
    const auto guard = timer.arm(pair.fds[0], from_now(20ms));
    EXPECT_FALSE(guard.expired());
  }
  std::this_thread::sleep_for(60ms);  // well past the disarmed deadline
  ASSERT_EQ(::send(pair.fds[1], "x", 1, 0), 1);
  char byte = 0;
  EXPECT_EQ(::recv(pair.fds[0], &byte, 1, 0), 1);
  EXPECT_EQ(byte, 'x');
}

TEST(DeadlineTimer, CutAllStopsOnlyThatOwnersSocketsNowAndLater) {
  DeadlineTimer timer;
  SocketPair mine, theirs, later;
  int owner = 0;
  int other_owner = 0;
  const auto my_guard = timer.arm(mine.fds[0], from_now(1h), &owner);
  const auto their_guard = timer.arm(theirs.fds[0], from_now(1h), &other_owner);
  timer.cut_all(&owner);
  char byte;
  EXPECT_EQ(::recv(mine.fds[0], &byte, 1, 0), 0);
  EXPECT_TRUE(my_guard.expired());
  EXPECT_FALSE(their_guard.expired());
  const auto later_guard = timer.arm(later.fds[0], from_now(1h), &owner);
  EXPECT_TRUE(later_guard.expired());
  EXPECT_EQ(::recv(later.fds[0], &byte, 1, 0), 0);
  EXPECT_TRUE(my_guard.cut_for_stop());
  EXPECT_TRUE(later_guard.cut_for_stop());
}

// Found from outside (round 7): a statement that close() cut was reported as
// "no answer from PostgreSQL within 10000 ms" (a subscribe_from() racing
// close(), after half a millisecond; on_error of a bus being destroyed).
TEST(DeadlineTimer, AStatementCutByItsOwnerStoppingIsClosedNotATimeout) {
  DeadlineTimer timer;
  SocketPair pair;
  int owner = 0;
  std::thread stopping([&] {
    std::this_thread::sleep_for(20ms);
    timer.cut_all(&owner);
  });
  try {
    run_with_deadline(
        timer, pair.fds[0], 10s, &owner,
        [&] {
          char byte;
          if (::recv(pair.fds[0], &byte, 1, 0) == 0) throw std::runtime_error("end of file");
        },
        [] { return std::string("reading"); });
    ADD_FAILURE() << "returned";
  } catch (const timeout_error& e) {
    ADD_FAILURE() << e.what();
  } catch (const closed_error& e) {
    EXPECT_NE(std::string(e.what()).find("closed while reading"), std::string::npos) << e.what();
  }
  stopping.join();

  SocketPair slow;
  try {
    run_with_deadline(
        timer, slow.fds[0], 20ms, &pair,
        [&] {
          char byte;
          if (::recv(slow.fds[0], &byte, 1, 0) == 0) throw std::runtime_error("end of file");
        },
        [] { return std::string("reading"); });
    ADD_FAILURE() << "returned";
  } catch (const timeout_error& e) {
    EXPECT_NE(std::string(e.what()).find("within 20 ms"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace syncbus::detail
