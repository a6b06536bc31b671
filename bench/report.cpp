#include "report.hpp"

#include <syncbus/version.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <iostream>
#include <string>
#include <thread>

namespace syncbus::bench {
namespace {

std::string cpu_text(const std::optional<double>& v) {
  return v ? fmt::format("{:.3f}", *v) : "n/a";
}

double per_transaction(const Result& r) {
  return r.transactions ? static_cast<double>(r.delivered) / static_cast<double>(r.transactions)
                        : 0;
}

double total_cpu(const Result& r) {
  return r.process_cpu_per_1000 + r.server_cpu_per_1000.value_or(0);
}

}  // namespace

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
  if (all.stages.empty()) {
    all.stages = round.stages;
  } else {
    for (std::size_t i = 0; i < std::min(all.stages.size(), round.stages.size()); ++i) {
      all.stages[i].second.merge(round.stages[i].second);
    }
  }
}

void Report::preamble(bool server_cpu_measured) const {
  if (config_.json) return;  // each line carries its configuration
  std::cout << fmt::format(
      "syncbus_bench: {} s per run, {} receivers on each side{}, {} hardware threads, server "
      "CPU {}\n",
      config_.seconds, config_.receivers,
      config_.receiver_processes ? " (each a process of its own)" : "",
      std::thread::hardware_concurrency(),
      server_cpu_measured ? "measured" : "not measurable (server not local)");
}

void Report::size_begins() const {
  if (config_.json) return;
  std::cout << fmt::format(
      "{:<37} {:>6} {:>11} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}\n", "", "size",
      "load", "msg/s", "p50 us", "p99 us", "p99.9", "max us", "cpu/1k", "srv/1k", "msg/tx", "ok");
}

void Report::run(const Result& r, const Result* raw) const {
  if (config_.json) return json_line(r, raw ? "syncbus" : "raw", raw);
  std::cout << fmt::format(
      "{:<37} {:>6} {:>11} {:>10.0f} {:>8.0f} {:>8.0f} {:>8.0f} {:>8.0f} {:>8.3f} {:>8} {:>7.1f} "
      "{:>7}\n",
      r.name, r.size, r.load, r.delivered_per_second, r.latency.at(0.5), r.latency.at(0.99),
      r.latency.at(0.999), r.latency.max(), r.process_cpu_per_1000, cpu_text(r.server_cpu_per_1000),
      per_transaction(r), r.correct ? "yes" : "NO");
  if (raw) {
    std::cout << fmt::format(
        "{:<37} {:>6} {:>11} {:>9.2f}x {:>7.2f}x {:>7.2f}x {:>8} {:>8} {:>7.2f}x (cpu+srv)\n",
        "  vs raw", "", "", r.delivered_per_second / raw->delivered_per_second,
        r.latency.at(0.5) / std::max(1.0, raw->latency.at(0.5)),
        r.latency.at(0.99) / std::max(1.0, raw->latency.at(0.99)), "", "",
        total_cpu(r) / std::max(1e-9, total_cpu(*raw)));
  }
  if (!r.stages.empty()) {
    std::string stages;
    for (const auto& [name, times] : r.stages) {
      stages += fmt::format("{}{} {}", stages.empty() ? "" : ", ", name,
                            times.count() ? fmt::format("{:.0f}", times.at(0.5)) : "n/a");
    }
    std::cout << fmt::format("{:<37} p50 from the publish call, us: {}\n", "  stages", stages);
  }
}

void Report::ceiling(const Result& ceiling, const Result& best) const {
  if (config_.json) return json_line(ceiling, "ceiling", &best);
  run(ceiling, nullptr);
  std::cout << fmt::format("{:<37} {:>6} {:>11} {:>9.2f}x\n", "  " + best.name + " vs it", "", "",
                           best.delivered_per_second / ceiling.delivered_per_second);
}

void Report::legend() const {
  if (config_.json) return;
  std::cout << "columns: msg/s delivered to each receiver; latency from publish to handler "
               "(us); cpu/1k and srv/1k: CPU seconds of this process and of the server per "
               "1,000 messages delivered to a receiver; msg/tx: messages per transaction; ok: "
               "every receiver got every message once, in order\n";
}

void Report::json_line(const Result& r, const std::string& kind, const Result* compared_to) const {
  nlohmann::ordered_json line{
      {"kind", kind},
      {"name", r.name},
      {"size", r.size},
      {"load", r.load},
      {"msg_per_s", r.delivered_per_second},
      {"delivered", r.delivered},
      {"latency_us",
       {{"p50", r.latency.at(0.5)},
        {"p99", r.latency.at(0.99)},
        {"p999", r.latency.at(0.999)},
        {"max", r.latency.max()}}},
      {"cpu_s_per_1000", r.process_cpu_per_1000},
      {"server_cpu_s_per_1000", r.server_cpu_per_1000
                                    ? nlohmann::ordered_json(*r.server_cpu_per_1000)
                                    : nlohmann::ordered_json(nullptr)},
      {"msg_per_tx", per_transaction(r)},
      {"ok", r.correct},
      {"config",
       {{"syncbus", syncbus::version_string},
        {"seconds", config_.seconds},
        {"receivers", config_.receivers},
        {"receiver_processes", config_.receiver_processes},
        {"spill", config_.spill_always ? "always" : "overflow"},
        {"body", config_.text_body ? "text" : "repeated"},
        {"window", config_.window},
        {"max_lag_bytes", config_.max_lag_bytes},
        {"rate", config_.rate},
        {"rounds", config_.rounds},
        {"publisher_listens", config_.publisher_listens},
        {"stages", config_.stages},
        {"hardware_threads", std::thread::hardware_concurrency()}}},
  };
  if (!r.rss_after_warmup_kb.empty()) line["rss_after_warmup_kb"] = r.rss_after_warmup_kb;
  if (!r.stages.empty()) {
    auto& stages = line["stages_us"] = nlohmann::ordered_json::object();
    for (const auto& [name, times] : r.stages) {
      // None when the stage never saw the send time (a spill pointer's
      // payload carries no body for the listener to read it from).
      stages[name] = times.count()
                         ? nlohmann::ordered_json{{"p50", times.at(0.5)}, {"p99", times.at(0.99)}}
                         : nlohmann::ordered_json(nullptr);
    }
  }
  if (r.rss_growth_kb > 0) line["rss_growth_kb"] = r.rss_growth_kb;
  if (compared_to && kind == "syncbus") {
    const auto& raw = *compared_to;
    line["vs_raw"] = {
        {"msg_per_s", r.delivered_per_second / raw.delivered_per_second},
        {"p50", r.latency.at(0.5) / std::max(1.0, raw.latency.at(0.5))},
        {"p99", r.latency.at(0.99) / std::max(1.0, raw.latency.at(0.99))},
        {"cpu", total_cpu(r) / std::max(1e-9, total_cpu(raw))},
    };
  }
  if (compared_to && kind == "ceiling") {
    line["best_syncbus"] = {
        {"name", compared_to->name},
        {"fraction", compared_to->delivered_per_second / r.delivered_per_second}};
  }
  std::cout << line.dump() << "\n";
}

void Report::memory(const Result& r) const {
  if (config_.json) return;  // in the run's line
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
