#include "error_sink.hpp"

#include <syncbus/errors.hpp>

#include <string>
#include <utility>

namespace syncbus::detail {

void report(const ErrorSink& sink, const std::exception& e) noexcept {
  if (!sink) return;
  try {
    sink(e);
  } catch (...) {
    // Documented: exceptions from the error handler are ignored.
  }
}

void call_reporting(const ErrorSink& sink, const char* who,
                    const std::function<void()>& callback) noexcept {
  try {
    callback();
  } catch (const std::exception& e) {
    report(sink, error(std::string("syncbus: ") + who + " threw: " + e.what()));
  } catch (...) {
    report(sink, error(std::string("syncbus: ") + who + " threw a non-std exception"));
  }
}

ErrorSink counting_errors(std::shared_ptr<StatsCounters> stats, ErrorSink user, Logger log) {
  return [stats = std::move(stats), user = std::move(user),
          log = std::move(log)](const std::exception& e) {
    stats->record_error(e);
    log(LogLevel::error, "{}", e.what());
    report(user, e);
  };
}

}  // namespace syncbus::detail
