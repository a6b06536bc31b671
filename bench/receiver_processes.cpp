#include "receiver_processes.hpp"

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <new>
#include <stdexcept>
#include <thread>

#include "pacing.hpp"

namespace syncbus::bench {
namespace {

constexpr std::size_t max_receivers = 1024;

double children_cpu() {
  rusage usage{};
  ::getrusage(RUSAGE_CHILDREN, &usage);
  const auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

void write_all(int fd, const std::string& text) {
  for (std::size_t at = 0; at < text.size();) {
    const auto n = ::write(fd, text.data() + at, text.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    at += static_cast<std::size_t>(n);
  }
}

std::string read_all(int fd) {
  std::string text;
  char buffer[65536];
  for (;;) {
    const auto n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return text;
    text.append(buffer, static_cast<std::size_t>(n));
  }
}

}  // namespace

// In memory shared with the children (lock-free atomics work across
// processes).
struct ReceiverLink::Shared {
  std::atomic<std::size_t> ready{0};
  std::atomic<std::size_t> failed{0};
  std::atomic<std::size_t> expected{SIZE_MAX};
  std::atomic<std::int64_t> give_up_ns{INT64_MAX};
  std::atomic<std::size_t> received[max_receivers] = {};
};

void ReceiverLink::record(std::int64_t sent_ns, std::optional<std::uint64_t> sequence) {
  tally_.record(now_ns(), sent_ns, sequence);
  shared_.received[index_].fetch_add(1, std::memory_order_relaxed);
}

void ReceiverLink::ready() { ++shared_.ready; }

bool ReceiverLink::done() const {
  return stop_requested() || tally_.received() >= shared_.expected.load() ||
         now_ns() > shared_.give_up_ns.load();
}

ReceiverProcesses::ReceiverProcesses(std::size_t count,
                                     const std::function<void(ReceiverLink&)>& receive)
    : count_(count) {
  if (count > max_receivers) {
    throw std::runtime_error(fmt::format("at most {} receiver processes", max_receivers));
  }
  void* memory = ::mmap(nullptr, sizeof(ReceiverLink::Shared), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) throw std::runtime_error("receiver processes: mmap failed");
  shared_ = new (memory) ReceiverLink::Shared;
  for (std::size_t i = 0; i < count; ++i) {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) throw std::runtime_error("receiver processes: pipe failed");
    std::cout.flush();
    std::cerr.flush();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("receiver processes: fork failed");
    if (pid == 0) {
      // The child: one receiver, its tally on the pipe, then gone without
      // running the parent's exit handlers.
      ::close(pipe_fds[0]);
      for (const int fd : reports_) ::close(fd);
      ReceiverLink link(*shared_, i);
      std::string report;
      try {
        receive(link);
        report = "ok " + link.tally_.to_text();
      } catch (const std::exception& e) {
        ++shared_->failed;
        report = std::string("error ") + e.what();
      }
      write_all(pipe_fds[1], report);
      ::_exit(0);
    }
    ::close(pipe_fds[1]);
    children_.push_back(pid);
    reports_.push_back(pipe_fds[0]);
  }
}

ReceiverProcesses::~ReceiverProcesses() {
  for (const auto pid : children_) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  for (const int fd : reports_) ::close(fd);
  if (shared_) {
    shared_->~Shared();
    ::munmap(shared_, sizeof(ReceiverLink::Shared));
  }
}

void ReceiverProcesses::wait_ready() {
  while (shared_->ready.load() + shared_->failed.load() < count_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (shared_->failed.load() > 0) {
    expect(0, 0);
    collect();  // throws the first child's error
  }
}

const std::atomic<std::size_t>& ReceiverProcesses::received(std::size_t i) const {
  return shared_->received[i];
}

void ReceiverProcesses::expect(std::size_t total, std::int64_t give_up_ns) {
  shared_->give_up_ns = give_up_ns;
  shared_->expected = total;
}

std::vector<std::unique_ptr<ReceiverTally>> ReceiverProcesses::collect() {
  const auto cpu_before = children_cpu();
  std::vector<std::string> reports;
  for (const int fd : reports_) {
    reports.push_back(read_all(fd));
    ::close(fd);
  }
  reports_.clear();
  for (const auto pid : children_) ::waitpid(pid, nullptr, 0);
  children_.clear();
  cpu_seconds_ = children_cpu() - cpu_before;
  std::vector<std::unique_ptr<ReceiverTally>> tallies;
  for (const auto& report : reports) {
    if (report.rfind("ok ", 0) != 0) {
      throw std::runtime_error(report.rfind("error ", 0) == 0
                                   ? report.substr(6)
                                   : "a receiver process ended without a report");
    }
    tallies.push_back(std::make_unique<ReceiverTally>());
    ReceiverTally::from_text(report.substr(3), *tallies.back());
  }
  return tallies;
}

}  // namespace syncbus::bench
