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
#include "owned_thread.hpp"

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

  /// Stops the thread at once and joins it (unless called from it, by a
  /// task's error handler: it then ends on its own). Idempotent.
  void stop() noexcept;
  /// True on the timer thread (where tasks and their error handler run).
  bool runs_on_this_thread() const noexcept { return thread_.is_current(); }

 private:
  void run();

  std::vector<Task> tasks_;
  ErrorSink on_error_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  OwnedThread thread_;
};

}  // namespace syncbus::detail
