#include "syncbus_runs.hpp"

#include <syncbus/postgres_bus.hpp>

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "bus_parts.hpp"  // --stages: a bus with a channel tap, as `syncbus tail` has
#include "inbound.hpp"
#include "pacing.hpp"
#include "receiver_processes.hpp"

namespace syncbus::bench {

using namespace std::chrono_literals;

Result run_syncbus(const Config& config, const SyncbusLoad& load, int postmaster) {
  const auto size = load.size;
  const auto threads = load.threads;
  const auto rate = load.rate;
  const auto blocking = load.blocking;
  static int run = 0;
  const std::string channel = fmt::format("syncbus_bench_{}_{}", ::getpid(), ++run);
  syncbus::PostgresBusOptions options;
  options.conninfo = config.conninfo;
  options.channel = channel;
  if (config.spill_always) options.spill = syncbus::SpillMode::always;
  // Declared before the buses, so that it outlives them: the exception it
  // keeps may be one a bus's sending thread also holds (in a publish_async
  // future's state), and its last reference must go here, after that thread
  // is joined, not there. Otherwise the exception is destroyed on the
  // sending thread after this one read it: correct (libstdc++ counts its
  // references atomically), but ThreadSanitizer cannot see that count, and
  // a fresh machine's run of `scripts/test.sh` reported a "data race on
  // vptr" in CliTest.BenchEndsWithTheErrorWhenTheServerGoesAway.
  FirstError failure;
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  options.on_error = [&](const std::exception& e) {
    std::lock_guard<std::mutex> lock(errors_mutex);
    errors.emplace_back(e.what());
  };
  // --receiver-processes: forked now, before any bus starts a thread. Each
  // child's bus reports its own errors and gaps: a run with any fails.
  std::unique_ptr<ReceiverProcesses> processes;
  const auto receiver_count = static_cast<std::size_t>(config.receivers);
  if (config.receiver_processes) {
    processes = std::make_unique<ReceiverProcesses>(receiver_count, [options](ReceiverLink& link) {
      std::mutex problems_mutex;
      std::vector<std::string> problems;
      auto own = options;
      own.on_error = [&](const std::exception& e) {
        std::lock_guard<std::mutex> lock(problems_mutex);
        problems.emplace_back(e.what());
      };
      own.on_gap = [&](const syncbus::GapEvent& gap) {
        std::lock_guard<std::mutex> lock(problems_mutex);
        problems.push_back(fmt::format("a gap in {}'s messages", gap.origin));
      };
      syncbus::PostgresClusterBus bus(own);
      auto subscription = bus.subscribe([&](const syncbus::ClusterMessage& m) {
        link.record(m.body.at("t").get<std::int64_t>(), m.sequence);
      });
      link.ready();
      while (!link.done()) std::this_thread::sleep_for(1ms);
      subscription.unsubscribe();
      bus.close();
      std::lock_guard<std::mutex> lock(problems_mutex);
      if (!problems.empty()) throw std::runtime_error("a receiving bus: " + problems.front());
    });
    processes->wait_ready();
  }
  std::atomic<std::uint64_t> gaps{0};
  options.on_gap = [&](const syncbus::GapEvent&) { ++gaps; };
  // The publishing bus never subscribes: publish-only, as such a process
  // would be (--publisher-listens: not).
  auto publisher_options = options;
  publisher_options.listen = config.publisher_listens;
  syncbus::PostgresClusterBus publisher(publisher_options);
  // Flow control, as a producer that must not outrun its consumers would
  // have: no more than max_lag messages published and not yet delivered
  // everywhere. Without it, a fast enough producer makes the listeners fall
  // behind the server's NOTIFY queue, whose reading then slows everyone
  // down: "saturation" is what the whole pipeline sustains.
  // Never more than half of what a receiving bus's delivery queue holds, in
  // messages and in bytes: a consumer that let its queue overflow would lose
  // messages (reported as gaps), and that is not the throughput anyone wants
  // to measure.
  const std::size_t max_lag = std::max<std::size_t>(
      1, std::min<std::size_t>(
             {options.delivery_queue_capacity / 2,
              options.delivery_queue_bytes / 2 / std::max<std::size_t>(1, size),
              std::max<std::size_t>(256, config.max_lag_bytes / std::max<std::size_t>(1, size))}));
  // Senders that are max_lag ahead sleep until the slowest receiver is back
  // within half of it: woken once per max_lag / 2 messages delivered, not
  // polling (16 threads polling every 200 us cost more CPU than the buses
  // they measured, on a machine where the server needs it too).
  // (Receiver processes cannot wake them: they look every millisecond.)
  struct Lag {
    Lag(std::size_t receivers, const ReceiverProcesses* processes) : own(receivers) {
      for (std::size_t i = 0; i < receivers; ++i) {
        received.push_back(processes ? &processes->received(i) : &own[i]);
      }
    }
    std::atomic<std::size_t> issued{0};
    std::vector<std::atomic<std::size_t>> own;              // in-process receivers' counts
    std::vector<const std::atomic<std::size_t>*> received;  // per receiver
    std::atomic<int> waiting{0};
    std::mutex mutex;
    std::condition_variable caught_up;
    std::size_t behind() const {
      std::size_t slowest = SIZE_MAX;
      for (const auto* r : received) slowest = std::min(slowest, r->load());
      const auto out = issued.load();
      return out > slowest ? out - slowest : 0;
    }
  } lag(receiver_count, processes.get());
  const auto recheck = processes ? std::chrono::milliseconds(1) : std::chrono::milliseconds(100);
  // --stages, paced runs: when publish() returned (the commit), and when
  // each receiving bus's listener read the payload, its delivery thread
  // took the message, and the handler got it. The two middle ones through
  // a channel tap (channel_tap.hpp), which a bus built with one calls at
  // exactly those points; such a bus is a PostgresClusterBus's own parts.
  std::optional<StageTimes> stages;
  if (config.stages && rate) {
    stages.emplace(std::vector<std::string>{"committed", "read by the listener",
                                            "on the delivery thread", "in the handler"});
  }
  detail::ChannelTap tap;
  if (stages) {
    tap.on_payload = [&stages](const detail::Notification& n) {
      const auto now = now_ns();
      if (const auto t = sent_time_in(n.payload)) stages->record(1, now, *t);
    };
    tap.on_delivered = [&stages](const detail::Inbound& item) {
      const auto now = now_ns();
      if (item.kind != detail::Inbound::Kind::message) return;
      std::optional<std::int64_t> t;
      if (item.body_text) {
        t = sent_time_in(*item.body_text);
      } else if (item.message.body.is_object() && item.message.body.contains("t")) {
        t = item.message.body["t"].get<std::int64_t>();
      }
      if (t) stages->record(2, now, *t);
    };
  }
  // Each receiving bus is built from its parts, which PostgresClusterBus is
  // only the face of, so that --stages can give it the tap (empty without).
  struct Receiver {
    std::unique_ptr<detail::BusParts> bus;
    syncbus::Subscription subscription;
    ReceiverTally tally;
  };
  std::vector<std::unique_ptr<Receiver>> receivers;
  for (std::size_t i = 0; i < receiver_count && !processes; ++i) {
    auto receiver = std::make_unique<Receiver>();
    auto* self = receiver.get();
    auto* count = &lag.own[i];
    syncbus::MessageHandler handler = [self, count, &lag, max_lag,
                                       &stages](const syncbus::ClusterMessage& m) {
      const auto now = now_ns();
      const auto sent_at = m.body.at("t").get<std::int64_t>();
      self->tally.record(now, sent_at, m.sequence);
      if (stages) stages->record(3, now, sent_at);
      count->fetch_add(1);
      if (lag.waiting.load() > 0 && lag.behind() <= max_lag / 2) {
        std::lock_guard<std::mutex> lock(lag.mutex);
        lag.caught_up.notify_all();
      }
    };
    receiver->bus = std::make_unique<detail::BusParts>(options, tap);
    receiver->subscription = receiver->bus->subscribe(std::move(handler));
    receivers.push_back(std::move(receiver));
  }
  const auto pad = padding_for(size, config.text_body);
  std::atomic<std::size_t> sent{0};
  Clock::time_point run_ends;  // set when the senders start
  const auto wait_for_receivers = [&] {
    if (lag.behind() < max_lag) return;
    std::unique_lock<std::mutex> lock(lag.mutex);
    ++lag.waiting;
    // The timeout only guards against receivers that stopped for good (a
    // server gone, say): the senders then wait no longer than the run.
    while (lag.behind() > max_lag / 2 && !stop_requested() && !failure.failed() &&
           Clock::now() < run_ends) {
      lag.caught_up.wait_for(lock, recheck);
    }
    --lag.waiting;
  };
  const auto cpu_before = process_cpu();
  const auto server_before = server_cpu(postmaster);
  const auto rss_before = resident_kb();
  const auto start_ns = now_ns();
  std::vector<long> rss_samples;
  std::atomic<bool> sampling{config.seconds >= 60};
  std::thread rss_sampler([&] {
    const auto warm = Clock::now() + 60s;
    auto next = warm;
    while (sampling) {
      std::this_thread::sleep_for(100ms);
      if (Clock::now() >= next) {
        rss_samples.push_back(resident_kb());
        next += 10s;
      }
    }
  });
  const auto duration = std::chrono::duration<double>(config.seconds);
  run_ends = Clock::now() + std::chrono::duration_cast<Clock::duration>(duration);
  std::vector<std::thread> senders;
  for (int t = 0; t < threads; ++t) {
    if (!blocking) {
      // A window of futures: publish_async until `window` are in flight,
      // then wait for the oldest.
      senders.emplace_back([&] {
        try {
          std::deque<std::future<void>> in_flight;
          sent += drive(duration, rate, failure, [&](std::size_t) {
            if (in_flight.size() >= config.window) {
              in_flight.front().get();
              in_flight.pop_front();
            }
            wait_for_receivers();
            ++lag.issued;
            in_flight.push_back(publisher.publish_async({{"t", now_ns()}, {"pad", pad}}));
          });
          for (auto& f : in_flight) f.get();
        } catch (...) {
          failure.record(std::current_exception());
        }
      });
      continue;
    }
    senders.emplace_back([&] {
      try {
        sent += drive(duration, rate, failure, [&](std::size_t) {
          // The same limit as the async senders: a blocking publish returns
          // at commit, long before the receivers are done with the message.
          wait_for_receivers();
          ++lag.issued;
          const auto t = now_ns();
          publisher.publish({{"t", t}, {"pad", pad}});
          if (stages) stages->record(0, now_ns(), t);
        });
      } catch (...) {
        failure.record(std::current_exception());
      }
    });
  }
  for (auto& s : senders) s.join();
  sampling = false;
  rss_sampler.join();
  // Drain: wait for both receivers to have everything, or give up (after
  // 30 s, or at once when a bus has reported an error: the run is not ok).
  const auto total = sent.load();
  const auto give_up = Clock::now() + 30s;
  const auto buses_failed = [&] {
    std::lock_guard<std::mutex> lock(errors_mutex);
    return !errors.empty();
  };
  for (;;) {
    bool done = true;
    for (const auto* r : lag.received) done = done && r->load() >= total;
    if (done || Clock::now() > give_up || failure.failed() || buses_failed()) break;
    std::this_thread::sleep_for(1ms);
  }
  Result result;
  result.name = fmt::format("syncbus{}, {} thread{}{}", config.spill_always ? " always" : "",
                            threads, threads == 1 ? "" : "s", blocking ? ", blocking" : "");
  if (processes && failure.failed()) processes->expect(0, 0);  // and the destructor ends them
  failure.rethrow_if_failed(fmt::format("{}, {} bytes", result.name, size));
  result.size = size;
  std::vector<const ReceiverTally*> tallies;
  for (const auto& r : receivers) tallies.push_back(&r->tally);
  std::vector<std::unique_ptr<ReceiverTally>> from_processes;
  double processes_cpu = 0;
  if (processes) {
    processes->expect(total, now_ns());  // they have it all, or never will
    from_processes = processes->collect();
    processes_cpu = processes->cpu_seconds();
    for (const auto& t : from_processes) tallies.push_back(t.get());
  }
  const auto last_ns = ReceiverTally::pool_into(result, tallies, total, start_ns);
  result.correct = result.correct && gaps == 0 && errors.empty();
  for (const auto& e : errors) std::cerr << "  error: " << e << "\n";
  if (!result.correct) {
    for (auto& r : receivers) {
      const auto stats = r->bus->stats();
      std::cerr << fmt::format(
          "  a receiver: {} of {} received, {}; {} gap(s) ({} messages), {} dropped with its "
          "delivery queue full, {} duplicate(s)\n",
          r->tally.received(), total, r->tally.in_order() ? "in order" : "OUT OF ORDER", stats.gaps,
          stats.messages_missing, stats.dropped_queue_full, stats.duplicates_dropped);
    }
  }
  result.delivered_per_second = static_cast<double>(result.delivered) * 1e9 /
                                static_cast<double>(std::max<std::int64_t>(1, last_ns - start_ns));
  // Per message delivered to a receiver: a message to N receivers is N
  // deliveries, on either side.
  const double per_1000 =
      1000.0 / static_cast<double>(std::max<std::size_t>(1, total * receiver_count));
  result.process_cpu_per_1000 = (process_cpu() - cpu_before + processes_cpu) * per_1000;
  if (const auto server_after = server_cpu(postmaster); server_after && server_before) {
    result.server_cpu_per_1000 = (*server_after - *server_before) * per_1000;
  }
  result.rss_growth_kb = resident_kb() - rss_before;
  result.rss_after_warmup_kb = std::move(rss_samples);
  result.transactions = publisher.stats().publish_batches;
  if (stages) result.stages = stages->times();
  publisher.vacuum(0ms);
  return result;
}

}  // namespace syncbus::bench
