#pragma once
// The live counters behind BusStats, shared by a bus's publisher, listener
// and delivery thread. Relaxed atomics: each counter is exact, a snapshot is
// not a consistent cut across counters (nor does it need to be).

#include <syncbus/bus_stats.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <string>

namespace syncbus::detail {

struct StatsCounters {
  std::atomic<std::uint64_t> published{0};
  std::atomic<std::uint64_t> spilled{0};
  std::atomic<std::uint64_t> publish_batches{0};
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> gaps{0};
  std::atomic<std::uint64_t> messages_missing{0};
  std::atomic<std::uint64_t> duplicates_dropped{0};
  std::atomic<std::uint64_t> dropped_queue_full{0};
  std::atomic<std::uint64_t> reread_from_table{0};
  std::atomic<std::uint64_t> reconnects{0};
  std::atomic<std::uint64_t> origins_tracked{0};  // a gauge, set by the delivery thread
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> stuck_listeners_terminated{0};
  std::atomic<double> notification_queue_usage{0};
  std::array<std::atomic<std::uint64_t>, DeliveryLag{}.buckets.size()> lag_buckets{};
  std::atomic<std::uint64_t> lag_sum_us{0};

  static void add(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) noexcept {
    counter.fetch_add(n, std::memory_order_relaxed);
  }

  /// Adds, stopping at the largest value instead of wrapping around (a
  /// gap's count comes from numbers a peer sent).
  static void add_saturating(std::atomic<std::uint64_t>& counter, std::uint64_t n) noexcept {
    auto current = counter.load(std::memory_order_relaxed);
    while (!counter.compare_exchange_weak(
        current, current > UINT64_MAX - n ? UINT64_MAX : current + n, std::memory_order_relaxed)) {
    }
  }

  /// One message handed to the handlers, and its lag when known
  /// (DeliveryLag; a negative one, which only the two clock estimates'
  /// disagreement makes, counts as none). `delivered` first, and released:
  /// a snapshot, which reads the lag first, never counts more lags than
  /// deliveries.
  void record_delivery(std::optional<std::chrono::microseconds> lag) noexcept {
    delivered.fetch_add(1, std::memory_order_release);
    if (!lag) return;
    const auto us = static_cast<std::uint64_t>(std::max<std::int64_t>(0, lag->count()));
    const auto& bounds = DeliveryLag::bounds_ms;
    const auto bucket =
        static_cast<std::size_t>(std::lower_bound(bounds.begin(), bounds.end(), us,
                                                  [](std::uint32_t bound_ms, std::uint64_t v) {
                                                    return std::uint64_t{bound_ms} * 1000 < v;
                                                  }) -
                                 bounds.begin());
    lag_buckets[bucket].fetch_add(1, std::memory_order_release);
    add_saturating(lag_sum_us, us);  // a peer's `sent` may be years ago
  }

  void record_error(const std::exception& e) {
    add(errors);
    std::lock_guard<std::mutex> lock(last_error_mutex_);
    last_error_ = e.what();
  }

  BusStats snapshot() const {
    BusStats s;
    // The lag before `delivered` (see record_delivery).
    for (std::size_t i = 0; i < lag_buckets.size(); ++i) {
      s.delivery_lag.buckets[i] = lag_buckets[i].load(std::memory_order_acquire);
      s.delivery_lag.count += s.delivery_lag.buckets[i];
    }
    s.delivery_lag.sum_ms = static_cast<double>(lag_sum_us.load(std::memory_order_relaxed)) / 1000;
    s.published = published.load(std::memory_order_relaxed);
    s.spilled = spilled.load(std::memory_order_relaxed);
    s.publish_batches = publish_batches.load(std::memory_order_relaxed);
    s.delivered = delivered.load(std::memory_order_acquire);
    s.gaps = gaps.load(std::memory_order_relaxed);
    s.messages_missing = messages_missing.load(std::memory_order_relaxed);
    s.duplicates_dropped = duplicates_dropped.load(std::memory_order_relaxed);
    s.dropped_queue_full = dropped_queue_full.load(std::memory_order_relaxed);
    s.reread_from_table = reread_from_table.load(std::memory_order_relaxed);
    s.reconnects = reconnects.load(std::memory_order_relaxed);
    s.origins_tracked = origins_tracked.load(std::memory_order_relaxed);
    s.errors = errors.load(std::memory_order_relaxed);
    s.stuck_listeners_terminated = stuck_listeners_terminated.load(std::memory_order_relaxed);
    s.notification_queue_usage = notification_queue_usage.load(std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(last_error_mutex_);
    s.last_error = last_error_;
    return s;
  }

 private:
  mutable std::mutex last_error_mutex_;
  std::string last_error_;
};

}  // namespace syncbus::detail
