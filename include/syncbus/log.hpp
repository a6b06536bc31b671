#pragma once
/// \file log.hpp
/// Where a bus's log records go. The library writes nothing to stdout or
/// stderr by itself: an application that wants to read what a bus has to
/// say (connections made and lost, catch-ups, gaps, warnings) gives it a
/// LogHandler and routes the records to its own logger.

#include <functional>
#include <string>

#include <syncbus/export.hpp>

namespace syncbus {

/// How much a log record matters.
enum class LogLevel {
  /// Details for finding a problem (each reconnect attempt, each catch-up page).
  debug,
  /// What a healthy bus does now and then (started, reconnected, closed).
  info,
  /// Something went wrong and the bus recovered or is recovering (a lost
  /// connection, a gap in the stream, a filling NOTIFY queue).
  warning,
  /// Something went wrong that the application should act on; every error
  /// reported to on_error is also logged at this level.
  error,
};

/// "debug", "info", "warning" or "error".
SYNCBUS_API const char* to_string(LogLevel level) noexcept;

/// Receives one log record. Called on the bus's threads, possibly several at
/// once: it must be thread-safe, and quick (it delays what the bus was
/// doing). Exceptions it throws are ignored.
using LogHandler = std::function<void(LogLevel level, const std::string& message)>;

}  // namespace syncbus
