#pragma once
// A thread that a part of the bus owns, and that may be told to stop from
// inside itself: a callback it runs (a handler, on_error, log) may call
// close(), which stops every part. Joining a thread from itself would abort
// the process (std::system_error, "Resource deadlock avoided"), so a stop
// from inside only asks; the owner's destructor, which never runs on this
// thread, joins.

#include <atomic>
#include <thread>
#include <utility>

namespace syncbus::detail {

class OwnedThread {
 public:
  OwnedThread() = default;
  ~OwnedThread() { join_unless_current(); }
  OwnedThread(const OwnedThread&) = delete;
  OwnedThread& operator=(const OwnedThread&) = delete;

  /// Starts `body` on a new thread. Call once.
  template <typename Body>
  void start(Body&& body) {
    thread_ = std::thread([this, body = std::forward<Body>(body)]() mutable {
      // Stored by the thread itself, so that it can recognise itself
      // before start() has even returned.
      id_.store(std::this_thread::get_id());
      body();
    });
  }

  /// True on the owned thread.
  bool is_current() const noexcept { return id_.load() == std::this_thread::get_id(); }

  /// Joins the thread unless called from it (then it finishes on its own
  /// and a later call, from another thread, joins it). Idempotent.
  void join_unless_current() noexcept {
    if (thread_.joinable() && !is_current()) thread_.join();
  }

 private:
  std::atomic<std::thread::id> id_{};
  std::thread thread_;
};

}  // namespace syncbus::detail
