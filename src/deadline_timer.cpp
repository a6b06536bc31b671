#include "deadline_timer.hpp"

#include <sys/socket.h>

#include <utility>

namespace syncbus::detail {

DeadlineTimer::DeadlineTimer() : thread_([this] { run(); }) {}

DeadlineTimer::~DeadlineTimer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

DeadlineTimer::Guard::Guard(Guard&& other) noexcept
    : timer_(std::exchange(other.timer_, nullptr)), id_(other.id_) {}

DeadlineTimer::Guard::~Guard() {
  if (timer_ != nullptr) timer_->disarm(id_);
}

bool DeadlineTimer::Guard::expired() const { return timer_ != nullptr && timer_->expired(id_); }

bool DeadlineTimer::Guard::cut_for_stop() const {
  return timer_ != nullptr && timer_->cut_for_stop(id_);
}

DeadlineTimer::Guard DeadlineTimer::arm(int socket, Clock::time_point deadline, const void* owner) {
  std::uint64_t id = 0;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    id = next_id_++;
    Entry entry{socket, deadline, owner};
    if (owner != nullptr && cut_owners_.count(owner) != 0) {
      if (socket >= 0) ::shutdown(socket, SHUT_RDWR);
      entry.expired = true;
      entry.cut_for_stop = true;
    }
    entries_.emplace(id, entry);
    // Every statement arms a deadline: waking the thread each time would
    // cost a context switch per statement. It need only hear of one that
    // falls before the time it is sleeping until.
    wake = deadline < sleeping_until_;
    if (wake) sleeping_until_ = deadline;
  }
  if (wake) changed_.notify_all();
  return Guard(this, id);
}

void DeadlineTimer::cut_all(const void* owner) {
  std::lock_guard<std::mutex> lock(mutex_);
  cut_owners_.insert(owner);
  for (auto& [id, entry] : entries_) {
    if (entry.owner != owner || entry.expired) continue;
    if (entry.socket >= 0) ::shutdown(entry.socket, SHUT_RDWR);
    entry.expired = true;
    entry.cut_for_stop = true;
  }
}

void DeadlineTimer::disarm(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.erase(id);
}

bool DeadlineTimer::expired(std::uint64_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = entries_.find(id);
  return it != entries_.end() && it->second.expired;
}

bool DeadlineTimer::cut_for_stop(std::uint64_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = entries_.find(id);
  return it != entries_.end() && it->second.cut_for_stop;
}

void DeadlineTimer::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    auto next = Clock::time_point::max();
    const auto now = Clock::now();
    for (auto& [id, entry] : entries_) {
      if (entry.expired) continue;
      if (entry.deadline <= now) {
        // The socket stays open (libpq owns it); only its traffic is cut.
        if (entry.socket >= 0) ::shutdown(entry.socket, SHUT_RDWR);
        entry.expired = true;
      } else if (entry.deadline < next) {
        next = entry.deadline;
      }
    }
    sleeping_until_ = next;
    if (next == Clock::time_point::max()) {
      changed_.wait(lock);
    } else {
      changed_.wait_until(lock, next);
    }
  }
}

}  // namespace syncbus::detail
