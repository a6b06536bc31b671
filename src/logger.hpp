#pragma once
// A bus's log: records at or above a threshold go to the application's
// LogHandler; below it, or without a handler, nothing is even formatted.

#include <syncbus/log.hpp>

#include <fmt/format.h>

#include <string>
#include <utility>

namespace syncbus::detail {

class Logger {
 public:
  /// Off: every record is dropped.
  Logger() = default;
  Logger(LogHandler handler, LogLevel threshold)
      : handler_(std::move(handler)), threshold_(threshold) {}

  bool enabled(LogLevel level) const noexcept {
    return static_cast<bool>(handler_) && level >= threshold_;
  }

  /// Formats and hands over one record; never throws.
  template <typename... Args>
  void operator()(LogLevel level, fmt::format_string<Args...> format,
                  Args&&... args) const noexcept {
    if (!enabled(level)) return;
    try {
      handler_(level, fmt::format(format, std::forward<Args>(args)...));
    } catch (...) {
      // Documented: exceptions from the log handler are ignored.
    }
  }

 private:
  LogHandler handler_;
  LogLevel threshold_ = LogLevel::info;
};

}  // namespace syncbus::detail
