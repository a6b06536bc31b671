#include "interrupt.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <csignal>

#include <atomic>
#include <cerrno>
#include <system_error>

namespace syncbus::cli {
namespace {

int pipe_fds[2] = {-1, -1};
std::atomic<bool> got_signal{false};

extern "C" void on_signal(int) {
  // Only async-signal-safe calls here: an atomic store and write(2).
  const int saved = errno;
  got_signal.store(true);
  const char byte = 1;
  [[maybe_unused]] const auto written = ::write(pipe_fds[1], &byte, 1);
  errno = saved;
}

}  // namespace

int interrupt_fd() {
  if (pipe_fds[0] >= 0) return pipe_fds[0];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::system_error(errno, std::generic_category(), "pipe2");
  }
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  return pipe_fds[0];
}

bool interrupted() noexcept { return got_signal.load(); }

}  // namespace syncbus::cli
