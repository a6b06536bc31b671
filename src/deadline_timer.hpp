#pragma once
// Client-side deadlines for statements on a libpq connection.
//
// libpq's blocking calls wait in poll() with no timeout, TCP keepalives do not
// notice a frozen server (its kernel still acknowledges), and a server-side
// statement_timeout cannot fire in a server that is not running. So a timer
// thread watches armed sockets and, when a deadline passes, shuts the socket
// down (shutdown(2) is safe from another thread): the blocked call returns at
// once with a broken connection, which the caller then reports as a timeout
// and replaces.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace syncbus::detail {

class DeadlineTimer {
 public:
  using Clock = std::chrono::steady_clock;

  DeadlineTimer();
  ~DeadlineTimer();
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

  /// An armed deadline; disarmed when destroyed. Destroy it before the
  /// connection whose socket it watches is closed.
  class Guard {
   public:
    Guard(Guard&& other) noexcept;
    Guard& operator=(Guard&&) = delete;
    Guard(const Guard&) = delete;
    ~Guard();
    /// True if the deadline passed (or the timer was told to cut everything)
    /// and the socket was shut down.
    bool expired() const;
    /// True if it was cut by cut_all(), its owner stopping, rather than by
    /// its deadline: not a timeout, and not worth reporting as one.
    bool cut_for_stop() const;

   private:
    friend class DeadlineTimer;
    Guard(DeadlineTimer* timer, std::uint64_t id) : timer_(timer), id_(id) {}
    DeadlineTimer* timer_;
    std::uint64_t id_;
  };

  /// Shuts `socket` down at `deadline` unless the Guard is destroyed first.
  /// `owner` groups deadlines for cut_all().
  [[nodiscard]] Guard arm(int socket, Clock::time_point deadline, const void* owner = nullptr);

  /// Shuts down every socket armed by `owner`, now and from now on: used when
  /// stopping, so that no statement can hold the stop up.
  void cut_all(const void* owner);

 private:
  struct Entry {
    int socket;
    Clock::time_point deadline;
    const void* owner;
    bool expired = false;
    bool cut_for_stop = false;
  };
  void run();
  void disarm(std::uint64_t id);
  bool expired(std::uint64_t id) const;
  bool cut_for_stop(std::uint64_t id) const;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uint64_t, Entry> entries_;
  // Expired entries are kept until disarmed, so the guard can read its fate.
  std::uint64_t next_id_ = 1;
  std::set<const void*> cut_owners_;
  // What the thread waits for (max: nothing); arm() wakes it only for an
  // earlier deadline.
  Clock::time_point sleeping_until_ = Clock::time_point::min();
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace syncbus::detail
