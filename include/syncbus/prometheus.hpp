#pragma once
/// \file prometheus.hpp
/// A bus's counters (BusStats) in the Prometheus text exposition format
/// (version 0.0.4), for an application's /metrics endpoint. The metric
/// names, and what each means, are in docs/OPERATIONS.md, "Metrics".

#include <string>
#include <utility>
#include <vector>

#include <syncbus/bus_stats.hpp>
#include <syncbus/export.hpp>

namespace syncbus {

/// Labels on every sample of one bus, e.g. {{"channel", bus.channel()},
/// {"instance", bus.instance_id()}}: names as Prometheus allows them
/// ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__"), values any UTF-8.
using PrometheusLabels = std::vector<std::pair<std::string, std::string>>;

/// The counters of one bus as Prometheus metrics: `syncbus_published_total`,
/// `syncbus_delivered_total`, ... each with its HELP and TYPE lines, and the
/// histogram `syncbus_delivery_lag_seconds`. Throws configuration_error for
/// a label name Prometheus would refuse, a name given twice, or `le` (the
/// histogram's).
SYNCBUS_API std::string to_prometheus(const BusStats& stats, const PrometheusLabels& labels = {});

/// The counters of several buses of one process in one exposition (each
/// metric's HELP and TYPE once, then a sample per bus): give each bus
/// labels that tell it apart (two with the same set, in any order, are a
/// configuration_error: their series would clash).
SYNCBUS_API std::string to_prometheus(
    const std::vector<std::pair<PrometheusLabels, BusStats>>& buses);

}  // namespace syncbus
