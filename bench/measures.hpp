#pragma once
// What a benchmark run measures: CPU (this process's, and the server's when
// it runs on this machine), resident size, and latencies in fixed memory;
// and what a run reports (Result).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace syncbus::bench {

using Clock = std::chrono::steady_clock;

/// Clock::now() in nanoseconds (what each body carries as its send time).
std::int64_t now_ns();

/// The send time a body carries (`"t":`), found in its JSON text or in a
/// payload's that embeds it (the first, in a batch); none without one (a
/// spill pointer's payload, say).
std::optional<std::int64_t> sent_time_in(std::string_view text);

// CPU seconds: this process, and the server (postmaster + children, living
// and reaped).
struct CpuSample {
  double process = 0;
  std::optional<double> server;
};

double process_cpu();
/// Fields of /proc/<pid>/stat after the command name.
std::optional<std::vector<std::string>> proc_stat(int pid);
/// The server's CPU seconds (the postmaster and its children, living and
/// reaped); none when `postmaster` is not a process of this machine.
std::optional<double> server_cpu(int postmaster);
/// This process's resident size.
long resident_kb();

// Latencies in microseconds, in fixed memory whatever the run's length (a
// 10-minute run delivers hundreds of millions of messages: a sample each
// would be gigabytes, and the benchmark would measure itself). Log-linear
// buckets, as HdrHistogram's: exact below 128 us, then 128 per power of two
// (under 1 % apart); the maximum is kept exactly.
class Latencies {
 public:
  void record(double micros) {
    const auto value = static_cast<std::uint64_t>(std::max(0.0, micros));
    ++counts_[bucket_of(value)];
    ++count_;
    max_ = std::max(max_, micros);
  }
  void merge(const Latencies& other) {
    for (std::size_t i = 0; i < buckets; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    max_ = std::max(max_, other.max_);
  }
  // The q-quantile, as the lower bound of its bucket.
  double at(double q) const {
    if (count_ == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_ - 1));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets; ++i) {
      seen += counts_[i];
      if (seen > rank) return std::min(static_cast<double>(lower_bound_of(i)), max_);
    }
    return max_;
  }
  double max() const { return max_; }
  std::uint64_t count() const { return count_; }

  /// As text, to cross from a receiver process (receiver_processes.hpp):
  /// the count, the maximum, and each bucket that is not empty.
  void write(std::ostream& out) const {
    out << count_ << ' ' << max_;
    for (std::size_t i = 0; i < buckets; ++i) {
      if (counts_[i] != 0) out << ' ' << i << ':' << counts_[i];
    }
  }
  static Latencies read(std::istream& in) {
    Latencies l;
    in >> l.count_ >> l.max_;
    for (std::string pair; in >> pair;) {
      const auto colon = pair.find(':');
      const auto i = std::stoull(pair.substr(0, colon));
      if (i < buckets) l.counts_[i] = std::stoull(pair.substr(colon + 1));
    }
    return l;
  }

 private:
  static constexpr unsigned sub_bits = 7;  // 128 buckets per power of two
  static constexpr std::uint64_t sub = 1u << sub_bits;
  static constexpr std::size_t buckets = sub * (64 - sub_bits + 1);
  static std::size_t bucket_of(std::uint64_t v) {
    if (v < sub) return static_cast<std::size_t>(v);
    const unsigned magnitude = 63u - static_cast<unsigned>(__builtin_clzll(v));  // >= sub_bits
    const unsigned shift = magnitude - sub_bits;
    return static_cast<std::size_t>((shift + 1) * sub + ((v >> shift) - sub));
  }
  static std::uint64_t lower_bound_of(std::size_t i) {
    if (i < sub) return i;
    const auto shift = static_cast<unsigned>(i / sub - 1);
    return (sub + i % sub) << shift;
  }
  std::vector<std::uint64_t> counts_ = std::vector<std::uint64_t>(buckets);
  std::uint64_t count_ = 0;
  double max_ = 0;
};

/// --stages: how far a message had got at each stage of its way, as the
/// time from its publish call (a histogram per stage, named in order).
/// Written from the threads where each stage ends (the sender, each
/// receiver's listener and delivery thread), read when the run ends.
class StageTimes {
 public:
  explicit StageTimes(const std::vector<std::string>& names) {
    for (const auto& name : names) stages_.emplace_back(name, Latencies());
  }
  void record(std::size_t stage, std::int64_t now_ns, std::int64_t sent_ns) {
    std::lock_guard<std::mutex> lock(mutex_);
    stages_.at(stage).second.record(static_cast<double>(now_ns - sent_ns) / 1000.0);
  }
  std::vector<std::pair<std::string, Latencies>> times() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stages_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, Latencies>> stages_;
};

struct Result;

/// What one receiver of a run saw, written by its thread as messages arrive
/// and read by the run when it ends. Both sides, raw and syncbus, keep one
/// per receiver and pool them the same way (pool_into).
class ReceiverTally {
 public:
  /// A message sent at `sent_ns` arrived at `now_ns`; with `sequence`, also
  /// checks that it follows the one before.
  void record(std::int64_t now_ns, std::int64_t sent_ns,
              std::optional<std::uint64_t> sequence = std::nullopt) {
    std::lock_guard<std::mutex> lock(mutex_);
    latency_.record(static_cast<double>(now_ns - sent_ns) / 1000.0);
    if (sequence) {
      in_order_ = in_order_ && *sequence == last_sequence_ + 1;
      last_sequence_ = *sequence;
    }
    ++received_;
    last_ns_ = now_ns;
  }
  std::size_t received() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return received_;
  }
  bool in_order() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return in_order_;
  }
  /// As one line of text, and back: what a receiver process reports.
  std::string to_text() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::ostringstream out;
    out << received_ << ' ' << last_ns_ << ' ' << last_sequence_ << ' ' << in_order_ << ' ';
    latency_.write(out);
    return out.str();
  }
  static void from_text(const std::string& text, ReceiverTally& tally) {
    std::istringstream in(text);
    std::lock_guard<std::mutex> lock(tally.mutex_);
    in >> tally.received_ >> tally.last_ns_ >> tally.last_sequence_ >> tally.in_order_;
    tally.latency_ = Latencies::read(in);
  }
  /// Pools `tallies` into `result`: delivered is the fewest any receiver
  /// got, correct that each got all `sent` in order, the latency all of
  /// theirs; returns when the last message arrived (`start_ns` if none).
  static std::int64_t pool_into(Result& result, const std::vector<const ReceiverTally*>& tallies,
                                std::size_t sent, std::int64_t start_ns);

 private:
  mutable std::mutex mutex_;
  Latencies latency_;
  std::size_t received_ = 0;
  std::int64_t last_ns_ = 0;
  std::uint64_t last_sequence_ = 0;
  bool in_order_ = true;
};

struct Result {
  std::string name;
  std::size_t size = 0;
  std::string load;  // "saturation" or "N/s"
  double delivered_per_second = 0;
  std::size_t delivered = 0;  // per receiver (the smallest)
  Latencies latency;
  double process_cpu_per_1000 = 0;
  std::optional<double> server_cpu_per_1000;
  long rss_growth_kb = 0;
  // Runs of a minute or more: resident size sampled every 10 s after the
  // first minute (the queues fill during it), to show whether it stays flat.
  std::vector<long> rss_after_warmup_kb;
  std::uint64_t transactions = 0;
  bool correct = true;
  // --stages (paced runs): per stage, in order, the time from the publish
  // call at which messages had got there.
  std::vector<std::pair<std::string, Latencies>> stages;
};

inline std::int64_t ReceiverTally::pool_into(Result& result,
                                             const std::vector<const ReceiverTally*>& tallies,
                                             std::size_t sent, std::int64_t start_ns) {
  result.delivered = sent;
  std::int64_t last_ns = start_ns;
  for (const auto* tally : tallies) {
    std::lock_guard<std::mutex> lock(tally->mutex_);
    result.delivered = std::min(result.delivered, tally->received_);
    result.correct = result.correct && tally->in_order_ && tally->received_ == sent;
    last_ns = std::max(last_ns, tally->last_ns_);
    result.latency.merge(tally->latency_);
  }
  return last_ns;
}

}  // namespace syncbus::bench
