#include "bus_config.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <functional>

#include "identifiers.hpp"
#include "instance_id.hpp"

namespace syncbus::detail {
namespace {

using Options = PostgresBusOptions;

// One row per rule: when `broken` holds, `why` says what is wrong with
// which option and what to give instead.
struct Rule {
  std::function<bool(const Options&)> broken;
  std::function<std::string(const Options&)> why;
};

const Rule rules[] = {
    {[](const Options& o) { return o.conninfo.empty(); },
     [](const Options&) {
       return std::string(
           "PostgresBusOptions::conninfo is empty; give a libpq connection string such as "
           "\"postgresql://user@host/dbname\"");
     }},
    {[](const Options& o) { return o.publish_queue_bytes == 0; },
     [](const Options&) {
       return std::string(
           "PostgresBusOptions::publish_queue_bytes is 0; give how many bytes of bodies may "
           "wait to be sent (default 16 MiB)");
     }},
    {[](const Options& o) { return o.max_message_bytes == 0; },
     [](const Options&) {
       return std::string(
           "PostgresBusOptions::max_message_bytes is 0; give the largest message body to "
           "accept, in bytes (default 64 MiB)");
     }},
    {[](const Options& o) { return o.delivery_queue_capacity == 0; },
     [](const Options&) {
       return std::string(
           "PostgresBusOptions::delivery_queue_capacity is 0; it must hold at least one message");
     }},
    {[](const Options& o) { return o.delivery_queue_bytes == 0; },
     [](const Options&) {
       return std::string(
           "PostgresBusOptions::delivery_queue_bytes is 0; give how many bytes of bodies may "
           "wait for the handlers (default 64 MiB)");
     }},
    {[](const Options& o) {
       return o.queue_full_policy == QueueFullPolicy::drop_and_reread &&
              o.spill != SpillMode::always;
     },
     [](const Options&) {
       return std::string(
           "PostgresBusOptions::queue_full_policy is drop_and_reread, which needs every message "
           "in the spill table: set spill = SpillMode::always, or use drop_and_report_gap (or "
           "automatic)");
     }},
    {[](const Options& o) { return o.publish_timeout.count() <= 0; },
     [](const Options& o) {
       return fmt::format("PostgresBusOptions::publish_timeout is {} ms; it must be positive",
                          o.publish_timeout.count());
     }},
    {[](const Options& o) { return o.ping_timeout.count() <= 0; },
     [](const Options& o) {
       return fmt::format("PostgresBusOptions::ping_timeout is {} ms; it must be positive",
                          o.ping_timeout.count());
     }},
    {[](const Options& o) { return o.query_timeout.count() <= 0; },
     [](const Options& o) {
       return fmt::format("PostgresBusOptions::query_timeout is {} ms; it must be positive",
                          o.query_timeout.count());
     }},
    {[](const Options& o) { return o.ping_interval.count() < 0; },
     [](const Options& o) {
       return fmt::format(
           "PostgresBusOptions::ping_interval is negative ({} ms); use a positive interval, or "
           "0 to disable pings",
           o.ping_interval.count());
     }},
    {[](const Options& o) { return !(o.queue_usage_warning > 0 && o.queue_usage_warning <= 1); },
     [](const Options& o) {
       return fmt::format(
           "PostgresBusOptions::queue_usage_warning is {}; give a fraction of the NOTIFY queue "
           "above 0 and at most 1, e.g. 0.1",
           o.queue_usage_warning);
     }},
    {[](const Options& o) {
       return o.queue_usage_interval.count() < 0 || o.watchdog_interval.count() < 0 ||
              o.watchdog_stuck_after.count() <= 0;
     },
     [](const Options&) {
       return std::string(
           "PostgresBusOptions::queue_usage_interval and watchdog_interval must not be negative "
           "(0 turns them off), and watchdog_stuck_after must be positive");
     }},
    {[](const Options& o) {
       return o.publish_linger.count() < 0 || o.publish_linger > std::chrono::seconds(1);
     },
     [](const Options& o) {
       return fmt::format(
           "PostgresBusOptions::publish_linger is {} us; use 0 (send at once, the default) up "
           "to 1 s",
           o.publish_linger.count());
     }},
    {[](const Options& o) {
       return o.heartbeat_interval.count() < 0 || o.heartbeat_interval > std::chrono::minutes(5);
     },
     [](const Options& o) {
       return fmt::format(
           "PostgresBusOptions::heartbeat_interval is {} ms; use a positive interval of at most "
           "5 minutes (receivers forget an origin silent for about half an hour), or 0 to "
           "disable heartbeats",
           o.heartbeat_interval.count());
     }},
};

}  // namespace

BusConfig BusConfig::resolve(PostgresBusOptions options) {
  for (const auto& rule : rules) {
    if (rule.broken(options)) throw configuration_error("syncbus: " + rule.why(options));
  }
  check_identifier("PostgresBusOptions::channel", options.channel);
  check_identifier("PostgresBusOptions::spill_schema", options.spill_schema);
  check_identifier("PostgresBusOptions::spill_table", options.spill_table);
  auto origin = new_instance_id(options.instance_id);
  if (options.application_name.empty()) options.application_name = "syncbus:" + origin;
  if (options.queue_full_policy == QueueFullPolicy::automatic) {
    options.queue_full_policy = options.spill == SpillMode::always
                                    ? QueueFullPolicy::drop_and_reread
                                    : QueueFullPolicy::drop_and_report_gap;
  }
  return BusConfig(std::move(options), std::move(origin));
}

}  // namespace syncbus::detail
