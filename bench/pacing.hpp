#pragma once
// How a benchmark run drives its senders: for a duration, as fast as they
// go or at a rate, until a stop is requested or one of the run's threads
// fails; and the bodies they send.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "measures.hpp"

namespace syncbus::bench {

/// True once the run is to stop early (Ctrl-C in `syncbus bench`).
extern std::function<bool()> stop_requested;

// The first exception any of a run's threads met. An exception escaping a
// thread would abort the program; caught here, the run stops its other
// threads, joins them all, and then throws it with what it was doing.
class FirstError {
 public:
  void record(std::exception_ptr error) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::move(error);
    failed_ = true;
  }
  bool failed() const { return failed_.load(); }
  void rethrow_if_failed(const std::string& doing) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) return;
    try {
      std::rethrow_exception(error_);
    } catch (const std::exception& e) {
      throw std::runtime_error(doing + ": " + e.what());
    }
  }

 private:
  mutable std::mutex mutex_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

// Calls send(i) for i = 0, 1, ... until `duration` has passed (or a stop is
// requested, or another thread of the run failed): as fast as it goes, or at
// `rate` per second.
template <typename Send>
std::size_t drive(std::chrono::duration<double> duration, std::optional<int> rate,
                  const FirstError& failure, Send send) {
  const auto start = Clock::now();
  const auto stop = start + std::chrono::duration_cast<Clock::duration>(duration);
  std::size_t i = 0;
  for (;; ++i) {
    auto now = Clock::now();
    if (rate) {
      const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(static_cast<double>(i) / *rate));
      if (due >= stop) break;
      if (due > now) std::this_thread::sleep_until(due);
    } else if (now >= stop) {
      break;
    }
    if (stop_requested() || failure.failed()) break;
    send(i);
  }
  return i;
}

/// The padding that makes a body {"t":<19 digits>,"pad":"..."} about `size`
/// bytes: one repeated character, or (`text`) pseudo-random words.
std::string padding_for(std::size_t size, bool text);

}  // namespace syncbus::bench
