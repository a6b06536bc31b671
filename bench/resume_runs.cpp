#include "resume_runs.hpp"

#include <syncbus/postgres_bus.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <string>

#include "pacing.hpp"
#include "raw_baseline.hpp"

namespace syncbus::bench {

ResumeResult run_resume(const Config& config, std::size_t missed) {
  using Clock = std::chrono::steady_clock;
  const auto ms = [](Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
  };
  PostgresBusOptions options;
  options.conninfo = config.conninfo;
  options.channel =
      "syncbus_bench_resume_" + std::to_string(::getpid()) + "_" + std::to_string(missed);
  options.spill = SpillMode::always;
  options.heartbeat_interval = std::chrono::milliseconds(0);
  ResumeResult result;
  result.missed = missed;
  result.size = config.sizes.empty() ? 200 : config.sizes.front();

  // The client's position: the first message, as a bus delivered it.
  auto publishing = options;
  publishing.listen = false;
  PostgresClusterBus publisher(publishing);
  std::string since;
  {
    PostgresClusterBus first_bus(options);
    std::promise<std::string> first;
    auto s = first_bus.subscribe([&](const ClusterMessage& m) { first.set_value(m.position); });
    publisher.publish({{"first", true}});
    since = first.get_future().get();
  }
  // What it misses, published as fast as the bus takes it.
  const auto pad = padding_for(result.size, config.text_body);
  {
    std::deque<std::future<void>> in_flight;
    for (std::size_t i = 0; i < missed; ++i) {
      in_flight.push_back(publisher.publish_async({{"p", pad}}));
      if (in_flight.size() >= 256) {
        in_flight.front().get();
        in_flight.pop_front();
      }
    }
    for (auto& f : in_flight) f.get();
  }

  // The client comes back on another bus.
  PostgresClusterBus bus(options);
  std::mutex mutex;
  std::condition_variable arrived;
  std::uint64_t expected = 2;  // the publisher's next sequence
  bool in_order = true;
  Clock::time_point caught_up, live;
  const auto last_missed = missed + 1;
  const auto begin = Clock::now();
  auto subscription = bus.subscribe_from(since, [&](const ClusterMessage& m) {
    std::lock_guard<std::mutex> lock(mutex);
    in_order = in_order && m.sequence == expected;
    ++expected;
    if (m.sequence == last_missed) caught_up = Clock::now();
    if (m.sequence == last_missed + 1) live = Clock::now();
    arrived.notify_all();
  });
  const auto subscribed = Clock::now();
  publisher.publish({{"live", true}});
  {
    std::unique_lock<std::mutex> lock(mutex);
    arrived.wait_for(lock, std::chrono::minutes(10),
                     [&] { return expected > last_missed + 1 || !in_order; });
    result.correct = in_order && expected == last_missed + 2;
  }
  subscription.unsubscribe();
  result.subscribe_ms = ms(subscribed - begin);
  result.caught_up_ms = ms(caught_up - begin);
  result.first_live_ms = ms(live - begin);
  result.read_per_second =
      result.caught_up_ms > 0 ? static_cast<double>(missed) / (result.caught_up_ms / 1000) : 0;
  // The baseline: the same rows read by hand, every body's bytes to the
  // client (string_agg: one value per page, through RawConnection::exec).
  {
    RawConnection raw(config.conninfo);
    const auto raw_begin = Clock::now();
    std::string after = "1";
    for (;;) {
      const auto page = raw.exec(
          "SELECT coalesce(max(sequence), 0)::text || ' ' || count(*)::text || E'\\n' || "
          "coalesce(string_agg(body, ','), '') FROM (SELECT sequence, body FROM "
          "public.sync_cluster_spill WHERE channel = $1 AND origin = $2 AND sequence > $3::bigint "
          "ORDER BY sequence LIMIT 1024) p",
          {options.channel.c_str(), publisher.instance_id().c_str(), after.c_str()});
      const auto space = page.find(' ');
      const auto newline = page.find('\n');
      const auto count = std::stoul(page.substr(space + 1, newline - space - 1));
      if (count == 0) break;
      after = page.substr(0, space);
      if (count < 1024) break;
    }
    result.raw_read_ms = ms(Clock::now() - raw_begin);
  }
  publisher.vacuum(std::chrono::milliseconds(0));  // leave the table as it was
  return result;
}

}  // namespace syncbus::bench
