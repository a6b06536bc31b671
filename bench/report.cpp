#include "report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <string>

namespace syncbus::bench {
namespace {

std::string cpu_text(const std::optional<double>& v) {
  return v ? fmt::format("{:.3f}", *v) : "n/a";
}

}  // namespace

void print_header() {
  std::cout << fmt::format(
      "{:<37} {:>6} {:>11} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}\n", "", "size",
      "load", "msg/s", "p50 us", "p99 us", "p99.9", "max us", "cpu/1k", "srv/1k", "msg/tx", "ok");
}

void pool(Result& all, const Result& round) {
  const auto weighted = [&](double a, double b) {
    const auto n = static_cast<double>(all.delivered + round.delivered);
    return n > 0 ? (a * static_cast<double>(all.delivered) +
                    b * static_cast<double>(round.delivered)) /
                       n
                 : 0;
  };
  all.name = round.name;
  all.size = round.size;
  all.delivered_per_second = weighted(all.delivered_per_second, round.delivered_per_second);
  all.process_cpu_per_1000 = weighted(all.process_cpu_per_1000, round.process_cpu_per_1000);
  if (round.server_cpu_per_1000) {
    all.server_cpu_per_1000 =
        weighted(all.server_cpu_per_1000.value_or(0), *round.server_cpu_per_1000);
  }
  all.delivered += round.delivered;
  all.latency.merge(round.latency);
  all.rss_growth_kb += round.rss_growth_kb;
  all.transactions += round.transactions;
  all.correct = all.correct && round.correct;
}

void print(const Result& r, const Result* raw) {
  const double per_tx =
      r.transactions ? static_cast<double>(r.delivered) / static_cast<double>(r.transactions) : 0;
  std::cout << fmt::format(
      "{:<37} {:>6} {:>11} {:>10.0f} {:>8.0f} {:>8.0f} {:>8.0f} {:>8.0f} {:>8.3f} {:>8} {:>7.1f} "
      "{:>7}\n",
      r.name, r.size, r.load, r.delivered_per_second, r.latency.at(0.5), r.latency.at(0.99),
      r.latency.at(0.999), r.latency.max(), r.process_cpu_per_1000, cpu_text(r.server_cpu_per_1000),
      per_tx, r.correct ? "yes" : "NO");
  if (raw) {
    const auto total = [](const Result& x) {
      return x.process_cpu_per_1000 + x.server_cpu_per_1000.value_or(0);
    };
    std::cout << fmt::format(
        "{:<37} {:>6} {:>11} {:>9.2f}x {:>7.2f}x {:>7.2f}x {:>8} {:>8} {:>7.2f}x (cpu+srv)\n",
        "  vs raw", "", "", r.delivered_per_second / raw->delivered_per_second,
        r.latency.at(0.5) / std::max(1.0, raw->latency.at(0.5)),
        r.latency.at(0.99) / std::max(1.0, raw->latency.at(0.99)), "", "",
        total(r) / std::max(1e-9, total(*raw)));
  }
}

void print_ceiling(const Result& ceiling, const Result& best) {
  print(ceiling, nullptr);
  std::cout << fmt::format("{:<37} {:>6} {:>11} {:>9.2f}x\n", "  " + best.name + " vs it", "", "",
                           best.delivered_per_second / ceiling.delivered_per_second);
}

void print_memory(const Result& r) {
  if (!r.rss_after_warmup_kb.empty()) {
    const auto [low, high] =
        std::minmax_element(r.rss_after_warmup_kb.begin(), r.rss_after_warmup_kb.end());
    std::cout << fmt::format(
        "{:<37} resident size after the first minute, every 10 s: {} samples, {} to {} KB "
        "(first {}, last {})\n",
        "", r.rss_after_warmup_kb.size(), *low, *high, r.rss_after_warmup_kb.front(),
        r.rss_after_warmup_kb.back());
    // Each minute's highest sample: a trend shows here, not in the
    // extremes above.
    std::string minutes;
    for (std::size_t i = 0; i < r.rss_after_warmup_kb.size(); i += 6) {
      const auto end = std::min(r.rss_after_warmup_kb.size(), i + 6);
      const auto highest =
          *std::max_element(r.rss_after_warmup_kb.begin() + i, r.rss_after_warmup_kb.begin() + end);
      minutes += fmt::format(" {:.1f}", highest / 1024.0);
    }
    std::cout << fmt::format("{:<37} highest each minute, MB:{}\n", "", minutes);
  }
  if (r.rss_growth_kb > 0) {
    std::cout << fmt::format("{:<37} resident size grew {} KB\n", "", r.rss_growth_kb);
  }
}

}  // namespace syncbus::bench
