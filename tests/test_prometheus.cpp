// BusStats as Prometheus text: every line as the exposition format (0.0.4)
// has it, each metric's HELP and TYPE once, label values escaped, and label
// names Prometheus would refuse refused here first.
#include <syncbus/errors.hpp>
#include <syncbus/in_memory_bus.hpp>
#include <syncbus/prometheus.hpp>

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <sstream>

namespace syncbus {
namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(Prometheus, EveryLineIsWhatTheTextFormatAllows) {
  BusStats stats;
  stats.published = 12;
  stats.delivered = 34;
  stats.notification_queue_usage = 0.25;
  const auto text = to_prometheus(stats, {{"channel", "orders"}, {"instance", "api-1.abc"}});
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  const std::regex help(R"(# HELP syncbus_[a-z_]+ [^\n]+)");
  const std::regex type(R"(# TYPE syncbus_[a-z_]+ (counter|gauge|histogram))");
  const std::regex sample(
      R"re(syncbus_[a-z_]+\{channel="orders",instance="api-1\.abc"(,le="([0-9.]+|\+Inf)")?\} [0-9.e+]+)re");
  std::map<std::string, std::string> values;
  for (const auto& line : lines_of(text)) {
    EXPECT_TRUE(std::regex_match(line, help) || std::regex_match(line, type) ||
                std::regex_match(line, sample))
        << line;
    if (line[0] != '#') values[line.substr(0, line.find('{'))] = line.substr(line.rfind(' ') + 1);
  }
  EXPECT_EQ(values["syncbus_published_total"], "12");
  EXPECT_EQ(values["syncbus_delivered_total"], "34");
  EXPECT_EQ(values["syncbus_notification_queue_usage"], "0.25");
  EXPECT_EQ(values["syncbus_errors_total"], "0");
  // Counters end in _total; gauges do not.
  for (const auto& line : lines_of(text)) {
    if (line.rfind("# TYPE ", 0) != 0 || line.find(" histogram") != std::string::npos) continue;
    const bool counter = line.size() > 8 && line.substr(line.size() - 7) == "counter";
    const auto name = line.substr(7, line.find(' ', 7) - 7);
    EXPECT_EQ(counter, name.size() > 6 && name.substr(name.size() - 6) == "_total") << line;
  }
}

TEST(Prometheus, SeveralBusesShareEachMetricsHelpAndType) {
  BusStats a, b;
  a.published = 1;
  b.published = 2;
  const auto text = to_prometheus({{{{"bus", "a"}}, a}, {{{"bus", "b"}}, b}});
  std::size_t helps = 0;
  for (const auto& line : lines_of(text)) {
    if (line == "# HELP syncbus_published_total Messages this bus published (committed).") ++helps;
  }
  EXPECT_EQ(helps, 1u);
  EXPECT_NE(text.find("syncbus_published_total{bus=\"a\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("syncbus_published_total{bus=\"b\"} 2\n"), std::string::npos) << text;
}

TEST(Prometheus, LabelValuesAreEscapedAndBadNamesRefused) {
  const auto text = to_prometheus(BusStats{}, {{"channel", "a\"b\\c\nd"}});
  EXPECT_NE(text.find(R"(syncbus_errors_total{channel="a\"b\\c\nd"} 0)"), std::string::npos)
      << text;
  for (const auto* bad : {"", "1st", "__reserved", "with-dash", "with space", "le"}) {
    EXPECT_THROW(to_prometheus(BusStats{}, {{bad, "x"}}), configuration_error) << bad;
  }
  // Series Prometheus would refuse or take for one: a name twice, two
  // buses with the same labels (in any order, or none).
  EXPECT_THROW(to_prometheus(BusStats{}, {{"a", "1"}, {"a", "2"}}), configuration_error);
  EXPECT_THROW(to_prometheus({{{{"bus", "a"}}, BusStats{}}, {{{"bus", "a"}}, BusStats{}}}),
               configuration_error);
  EXPECT_THROW(to_prometheus({{{}, BusStats{}}, {{}, BusStats{}}}), configuration_error);
  EXPECT_THROW(to_prometheus({{{{"a", "1"}, {"b", "2"}}, BusStats{}},
                              {{{"b", "2"}, {"a", "1"}}, BusStats{}}}),
               configuration_error);
  EXPECT_NO_THROW(to_prometheus({{{{"bus", "a"}}, BusStats{}}, {{{"bus", "b"}}, BusStats{}}}));
}

TEST(Prometheus, TheDeliveryLagIsAHistogramInSecondsWithCumulativeBuckets) {
  BusStats stats;
  stats.delivery_lag.buckets[0] = 3;                              // up to 1 ms
  stats.delivery_lag.buckets[4] = 2;                              // 10 to 25 ms
  stats.delivery_lag.buckets[DeliveryLag::bounds_ms.size()] = 1;  // over 60 s
  stats.delivery_lag.count = 6;
  stats.delivery_lag.sum_ms = 61500;
  const auto text = to_prometheus(stats, {{"bus", "a"}});
  EXPECT_NE(text.find("# TYPE syncbus_delivery_lag_seconds histogram\n"), std::string::npos);
  for (const auto* line : {
           "syncbus_delivery_lag_seconds_bucket{bus=\"a\",le=\"0.001\"} 3\n",
           "syncbus_delivery_lag_seconds_bucket{bus=\"a\",le=\"0.01\"} 3\n",
           "syncbus_delivery_lag_seconds_bucket{bus=\"a\",le=\"0.025\"} 5\n",
           "syncbus_delivery_lag_seconds_bucket{bus=\"a\",le=\"60\"} 5\n",
           "syncbus_delivery_lag_seconds_bucket{bus=\"a\",le=\"+Inf\"} 6\n",
           "syncbus_delivery_lag_seconds_sum{bus=\"a\"} 61.5\n",
           "syncbus_delivery_lag_seconds_count{bus=\"a\"} 6\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
  }
}

TEST(Prometheus, ABusCountersRenderAsTheyAre) {
  InMemoryClusterBus bus;
  auto s = bus.subscribe([](const ClusterMessage&) {});
  bus.publish({{"n", 1}});
  bus.hub()->wait_idle();
  const auto text = to_prometheus(bus.stats(), {{"instance", bus.instance_id()}});
  EXPECT_NE(text.find("syncbus_published_total{instance=\"" + bus.instance_id() + "\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("syncbus_delivered_total{instance=\"" + bus.instance_id() + "\"} 1\n"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace syncbus
