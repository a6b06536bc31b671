#pragma once
// The Prometheus text exposition format (0.0.4), as syncbus writes it: for
// a bus's counters (<syncbus/prometheus.hpp>) and for `syncbus status
// --prometheus`, the server-side view.

#include <syncbus/prometheus.hpp>

#include <string>
#include <utility>
#include <vector>

namespace syncbus::detail {

/// `{name="value",...}` with the values escaped ("" for no labels); throws
/// configuration_error for a name Prometheus would refuse.
std::string prometheus_labels(const PrometheusLabels& labels);

/// One metric family: its HELP and TYPE lines, then a sample per label set.
std::string prometheus_family(const std::string& name, const std::string& type,
                              const std::string& help,
                              const std::vector<std::pair<PrometheusLabels, double>>& samples);

}  // namespace syncbus::detail
