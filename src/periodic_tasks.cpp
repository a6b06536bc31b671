#include "periodic_tasks.hpp"

#include <syncbus/errors.hpp>

#include <algorithm>

namespace syncbus::detail {

PeriodicTasks::PeriodicTasks(std::vector<Task> tasks, ErrorSink on_error)
    : tasks_(std::move(tasks)), on_error_(std::move(on_error)) {
  if (!tasks_.empty()) thread_.start([this] { run(); });
}

PeriodicTasks::~PeriodicTasks() { stop(); }

void PeriodicTasks::stop() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join_unless_current();
}

void PeriodicTasks::run() {
  using Clock = std::chrono::steady_clock;
  std::vector<Clock::time_point> due;
  for (const auto& task : tasks_) due.push_back(Clock::now() + task.interval);

  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    const auto next = *std::min_element(due.begin(), due.end());
    if (wake_.wait_until(lock, next, [this] { return stopping_; })) return;
    lock.unlock();
    const auto now = Clock::now();
    for (std::size_t i = 0; i < tasks_.size(); ++i) {
      if (due[i] > now) continue;
      try {
        tasks_[i].run();
      } catch (const closed_error&) {
        // The bus is closing: what close() cut is not news.
      } catch (const std::exception& e) {
        report(on_error_, e);
      }
      due[i] = Clock::now() + tasks_[i].interval;
    }
    lock.lock();
  }
}

}  // namespace syncbus::detail
