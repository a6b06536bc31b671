// The benchmark: throughput, latency and CPU of syncbus against a raw libpq
// baseline, in one run, on one PostgreSQL server. Run by `syncbus bench` and
// by the stand-alone bench/syncbus_bench (scripts/bench.sh).
//
//   syncbus bench CONNINFO [--seconds S] [--sizes 200,2000,20000]
//                 [--threads 1,4,16] [--rate 1000] [--check]   (--help: all)
//
// For each message size it measures:
//   raw      plain libpq: one pg_notify per transaction (for bodies that do
//            not fit a payload: one INSERT + pg_notify of the row id, and the
//            listener SELECTs each row), one sender, one listener connection;
//   syncbus  one PostgresClusterBus published to by 1, 4 and 16 threads
//            (publish_async, --window messages in flight each) and by 16
//            threads calling publish(), delivering to 2 other
//            PostgresClusterBus instances;
// at saturation (as fast as the senders go, for S seconds) and at a fixed
// offered load (--rate messages/s, one sender). Every figure of syncbus is
// also given as a ratio to the raw one of the same size.
//
// Latency is commit-to-handler as the sender's clock sees it (sender and
// receivers are in this process): each body carries its send time. CPU is
// this process's (getrusage) and the server's (/proc of the postmaster and
// its children; "n/a" when the server is not on this machine).
//
// --check turns it into a correctness test: every receiver must get every
// message exactly once, in order per origin, or the program exits with 1.
#include "benchmark.hpp"

#include <syncbus/postgres_bus.hpp>

#include <fmt/format.h>
#include <libpq-fe.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

struct Config {
  std::string conninfo;
  double seconds = 2.0;
  std::vector<std::size_t> sizes{200, 2000, 20000};
  std::vector<int> threads{1, 4, 16};
  // How the saturation senders publish: publish_async with up to `window`
  // messages in flight per thread (what a high-volume producer does), and
  // also, for these thread counts, blocking publish() calls.
  std::size_t window = 64;
  // Senders wait while this many bytes of messages are published but not yet
  // delivered to every receiver (at least 256 messages).
  std::size_t max_lag_bytes = 16 * 1024 * 1024;
  std::vector<int> blocking_threads{16};
  int rate = 1000;
  // The paced runs alternate raw and syncbus this many times, each for
  // seconds / 2: both then see the same moments of a noisy machine.
  int rounds = 4;
  // The publishing bus listens too (PostgresBusOptions::listen), as one
  // that also had subscribers would.
  bool publisher_listens = false;
  // What fills each body: one repeated character (compresses to almost
  // nothing), or text of pseudo-random words, which lz4 compresses about as
  // it does prose (--body text).
  bool text_body = false;
  bool check = false;
};

// ---------------------------------------------------------------- measures

// CPU seconds: this process, and the server (postmaster + children, living
// and reaped).
struct CpuSample {
  double process = 0;
  std::optional<double> server;
};

double process_cpu() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Fields of /proc/<pid>/stat after the command name.
std::optional<std::vector<std::string>> proc_stat(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return std::nullopt;
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

std::optional<double> server_cpu(int postmaster) {
  if (postmaster <= 0) return std::nullopt;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
  const auto own = proc_stat(postmaster);
  if (!own || own->size() < 15) return std::nullopt;
  double total = (std::stod((*own)[11]) + std::stod((*own)[12]) + std::stod((*own)[13]) +
                  std::stod((*own)[14])) /
                 tick;
  std::ifstream children("/proc/" + std::to_string(postmaster) + "/task/" +
                         std::to_string(postmaster) + "/children");
  for (int child; children >> child;) {
    if (const auto f = proc_stat(child); f && f->size() > 12) {
      total += (std::stod((*f)[11]) + std::stod((*f)[12])) / tick;
    }
  }
  return total;
}

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
};

long resident_kb() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * ::sysconf(_SC_PAGESIZE) / 1024;
}

// ---------------------------------------------------------------- pacing

// True once the run is to stop early (Ctrl-C in `syncbus bench`).
std::function<bool()> stop_requested = [] { return false; };

// The first exception any of a run's threads met. An exception escaping a
// thread would abort the program; caught here, the run stops its other
// threads, joins them all, and then throws it with what it was doing.
class FirstError {
 public:
  void record(std::exception_ptr error) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::move(error);
    failed_ = true;
  }
  bool failed() const { return failed_.load(); }
  void rethrow_if_failed(const std::string& doing) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) return;
    try {
      std::rethrow_exception(error_);
    } catch (const std::exception& e) {
      throw std::runtime_error(doing + ": " + e.what());
    }
  }

 private:
  mutable std::mutex mutex_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

// Calls send(i) for i = 0, 1, ... until `duration` has passed (or a stop is
// requested, or another thread of the run failed): as fast as it goes, or at
// `rate` per second.
template <typename Send>
std::size_t drive(std::chrono::duration<double> duration, std::optional<int> rate,
                  const FirstError& failure, Send send) {
  const auto start = Clock::now();
  const auto stop = start + std::chrono::duration_cast<Clock::duration>(duration);
  std::size_t i = 0;
  for (;; ++i) {
    auto now = Clock::now();
    if (rate) {
      const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(static_cast<double>(i) / *rate));
      if (due >= stop) break;
      if (due > now) std::this_thread::sleep_until(due);
    } else if (now >= stop) {
      break;
    }
    if (stop_requested() || failure.failed()) break;
    send(i);
  }
  return i;
}

std::string padding_for(std::size_t size, bool text) {
  // {"t":<19 digits>,"pad":"..."} is about size bytes.
  constexpr std::size_t overhead = 36;
  const std::size_t length = size > overhead ? size - overhead : 1;
  if (!text) return std::string(length, 'x');
  // Words of 2 to 10 letters from a vocabulary of 512, in a fixed
  // pseudo-random order: the same text every run, nothing to escape.
  std::mt19937 random(20261125);
  std::vector<std::string> vocabulary(512);
  for (auto& word : vocabulary) {
    word.resize(2 + random() % 9);
    for (auto& c : word) c = static_cast<char>('a' + random() % 26);
  }
  std::string pad;
  pad.reserve(length + 11);
  while (pad.size() < length) {
    pad += vocabulary[random() % vocabulary.size()];
    pad += ' ';
  }
  pad.resize(length);
  return pad;
}

// ---------------------------------------------------------------- raw libpq

class RawConnection {
 public:
  explicit RawConnection(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      throw std::runtime_error(fmt::format("raw: cannot connect: {}", PQerrorMessage(conn_)));
    }
  }
  ~RawConnection() { PQfinish(conn_); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // Runs one statement with text parameters; returns the first value.
  std::string exec(const char* sql, std::vector<const char*> params = {}) {
    PGresult* result = PQexecParams(conn_, sql, static_cast<int>(params.size()), nullptr,
                                    params.data(), nullptr, nullptr, 0);
    const auto status = PQresultStatus(result);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      const std::string message = PQresultErrorMessage(result);
      PQclear(result);
      throw std::runtime_error("raw: " + message);
    }
    std::string value =
        PQntuples(result) > 0 && PQnfields(result) > 0 ? PQgetvalue(result, 0, 0) : "";
    PQclear(result);
    return value;
  }
  PGconn* get() const { return conn_; }

 private:
  PGconn* conn_;
};

std::int64_t timestamp_in(const std::string& text) {
  const auto at = text.find("\"t\":");
  return at == std::string::npos ? 0 : std::stoll(text.substr(at + 4));
}

Result run_raw(const Config& config, std::size_t size, std::optional<int> rate, int postmaster) {
  const std::string channel = fmt::format("syncbus_bench_raw_{}", ::getpid());
  // This process's own table: another benchmark on the same database keeps
  // its own.
  const std::string table = fmt::format("syncbus_bench_raw_spill_{}", ::getpid());
  const std::string select_sql = fmt::format("SELECT body FROM {} WHERE id = $1", table);
  const std::string insert_sql = fmt::format(
      "WITH s AS (INSERT INTO {} (body) VALUES ($2) RETURNING id) SELECT pg_notify($1, id::text) "
      "FROM s",
      table);
  const bool spill = size + 64 >= syncbus::PostgresClusterBus::notify_payload_limit;
  RawConnection sender(config.conninfo), listener(config.conninfo);
  listener.exec(fmt::format("LISTEN \"{}\"", channel).c_str());
  std::atomic<bool> sending{true};
  std::atomic<std::size_t> sent{0};
  std::atomic<std::int64_t> give_up_ns{INT64_MAX};
  std::mutex mutex;
  Latencies latency;
  std::size_t received = 0;
  std::int64_t last_received_ns = 0;
  FirstError failure;
  std::thread receiving([&] {
    RawConnection& c = listener;
    try {
      for (;;) {
        pollfd fd{PQsocket(c.get()), POLLIN, 0};
        ::poll(&fd, 1, 50);
        if (PQconsumeInput(c.get()) == 0) {
          throw std::runtime_error(
              fmt::format("raw: the listening connection failed: {}", PQerrorMessage(c.get())));
        }
        while (PGnotify* n = PQnotifies(c.get())) {
          std::string payload = n->extra;
          PQfreemem(n);
          if (spill) {
            const char* id = payload.c_str();
            payload = c.exec(select_sql.c_str(), {id});
          }
          const auto now = now_ns();
          std::lock_guard<std::mutex> lock(mutex);
          latency.record(static_cast<double>(now - timestamp_in(payload)) / 1000.0);
          ++received;
          last_received_ns = now;
        }
        std::lock_guard<std::mutex> lock(mutex);
        if (!sending && (received >= sent || now_ns() > give_up_ns.load())) return;
      }
    } catch (...) {
      failure.record(std::current_exception());
    }
  });
  const auto pad = padding_for(size, config.text_body);
  double cpu_before = 0;
  std::optional<double> server_before;
  long rss_before = 0;
  std::int64_t start_ns = 0;
  std::size_t count = 0;
  try {
    if (spill) {
      sender.exec("SET client_min_messages = warning");
      // The bodies compressed as syncbus's spill table compresses them (lz4
      // where the server has it): the baseline differs in how it sends, not
      // in how the server stores. With the default, pglz, raw's 20 KB rows
      // cost its server half as much CPU again, and the ratio looked better
      // by that much.
      const bool lz4 =
          sender.exec(
              "SELECT coalesce((SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name "
              "= 'default_toast_compression'), false)") == "t";
      sender.exec(fmt::format("DROP TABLE IF EXISTS {}", table).c_str());
      sender.exec(fmt::format("CREATE TABLE {} (id bigserial PRIMARY KEY, body text {}NOT NULL)",
                              table, lz4 ? "COMPRESSION lz4 " : "")
                      .c_str());
    }
    cpu_before = process_cpu();
    server_before = server_cpu(postmaster);
    rss_before = resident_kb();
    start_ns = now_ns();
    count = drive(std::chrono::duration<double>(config.seconds), rate, failure, [&](std::size_t) {
      const auto body = fmt::format(R"({{"t":{},"pad":"{}"}})", now_ns(), pad);
      if (spill) {
        sender.exec(insert_sql.c_str(), {channel.c_str(), body.c_str()});
      } else {
        sender.exec("SELECT pg_notify($1, $2)", {channel.c_str(), body.c_str()});
      }
      ++sent;
    });
  } catch (...) {
    failure.record(std::current_exception());
  }
  // After a failure the listener stops at once; otherwise it has 30 s to
  // catch up.
  give_up_ns = now_ns() + (failure.failed() ? 0 : 30'000'000'000LL);
  sending = false;
  receiving.join();
  if (spill) {
    try {
      sender.exec(fmt::format("DROP TABLE IF EXISTS {}", table).c_str());
    } catch (...) {
      failure.record(std::current_exception());
    }
  }
  failure.rethrow_if_failed(fmt::format("raw libpq, {} bytes", size));
  Result r;
  r.name = "raw libpq";
  r.size = size;
  r.delivered = received;
  r.correct = received == count;
  r.delivered_per_second =
      static_cast<double>(received) * 1e9 /
      static_cast<double>(std::max<std::int64_t>(1, last_received_ns - start_ns));
  r.latency = std::move(latency);
  const double per_1000 = 1000.0 / static_cast<double>(std::max<std::size_t>(1, received));
  r.process_cpu_per_1000 = (process_cpu() - cpu_before) * per_1000;
  if (const auto server_after = server_cpu(postmaster); server_after && server_before) {
    r.server_cpu_per_1000 = (*server_after - *server_before) * per_1000;
  }
  r.rss_growth_kb = resident_kb() - rss_before;
  r.transactions = count;
  return r;
}

// ---------------------------------------------------------------- syncbus

Result run_syncbus(const Config& config, std::size_t size, int threads, std::optional<int> rate,
                   int postmaster, bool blocking) {
  static int run = 0;
  const std::string channel = fmt::format("syncbus_bench_{}_{}", ::getpid(), ++run);
  syncbus::PostgresBusOptions options;
  options.conninfo = config.conninfo;
  options.channel = channel;
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  options.on_error = [&](const std::exception& e) {
    std::lock_guard<std::mutex> lock(errors_mutex);
    errors.emplace_back(e.what());
  };
  std::atomic<std::uint64_t> gaps{0};
  options.on_gap = [&](const syncbus::GapEvent&) { ++gaps; };
  // The publishing bus never subscribes: publish-only, as such a process
  // would be (--publisher-listens: not).
  auto publisher_options = options;
  publisher_options.listen = config.publisher_listens;
  syncbus::PostgresClusterBus publisher(publisher_options);
  constexpr int receiver_count = 2;
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
  struct Lag {
    std::atomic<std::size_t> issued{0};
    std::array<std::atomic<std::size_t>, receiver_count> received{};
    std::atomic<int> waiting{0};
    std::mutex mutex;
    std::condition_variable caught_up;
    std::size_t behind() const {
      std::size_t slowest = SIZE_MAX;
      for (const auto& r : received) slowest = std::min(slowest, r.load());
      const auto out = issued.load();
      return out > slowest ? out - slowest : 0;
    }
  } lag;
  struct Receiver {
    std::unique_ptr<syncbus::PostgresClusterBus> bus;
    syncbus::Subscription subscription;
    std::mutex mutex;
    Latencies latency;
    std::uint64_t last_sequence = 0;
    bool in_order = true;
    std::size_t received = 0;
    std::int64_t last_ns = 0;
  };
  std::vector<std::unique_ptr<Receiver>> receivers;
  for (int i = 0; i < receiver_count; ++i) {
    auto receiver = std::make_unique<Receiver>();
    receiver->bus = std::make_unique<syncbus::PostgresClusterBus>(options);
    auto* self = receiver.get();
    auto* count = &lag.received[static_cast<std::size_t>(i)];
    receiver->subscription =
        receiver->bus->subscribe([self, count, &lag, max_lag](const syncbus::ClusterMessage& m) {
          const auto now = now_ns();
          const auto sent = m.body.at("t").get<std::int64_t>();
          {
            std::lock_guard<std::mutex> lock(self->mutex);
            self->latency.record(static_cast<double>(now - sent) / 1000.0);
            self->in_order = self->in_order && m.sequence == self->last_sequence + 1;
            self->last_sequence = m.sequence;
            ++self->received;
            self->last_ns = now;
          }
          count->fetch_add(1);
          if (lag.waiting.load() > 0 && lag.behind() <= max_lag / 2) {
            std::lock_guard<std::mutex> lock(lag.mutex);
            lag.caught_up.notify_all();
          }
        });
    receivers.push_back(std::move(receiver));
  }
  const auto pad = padding_for(size, config.text_body);
  std::atomic<std::size_t> sent{0};
  FirstError failure;
  Clock::time_point run_ends;  // set when the senders start
  const auto wait_for_receivers = [&] {
    if (lag.behind() < max_lag) return;
    std::unique_lock<std::mutex> lock(lag.mutex);
    ++lag.waiting;
    // The timeout only guards against receivers that stopped for good (a
    // server gone, say): the senders then wait no longer than the run.
    while (lag.behind() > max_lag / 2 && !stop_requested() && !failure.failed() &&
           Clock::now() < run_ends) {
      lag.caught_up.wait_for(lock, std::chrono::milliseconds(100));
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
          publisher.publish({{"t", now_ns()}, {"pad", pad}});
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
    for (auto& r : receivers) {
      std::lock_guard<std::mutex> lock(r->mutex);
      done = done && r->received >= total;
    }
    if (done || Clock::now() > give_up || failure.failed() || buses_failed()) break;
    std::this_thread::sleep_for(1ms);
  }
  Result result;
  result.name = fmt::format("syncbus, {} thread{}{}", threads, threads == 1 ? "" : "s",
                            blocking ? ", blocking" : "");
  failure.rethrow_if_failed(fmt::format("{}, {} bytes", result.name, size));
  result.size = size;
  result.delivered = total;
  std::int64_t last_ns = start_ns;
  for (auto& r : receivers) {
    std::lock_guard<std::mutex> lock(r->mutex);
    result.delivered = std::min(result.delivered, r->received);
    result.correct = result.correct && r->in_order && r->received == total;
    last_ns = std::max(last_ns, r->last_ns);
    result.latency.merge(r->latency);
  }
  result.correct = result.correct && gaps == 0 && errors.empty();
  for (const auto& e : errors) std::cerr << "  error: " << e << "\n";
  if (!result.correct) {
    for (auto& r : receivers) {
      const auto stats = r->bus->stats();
      std::lock_guard<std::mutex> lock(r->mutex);
      std::cerr << fmt::format(
          "  a receiver: {} of {} received, {}; {} gap(s) ({} messages), {} dropped with its "
          "delivery queue full, {} duplicate(s)\n",
          r->received, total, r->in_order ? "in order" : "OUT OF ORDER", stats.gaps,
          stats.messages_missing, stats.dropped_queue_full, stats.duplicates_dropped);
    }
  }
  result.delivered_per_second = static_cast<double>(result.delivered) * 1e9 /
                                static_cast<double>(std::max<std::int64_t>(1, last_ns - start_ns));
  const double per_1000 = 1000.0 / static_cast<double>(std::max<std::size_t>(1, total));
  result.process_cpu_per_1000 = (process_cpu() - cpu_before) * per_1000;
  if (const auto server_after = server_cpu(postmaster); server_after && server_before) {
    result.server_cpu_per_1000 = (*server_after - *server_before) * per_1000;
  }
  result.rss_growth_kb = resident_kb() - rss_before;
  result.rss_after_warmup_kb = std::move(rss_samples);
  result.transactions = publisher.stats().publish_batches;
  publisher.vacuum(0ms);
  return result;
}

// ---------------------------------------------------------------- report

std::string cpu_text(const std::optional<double>& v) {
  return v ? fmt::format("{:.3f}", *v) : "n/a";
}

void print_header() {
  std::cout << fmt::format(
      "{:<30} {:>6} {:>11} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}\n", "", "size",
      "load", "msg/s", "p50 us", "p99 us", "p99.9", "max us", "cpu/1k", "srv/1k", "msg/tx", "ok");
}

// Adds one round of a paced run to the rounds before it.
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
      "{:<30} {:>6} {:>11} {:>10.0f} {:>8.0f} {:>8.0f} {:>8.0f} {:>8.0f} {:>8.3f} {:>8} {:>7.1f} "
      "{:>7}\n",
      r.name, r.size, r.load, r.delivered_per_second, r.latency.at(0.5), r.latency.at(0.99),
      r.latency.at(0.999), r.latency.max(), r.process_cpu_per_1000, cpu_text(r.server_cpu_per_1000),
      per_tx, r.correct ? "yes" : "NO");
  if (raw) {
    const auto total = [](const Result& x) {
      return x.process_cpu_per_1000 + x.server_cpu_per_1000.value_or(0);
    };
    std::cout << fmt::format(
        "{:<30} {:>6} {:>11} {:>9.2f}x {:>7.2f}x {:>7.2f}x {:>8} {:>8} {:>7.2f}x (cpu+srv)\n",
        "  vs raw", "", "", r.delivered_per_second / raw->delivered_per_second,
        r.latency.at(0.5) / std::max(1.0, raw->latency.at(0.5)),
        r.latency.at(0.99) / std::max(1.0, raw->latency.at(0.99)), "", "",
        total(r) / std::max(1e-9, total(*raw)));
  }
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

constexpr const char* usage_text =
    "usage: syncbus bench [CONNINFO] [--seconds S] [--sizes 200,2000,20000]\n"
    "                     [--threads 1,4,16] [--window 64] [--blocking 16|none]\n"
    "                     [--rate 1000] [--rounds 4] [--max-lag-bytes 16777216]\n"
    "                     [--publisher-listens] [--body repeated|text] [--check]\n"
    "\n"
    "Measures syncbus against a raw libpq baseline on the same server, in one run:\n"
    "throughput delivered to every receiver, latency percentiles at saturation and\n"
    "at --rate messages/s, CPU per 1,000 messages (this process and the server), for\n"
    "each message size. At saturation each of --threads publishes with\n"
    "publish_async, --window messages in flight; --blocking threads call publish()\n"
    "and wait; senders pause while --max-lag-bytes are published and not yet\n"
    "delivered. The paced runs alternate raw and syncbus --rounds times, each for\n"
    "--seconds / 2, and pool the rounds. --rate 0 skips them. CONNINFO defaults to\n"
    "$DATABASE_URL. The publishing bus is publish-only (listen = false) unless\n"
    "--publisher-listens. --body: each body's padding is one repeated character\n"
    "(the default) or text of pseudo-random words, which compresses like prose.\n"
    "--check: exit 1 unless every receiver got every message once, in order.\n"
    "See docs/BENCHMARKS.md.\n";

int usage(const char* error) {
  std::cerr << "syncbus bench: " << error << "\n" << usage_text;
  return 2;
}

}  // namespace

namespace syncbus::bench {

int run_benchmark(const std::vector<std::string>& args, std::function<bool()> interrupted) {
  if (interrupted) stop_requested = std::move(interrupted);
  Config config;
  try {
    for (std::size_t i = 0; i < args.size(); ++i) {
      const auto value = [&]() -> const std::string& {
        if (i + 1 >= args.size()) throw std::invalid_argument(args[i] + " needs a value");
        return args[++i];
      };
      if (args[i] == "--seconds") {
        config.seconds = std::stod(value());
      } else if (args[i] == "--sizes") {
        config.sizes.clear();
        for (const auto& s : split(value())) config.sizes.push_back(std::stoul(s));
      } else if (args[i] == "--threads") {
        config.threads.clear();
        for (const auto& t : split(value())) config.threads.push_back(std::stoi(t));
      } else if (args[i] == "--blocking") {
        config.blocking_threads.clear();
        const auto list = value();
        if (list != "none") {
          for (const auto& t : split(list)) config.blocking_threads.push_back(std::stoi(t));
        }
      } else if (args[i] == "--window") {
        config.window = std::stoul(value());
      } else if (args[i] == "--max-lag-bytes") {
        config.max_lag_bytes = std::stoul(value());
      } else if (args[i] == "--rate") {
        config.rate = std::stoi(value());
      } else if (args[i] == "--rounds") {
        config.rounds = std::stoi(value());
        if (config.rounds < 1) throw std::invalid_argument("--rounds must be at least 1");
      } else if (args[i] == "--publisher-listens") {
        config.publisher_listens = true;
      } else if (args[i] == "--body") {
        const auto kind = value();
        if (kind != "repeated" && kind != "text") {
          throw std::invalid_argument("--body takes repeated or text, not " + kind);
        }
        config.text_body = kind == "text";
      } else if (args[i] == "--check") {
        config.check = true;
      } else if (args[i] == "--help" || args[i] == "-h") {
        std::cout << usage_text;
        return 0;
      } else if (config.conninfo.empty() && args[i].rfind("--", 0) != 0) {
        config.conninfo = args[i];
      } else {
        throw std::invalid_argument("unknown argument " + args[i]);
      }
    }
  } catch (const std::exception& e) {
    return usage(e.what());
  }
  if (config.conninfo.empty()) {
    if (const char* url = std::getenv("DATABASE_URL")) config.conninfo = url;
  }
  if (config.conninfo.empty()) return usage("no CONNINFO (or DATABASE_URL)");

  int postmaster = 0;
  try {
    RawConnection probe(config.conninfo);
    const int backend = std::stoi(probe.exec("SELECT pg_backend_pid()"));
    if (const auto f = proc_stat(backend)) postmaster = std::stoi((*f)[1]);
  } catch (const std::exception& e) {
    std::cerr << "syncbus_bench: " << e.what() << "\n";
    return 1;
  }

  std::cout << fmt::format("syncbus_bench: {} s per run, {} hardware threads, server CPU {}\n",
                           config.seconds, std::thread::hardware_concurrency(),
                           postmaster ? "measured" : "not measurable (server not local)");
  bool all_correct = true;
  try {
    for (const auto size : config.sizes) {
      if (stop_requested()) break;
      print_header();
      auto raw = run_raw(config, size, std::nullopt, postmaster);
      raw.load = "saturation";
      print(raw, nullptr);
      all_correct = all_correct && raw.correct;
      const auto saturate = [&](int threads, bool blocking) {
        auto r = run_syncbus(config, size, threads, std::nullopt, postmaster, blocking);
        r.load = "saturation";
        print(r, &raw);
        all_correct = all_correct && r.correct;
        if (!r.rss_after_warmup_kb.empty()) {
          const auto [low, high] =
              std::minmax_element(r.rss_after_warmup_kb.begin(), r.rss_after_warmup_kb.end());
          std::cout << fmt::format(
              "{:<30} resident size after the first minute, every 10 s: {} samples, {} to {} KB "
              "(first {}, last {})\n",
              "", r.rss_after_warmup_kb.size(), *low, *high, r.rss_after_warmup_kb.front(),
              r.rss_after_warmup_kb.back());
          // Each minute's highest sample: a trend shows here, not in the
          // extremes above.
          std::string minutes;
          for (std::size_t i = 0; i < r.rss_after_warmup_kb.size(); i += 6) {
            const auto end = std::min(r.rss_after_warmup_kb.size(), i + 6);
            const auto highest = *std::max_element(r.rss_after_warmup_kb.begin() + i,
                                                   r.rss_after_warmup_kb.begin() + end);
            minutes += fmt::format(" {:.1f}", highest / 1024.0);
          }
          std::cout << fmt::format("{:<30} highest each minute, MB:{}\n", "", minutes);
        }
        if (r.rss_growth_kb > 0) {
          std::cout << fmt::format("{:<30} resident size grew {} KB\n", "", r.rss_growth_kb);
        }
      };
      for (const int threads : config.threads) saturate(threads, false);
      for (const int threads : config.blocking_threads) saturate(threads, true);
      if (config.rate > 0) {  // --rate 0: saturation runs only
        Config round = config;
        round.seconds = config.seconds / 2;
        Result raw_paced, paced;
        for (int i = 0; i < config.rounds && !stop_requested(); ++i) {
          pool(raw_paced, run_raw(round, size, config.rate, postmaster));
          pool(paced, run_syncbus(round, size, 1, config.rate, postmaster, /*blocking=*/true));
        }
        raw_paced.load = paced.load = fmt::format("{}/s", config.rate);
        print(raw_paced, nullptr);
        print(paced, &raw_paced);
        all_correct = all_correct && raw_paced.correct && paced.correct;
      }
      std::cout << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "syncbus_bench: " << e.what() << "\n";
    return 1;
  }
  std::cout << "columns: msg/s delivered to every receiver; latency from publish to handler "
               "(us); cpu/1k and srv/1k: CPU seconds of this process and of the server per "
               "1,000 messages; msg/tx: messages per transaction; ok: every message once, in "
               "order\n";
  if (config.check && !all_correct) {
    std::cerr << "syncbus_bench: a run lost, repeated or reordered messages\n";
    return 1;
  }
  return 0;
}

}  // namespace syncbus::bench
