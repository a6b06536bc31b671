// The tests' main(): GoogleTest's, plus a watchdog. A test that hangs would
// otherwise be killed by ctest's timeout with nothing to show but its name;
// the watchdog prints the stack of every thread (this process's and its
// children's, via gdb when it is installed) and fails the test first.
//
// SYNCBUS_TEST_HANG_SECONDS sets how long one test may run (default 240,
// under ctest's 300); 0 turns the watchdog off.
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

extern char** environ;

namespace syncbus::testing {

namespace {

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> children;
  // /proc/PID/task/TID/children lists the children each thread started.
  std::error_code error;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", error)) {
    std::ifstream list(task.path() / "children");
    for (pid_t child; list >> child;) children.push_back(child);
  }
  return children;
}

}  // namespace

void print_stacks(pid_t pid) {
  std::cerr << "---- stacks of process " << pid << " ----" << std::endl;
  const std::string target = std::to_string(pid);
  const char* argv[] = {"gdb", "-p",  target.c_str(),        "-batch", "-nx",
                        "-q",  "-ex", "thread apply all bt", nullptr};
  pid_t gdb = -1;
  if (::posix_spawnp(&gdb, "gdb", nullptr, nullptr, const_cast<char* const*>(argv), environ) != 0) {
    std::cerr << "(gdb is not installed: no stacks)" << std::endl;
    return;
  }
  int status = 0;
  ::waitpid(gdb, &status, 0);
  for (pid_t child : children_of(pid)) print_stacks(child);
}

namespace {

// Arms a deadline at the start of every test and, past it, prints the stacks
// and ends the process with a failure ctest reports.
class HangWatchdog : public ::testing::EmptyTestEventListener {
 public:
  explicit HangWatchdog(std::chrono::seconds limit) : limit_(limit), thread_([this] { run(); }) {}
  ~HangWatchdog() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }

  void OnTestStart(const ::testing::TestInfo& test) override {
    std::lock_guard<std::mutex> lock(mutex_);
    name_ = std::string(test.test_suite_name()) + "." + test.name();
    deadline_ = std::chrono::steady_clock::now() + limit_;
    armed_ = true;
    changed_.notify_all();
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = false;
    changed_.notify_all();
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!done_) {
      if (!armed_) {
        changed_.wait(lock);
        continue;
      }
      const auto deadline = deadline_;
      if (changed_.wait_until(lock, deadline) != std::cv_status::timeout || !armed_ ||
          deadline_ != deadline) {
        continue;
      }
      std::cerr << "\nsyncbus test watchdog: " << name_ << " has run for " << limit_.count()
                << " s (SYNCBUS_TEST_HANG_SECONDS): it hangs. Every thread's stack follows."
                << std::endl;
      print_stacks(::getpid());
      std::cerr << "syncbus test watchdog: " << name_ << " FAILED (hung)" << std::endl;
      std::_Exit(1);
    }
  }

  const std::chrono::seconds limit_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool done_ = false;
  bool armed_ = false;
  std::string name_;
  std::chrono::steady_clock::time_point deadline_;
  std::thread thread_;
};

}  // namespace
}  // namespace syncbus::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  long limit = 240;
  if (const char* text = std::getenv("SYNCBUS_TEST_HANG_SECONDS"); text && *text) {
    limit = std::strtol(text, nullptr, 10);
  }
  if (limit > 0) {
    // gdb, our child, may then attach to us even where ptrace is restricted
    // to descendants.
    ::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    ::testing::UnitTest::GetInstance()->listeners().Append(
        new syncbus::testing::HangWatchdog(std::chrono::seconds(limit)));
  }
  return RUN_ALL_TESTS();
}
