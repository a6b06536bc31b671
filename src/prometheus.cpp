// BusStats as Prometheus text (docs/OPERATIONS.md, "Metrics", names them).
#include <syncbus/prometheus.hpp>

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "prometheus_text.hpp"

namespace syncbus {
namespace {

struct Metric {
  const char* name;
  const char* type;  // counter or gauge
  const char* help;
  double (*value)(const BusStats&);
};

template <typename Number>
double as_double(Number n) {
  return static_cast<double>(n);
}

const Metric metrics[] = {
    {"syncbus_published_total", "counter", "Messages this bus published (committed).",
     [](const BusStats& s) { return as_double(s.published); }},
    {"syncbus_spilled_total", "counter", "Messages this bus published through the spill table.",
     [](const BusStats& s) { return as_double(s.spilled); }},
    {"syncbus_publish_batches_total", "counter",
     "Transactions this bus's messages were committed in (group commit).",
     [](const BusStats& s) { return as_double(s.publish_batches); }},
    {"syncbus_delivered_total", "counter", "Messages handed to this bus's handlers.",
     [](const BusStats& s) { return as_double(s.delivered); }},
    {"syncbus_gaps_total", "counter", "Gap events reported (known and unknown range).",
     [](const BusStats& s) { return as_double(s.gaps); }},
    {"syncbus_messages_missing_total", "counter", "Messages inside the gaps of known range.",
     [](const BusStats& s) { return as_double(s.messages_missing); }},
    {"syncbus_duplicates_dropped_total", "counter",
     "Messages received again and not delivered a second time.",
     [](const BusStats& s) { return as_double(s.duplicates_dropped); }},
    {"syncbus_dropped_queue_full_total", "counter",
     "Messages dropped because the delivery queue was full.",
     [](const BusStats& s) { return as_double(s.dropped_queue_full); }},
    {"syncbus_reread_from_table_total", "counter",
     "Messages read back from the spill table after the delivery queue was full.",
     [](const BusStats& s) { return as_double(s.reread_from_table); }},
    {"syncbus_reconnects_total", "counter", "Times the listener's connection was re-established.",
     [](const BusStats& s) { return as_double(s.reconnects); }},
    {"syncbus_origins_tracked", "gauge", "Publishing buses this bus keeps sequence numbers for.",
     [](const BusStats& s) { return as_double(s.origins_tracked); }},
    {"syncbus_notification_queue_usage", "gauge",
     "The last pg_notification_queue_usage() seen, 0 to 1.",
     [](const BusStats& s) { return s.notification_queue_usage; }},
    {"syncbus_stuck_listeners_terminated_total", "counter",
     "Stuck listener sessions the watchdog terminated.",
     [](const BusStats& s) { return as_double(s.stuck_listeners_terminated); }},
    {"syncbus_errors_total", "counter", "Errors reported to on_error.",
     [](const BusStats& s) { return as_double(s.errors); }},
};

bool valid_label_name(const std::string& name) {
  if (name.empty() || name.rfind("__", 0) == 0) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

}  // namespace

namespace detail {
namespace {

// A label value as the text format quotes it: backslash, quote and newline
// escaped.
std::string escaped(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string prometheus_labels(const PrometheusLabels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (auto it = labels.begin(); it != labels.end(); ++it) {
    const auto& [name, value] = *it;
    for (auto before = labels.begin(); before != it; ++before) {
      if (before->first == name) {
        throw configuration_error(fmt::format(
            "syncbus: the label \"{}\" is given twice; Prometheus refuses a series with a "
            "label name twice",
            name));
      }
    }
    if (!valid_label_name(name)) {
      throw configuration_error(fmt::format(
          "syncbus: \"{}\" is not a Prometheus label name: use [a-zA-Z_][a-zA-Z0-9_]*, not "
          "starting with \"__\"",
          name));
    }
    if (out.size() > 1) out += ',';
    out += fmt::format("{}=\"{}\"", name, escaped(value));
  }
  return out + "}";
}

std::string prometheus_family(const std::string& name, const std::string& type,
                              const std::string& help,
                              const std::vector<std::pair<PrometheusLabels, double>>& samples) {
  std::string out = fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  for (const auto& [labels, value] : samples) {
    out += fmt::format("{}{} {}\n", name, prometheus_labels(labels), value);
  }
  return out;
}

}  // namespace detail

std::string to_prometheus(const BusStats& stats, const PrometheusLabels& labels) {
  return to_prometheus({{labels, stats}});
}

std::string to_prometheus(const std::vector<std::pair<PrometheusLabels, BusStats>>& buses) {
  std::vector<PrometheusLabels> seen;
  for (const auto& [labels, stats] : buses) {
    for (const auto& label : labels) {
      if (label.first == "le") {
        throw configuration_error(
            "syncbus: \"le\" is not a label to give to_prometheus(): the delivery lag "
            "histogram's buckets use it. Name it otherwise");
      }
    }
    auto sorted = labels;
    std::sort(sorted.begin(), sorted.end());
    if (std::find(seen.begin(), seen.end(), sorted) != seen.end()) {
      throw configuration_error(fmt::format(
          "syncbus: two buses given to to_prometheus() have the same labels ({}): their series "
          "would clash. Tell them apart, with {{\"instance\", bus.instance_id()}} say",
          detail::prometheus_labels(labels)));
    }
    seen.push_back(std::move(sorted));
  }
  std::string out;
  for (const auto& metric : metrics) {
    std::vector<std::pair<PrometheusLabels, double>> samples;
    samples.reserve(buses.size());
    for (const auto& [labels, stats] : buses) samples.emplace_back(labels, metric.value(stats));
    out += detail::prometheus_family(metric.name, metric.type, metric.help, samples);
  }
  // BusStats::delivery_lag: cumulative buckets in seconds, as histograms are.
  constexpr const char* lag = "syncbus_delivery_lag_seconds";
  out += fmt::format(
      "# HELP {0} From a message's publisher sending it to this bus handing it to its "
      "handlers.\n# TYPE {0} histogram\n",
      lag);
  for (const auto& [labels, stats] : buses) {
    const auto& histogram = stats.delivery_lag;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < histogram.buckets.size(); ++i) {
      cumulative += histogram.buckets[i];
      auto with_le = labels;
      with_le.emplace_back("le", i < DeliveryLag::bounds_ms.size()
                                     ? fmt::format("{}", DeliveryLag::bounds_ms[i] / 1000.0)
                                     : std::string("+Inf"));
      out += fmt::format("{}_bucket{} {}\n", lag, detail::prometheus_labels(with_le), cumulative);
    }
    const auto set = detail::prometheus_labels(labels);
    out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", lag, set, histogram.sum_ms / 1000, lag, set,
                       histogram.count);
  }
  return out;
}

}  // namespace syncbus
