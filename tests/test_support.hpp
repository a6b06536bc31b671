#pragma once
// Helpers shared by the tests: a thread-safe message collector, a bounded
// wait (never a fixed sleep), and the test database's connection string.

#include <syncbus/bus_stats.hpp>
#include <syncbus/cluster_bus.hpp>
#include <syncbus/gap_event.hpp>

#include <gtest/gtest.h>

#include <sys/types.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace syncbus::testing {

/// Records every message handed to handler(); wait_for_count() blocks until
/// enough arrived or a deadline passes.
class Collector {
 public:
  MessageHandler handler() {
    return [this](const ClusterMessage& message) {
      std::lock_guard<std::mutex> lock(mutex_);
      messages_.push_back(message);
      arrived_.notify_all();
    };
  }

  bool wait_for_count(std::size_t count,
                      std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> lock(mutex_);
    return arrived_.wait_for(lock, timeout, [&] { return messages_.size() >= count; });
  }

  std::vector<ClusterMessage> messages() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return messages_;
  }

  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return messages_.size();
  }

  /// The position of the last message (a client's `since`), or "".
  std::string last_position() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return messages_.empty() ? std::string() : messages_.back().position;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable arrived_;
  std::vector<ClusterMessage> messages_;
};

/// Checks that `seen` holds every message once, in order per origin, from
/// sequence 1; returns the last sequence seen per origin.
inline std::map<std::string, std::uint64_t> check_exactly_once_in_order(const Collector& seen) {
  std::map<std::string, std::uint64_t> last;
  for (const auto& m : seen.messages()) {
    EXPECT_EQ(m.sequence, last[m.origin] + 1) << "from " << m.origin;
    last[m.origin] = m.sequence;
  }
  return last;
}

/// Checks that `got` holds, for each origin, exactly the sequences after
/// `after` (0: from 1) up to `last`, once each and in order.
inline void expect_exactly(const std::vector<ClusterMessage>& got,
                           const std::map<std::string, std::uint64_t>& after,
                           const std::map<std::string, std::uint64_t>& last) {
  std::map<std::string, std::uint64_t> seen = after;
  for (const auto& m : got) {
    EXPECT_EQ(m.sequence, seen[m.origin] + 1) << "from " << m.origin;
    seen[m.origin] = m.sequence;
  }
  for (const auto& [origin, sequence] : last) {
    const auto from = after.count(origin) ? after.at(origin) : 0;
    if (sequence > from) EXPECT_EQ(seen[origin], sequence) << "from " << origin;
  }
}

/// A handler that blocks on the first message it sees until released (or
/// destroyed), so that what follows waits in the bus's delivery queue.
class Blocker {
 public:
  MessageHandler handler() {
    return [this](const ClusterMessage&) {
      std::unique_lock<std::mutex> lock(mutex_);
      if (blocked_once_) return;
      blocked_once_ = true;
      blocked_.notify_all();
      released_cv_.wait(lock, [this] { return released_; });
    };
  }
  bool wait_until_blocked(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(mutex_);
    return blocked_.wait_for(lock, timeout, [this] { return blocked_once_; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    released_cv_.notify_all();
  }
  ~Blocker() { release(); }

 private:
  std::mutex mutex_;
  std::condition_variable blocked_;
  std::condition_variable released_cv_;
  bool blocked_once_ = false;
  bool released_ = false;
};

/// A Blocker subscribed to `source` (a bus, or a bus's delivery queue):
/// holds the first message it delivers until release(). It releases before
/// it unsubscribes (which waits for a running handler), so a test that fails
/// while it holds ends instead of hanging.
class HeldSubscription {
 public:
  template <typename Source>
  explicit HeldSubscription(Source& source) : subscription_(source.subscribe(blocker_.handler())) {}
  ~HeldSubscription() { blocker_.release(); }  // before subscription_ goes
  HeldSubscription(const HeldSubscription&) = delete;
  HeldSubscription& operator=(const HeldSubscription&) = delete;

  bool wait_until_held(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return blocker_.wait_until_blocked(timeout);
  }
  void release() { blocker_.release(); }

 private:
  Blocker blocker_;
  Subscription subscription_;
};

/// Records what a bus reports to on_error and on_gap, from any thread.
class EventLog {
 public:
  std::function<void(const std::exception&)> error_handler() {
    return [this](const std::exception& e) {
      std::lock_guard<std::mutex> lock(mutex_);
      errors_.emplace_back(e.what());
    };
  }
  GapHandler gap_handler() {
    return [this](const GapEvent& gap) {
      std::lock_guard<std::mutex> lock(mutex_);
      gaps_.push_back(gap);
    };
  }
  std::vector<std::string> errors() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return errors_;
  }
  std::size_t errors_containing(const std::string& text) const {
    std::size_t n = 0;
    for (const auto& e : errors()) n += e.find(text) != std::string::npos;
    return n;
  }
  std::vector<GapEvent> gaps() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return gaps_;
  }
  std::vector<GapEvent> known_gaps() const {
    std::vector<GapEvent> out;
    for (const auto& g : gaps()) {
      if (g.range_known()) out.push_back(g);
    }
    return out;
  }
  std::size_t unknown_gaps() const { return gaps().size() - known_gaps().size(); }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> errors_;
  std::vector<GapEvent> gaps_;
};

/// Every sequence from 1 to `last` of the one origin `seen` heard from was
/// either delivered or inside exactly one gap `log` received, not both; and
/// every gap has a known range.
inline void expect_each_delivered_or_in_a_gap_once(const Collector& seen, const EventLog& log,
                                                   std::uint64_t last) {
  std::vector<int> covered(last + 1, 0);
  for (const auto& m : seen.messages()) ++covered.at(m.sequence);
  for (const auto& g : log.gaps()) {
    ASSERT_TRUE(g.range_known());
    for (auto seq = g.first_missing; seq <= g.last_missing; ++seq) ++covered.at(seq);
  }
  for (std::uint64_t seq = 1; seq <= last; ++seq) EXPECT_EQ(covered[seq], 1) << "sequence " << seq;
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes.
/// Messages of `lag` in the buckets above `ms` milliseconds (whole buckets:
/// `ms` must be one of DeliveryLag::bounds_ms).
inline std::uint64_t lags_over(const DeliveryLag& lag, std::uint32_t ms) {
  std::uint64_t n = 0;
  for (std::size_t i = 1; i < lag.buckets.size(); ++i) {
    if (DeliveryLag::bounds_ms[i - 1] >= ms) n += lag.buckets[i];
  }
  return n;
}

inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return condition();
}

/// A channel name no other test uses: "syncbus_t_<what>_<random>".
inline std::string unique_channel(const std::string& what) {
  static std::mt19937_64 random{std::random_device{}()};
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  return "syncbus_t_" + what.substr(0, 30) + "_" + std::to_string(random() % 1000000000);
}

/// Prints the stack of every thread of process `pid` and of its children to
/// stderr (with gdb; says so when gdb is missing). For hangs: a test that
/// gives up waiting shows where the thing it waited for is stuck.
/// Defined in test_main.cpp.
void print_stacks(pid_t pid);

inline bool running_in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

}  // namespace syncbus::testing
