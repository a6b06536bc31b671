#include "error_sink.hpp"

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

ErrorSink counting_errors(std::shared_ptr<StatsCounters> stats, ErrorSink user, Logger log) {
  return [stats = std::move(stats), user = std::move(user),
          log = std::move(log)](const std::exception& e) {
    stats->record_error(e);
    log(LogLevel::error, "{}", e.what());
    report(user, e);
  };
}

}  // namespace syncbus::detail
