#pragma once
// The timer thread of a PostgresClusterBus: heartbeats when idle, watching
// the server's NOTIFY queue, and the opt-in watchdog of stuck listeners. Each
// task runs at its own interval; failures go to the error sink and the thread
// carries on.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "delivery_queue.hpp"

namespace syncbus::detail {

class PeriodicTasks {
 public:
  struct Task {
    std::chrono::milliseconds interval;
    std::function<void()> run;
  };

  /// Starts the thread (unless there is no task).
  PeriodicTasks(std::vector<Task> tasks, ErrorSink on_error);
  ~PeriodicTasks();
  PeriodicTasks(const PeriodicTasks&) = delete;
  PeriodicTasks& operator=(const PeriodicTasks&) = delete;

  /// Stops and joins the thread at once. Idempotent.
  void stop() noexcept;

 private:
  void run();

  std::vector<Task> tasks_;
  ErrorSink on_error_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace syncbus::detail
