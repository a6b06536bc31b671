#include "heartbeat.hpp"

namespace syncbus::detail {

HeartbeatLoop::HeartbeatLoop(Publisher& publisher, std::chrono::milliseconds interval,
                             ErrorSink on_error)
    : publisher_(publisher),
      interval_(interval),
      on_error_(std::move(on_error)),
      thread_([this] { run(); }) {}

HeartbeatLoop::~HeartbeatLoop() { stop(); }

void HeartbeatLoop::stop() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void HeartbeatLoop::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (wake_.wait_for(lock, interval_, [this] { return stopping_; })) return;
    lock.unlock();
    try {
      publisher_.heartbeat_if_idle(interval_);
    } catch (const std::exception& e) {
      report(on_error_, e);
    }
    lock.lock();
  }
}

}  // namespace syncbus::detail
