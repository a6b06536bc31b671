#pragma once
// A failure carried as a value, to be thrown again by whoever it concerns.
//
// A batch of the publisher fails for every caller whose message was in it,
// each on its own thread. Sharing one exception object between them (an
// exception_ptr) has them release it from several threads through
// libstdc++'s reference count, which ThreadSanitizer cannot see: it
// reported a race on the object's vptr, and the test command must pass
// every time. So the batch keeps what failed (which syncbus::error, its
// message, its SQLSTATE) and each caller raises an exception of its own,
// made on its own thread.

#include <cstddef>
#include <exception>
#include <string>

namespace syncbus::detail {

class Failure {
 public:
  /// What the exception being handled (or `error`) was; any exception that
  /// is not a syncbus::error becomes a plain syncbus::error with its
  /// message. Every type of errors.hpp is kept as itself (test_failure.cpp
  /// checks each).
  static Failure of(const std::exception_ptr& error);

  /// Throws a new exception of the kept type, message and details.
  [[noreturn]] void raise() const;
  /// The same exception, as an exception_ptr (for a promise).
  std::exception_ptr as_exception_ptr() const;

  const std::string& what() const noexcept { return what_; }

 private:
  enum class Kind {
    error,
    configuration,
    connection,
    timeout,
    database,
    notify_queue_full,
    payload_too_large,
    invalid_message,
    protocol,
    closed,
  };
  Kind kind_ = Kind::error;
  std::string what_;
  std::string sqlstate_;
  std::size_t size_ = 0;
  std::size_t limit_ = 0;
};

}  // namespace syncbus::detail
