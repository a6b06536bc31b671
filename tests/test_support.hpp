#pragma once
// Helpers shared by the tests: a thread-safe message collector, a bounded
// wait (never a fixed sleep), and the test database's connection string.

#include <syncbus/cluster_bus.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <functional>
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

 private:
  mutable std::mutex mutex_;
  std::condition_variable arrived_;
  std::vector<ClusterMessage> messages_;
};

/// Polls `condition` every few milliseconds until it holds or `timeout` passes.
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

/// The test server's conninfo: SYNCBUS_TEST_DATABASE_URL, else the file the
/// ctest fixture wrote (SYNCBUS_TEST_STATE_DIR/url); "" when neither exists.
inline std::string test_database_url() {
  if (const char* url = std::getenv("SYNCBUS_TEST_DATABASE_URL"); url && *url) {
    return url;
  }
  if (const char* dir = std::getenv("SYNCBUS_TEST_STATE_DIR"); dir && *dir) {
    std::ifstream file(std::string(dir) + "/url");
    std::string url;
    if (std::getline(file, url) && !url.empty()) return url;
  }
  return "";
}

inline bool running_in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

/// Base fixture of tests that need PostgreSQL. Without a server it skips,
/// except under CI=true, where it fails: CI never skips silently.
class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = test_database_url();
    if (url_.empty()) {
      if (running_in_ci()) {
        FAIL() << "No PostgreSQL for the db tests: run them through ctest (its "
                  "fixture starts a server) or set SYNCBUS_TEST_DATABASE_URL";
      }
      GTEST_SKIP() << "No PostgreSQL: set SYNCBUS_TEST_DATABASE_URL or run via ctest";
    }
  }
  const std::string& url() const { return url_; }

 private:
  std::string url_;
};

}  // namespace syncbus::testing
