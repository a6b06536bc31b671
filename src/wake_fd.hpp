#pragma once
// An eventfd that a thread can poll() beside a socket, so that another thread
// can interrupt its wait at once (libpqxx's await_notification cannot be).

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <system_error>

namespace syncbus::detail {

class WakeFd {
 public:
  WakeFd() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (fd_ < 0) {
      throw std::system_error(errno, std::generic_category(), "syncbus: eventfd() failed");
    }
  }
  ~WakeFd() { ::close(fd_); }
  WakeFd(const WakeFd&) = delete;
  WakeFd& operator=(const WakeFd&) = delete;

  int fd() const noexcept { return fd_; }
  /// Makes the fd readable until consume() is called.
  void signal() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto written = ::write(fd_, &one, sizeof one);
  }
  /// Waits up to `delay`; returns false at once if the fd is (or becomes)
  /// signalled, true when the whole delay passed.
  bool sleep_unless_signalled(std::chrono::milliseconds delay) const noexcept {
    const auto until = std::chrono::steady_clock::now() + delay;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      pollfd wake{fd_, POLLIN, 0};
      const int ready = ::poll(&wake, 1, left.count() > 0 ? static_cast<int>(left.count()) : 0);
      if (ready > 0) return false;
      if (ready == 0 && left.count() <= 0) return true;
      if (ready < 0 && errno != EINTR) return true;
    }
  }
  /// Makes the fd unreadable again (all signals so far are taken).
  void consume() noexcept {
    std::uint64_t count = 0;
    [[maybe_unused]] const auto read = ::read(fd_, &count, sizeof count);
  }

 private:
  int fd_;
};

}  // namespace syncbus::detail
