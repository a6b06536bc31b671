#pragma once
// Where a bus's parts send the errors they do not throw: exceptions never
// escape a thread the library owns, they are reported here (spdlog's
// err_handler). One sink per bus, built by counting_errors().

#include <exception>
#include <functional>
#include <memory>

#include "logger.hpp"
#include "stats_counters.hpp"

namespace syncbus::detail {

using ErrorSink = std::function<void(const std::exception&)>;

/// Calls `sink` with `e`, swallowing whatever the sink throws: an error
/// handler must never take down a thread the library owns.
void report(const ErrorSink& sink, const std::exception& e) noexcept;

/// Calls `callback` (code that is not the library's: an application's
/// on_gap, a tool's tap), reporting to `sink` whatever it throws, as
/// "syncbus: <who> threw: ...", instead of letting it escape.
void call_reporting(const ErrorSink& sink, const char* who,
                    const std::function<void()>& callback) noexcept;

/// The error sink a bus hands its parts: counts the error in `stats` (and
/// keeps its message as the last error), logs it, then reports it to `user`.
ErrorSink counting_errors(std::shared_ptr<StatsCounters> stats, ErrorSink user, Logger log = {});

}  // namespace syncbus::detail
