#pragma once
// The heartbeat timer of a PostgresClusterBus: a thread that wakes every
// interval and lets the publisher send its last sequence number if it has
// been idle, so receivers find losses at the tail of a burst.

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "delivery_queue.hpp"
#include "publisher.hpp"

namespace syncbus::detail {

class HeartbeatLoop {
 public:
  /// Starts the thread; failures go to `on_error` (the thread never dies).
  HeartbeatLoop(Publisher& publisher, std::chrono::milliseconds interval, ErrorSink on_error);
  ~HeartbeatLoop();
  HeartbeatLoop(const HeartbeatLoop&) = delete;
  HeartbeatLoop& operator=(const HeartbeatLoop&) = delete;

  /// Stops and joins the thread at once. Idempotent.
  void stop() noexcept;

 private:
  void run();

  Publisher& publisher_;
  std::chrono::milliseconds interval_;
  ErrorSink on_error_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace syncbus::detail
