#include "raw_baseline.hpp"

#include <syncbus/postgres_bus.hpp>

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <thread>

#include "pacing.hpp"
#include "receiver_processes.hpp"

namespace syncbus::bench {
namespace {

using namespace std::chrono_literals;

// `bodies` as a PostgreSQL text[] literal: each element quoted, with its
// backslashes and quotes escaped.
std::string array_literal(const std::vector<std::string>& bodies) {
  std::string out = "{";
  for (const auto& body : bodies) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (const char c : body) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

// A raw receiver's work until `finished()`: each notification read, and for
// spilled sizes its row fetched; `record(payload)` for each.
template <typename Record, typename Finished>
void receive(RawConnection& c, bool spill, const std::string& select_sql, Record record,
             Finished finished) {
  for (;;) {
    pollfd fd{PQsocket(c.get()), POLLIN, 0};
    ::poll(&fd, 1, 10);
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
      record(payload);
    }
    if (finished()) return;
  }
}

}  // namespace

Result run_raw(const Config& config, std::size_t size, std::optional<int> rate, int postmaster,
               std::size_t batch) {
  const std::string channel = fmt::format("syncbus_bench_raw_{}", ::getpid());
  // This process's own table: another benchmark on the same database keeps
  // its own.
  const std::string table = fmt::format("syncbus_bench_raw_spill_{}", ::getpid());
  const std::string select_sql = fmt::format("SELECT body FROM {} WHERE id = $1", table);
  const std::string insert_sql = fmt::format(
      "WITH s AS (INSERT INTO {} (body) VALUES ($2) RETURNING id) SELECT pg_notify($1, id::text) "
      "FROM s",
      table);
  const bool spill =
      config.spill_always || size + 64 >= syncbus::PostgresClusterBus::notify_payload_limit;
  // Identical payloads in one transaction collapse into one: each body of a
  // batch carries its index.
  const bool batched = batch > 1 && !spill && !rate;
  const std::string listen_sql = fmt::format("LISTEN \"{}\"", channel);
  // --receiver-processes: forked before this run opens a connection.
  std::unique_ptr<ReceiverProcesses> processes;
  if (config.receiver_processes) {
    processes = std::make_unique<ReceiverProcesses>(
        static_cast<std::size_t>(config.receivers), [&](ReceiverLink& link) {
          RawConnection c(config.conninfo);
          c.exec(listen_sql.c_str());
          link.ready();
          receive(
              c, spill, select_sql,
              [&](const std::string& payload) { link.record(sent_time_in(payload).value_or(0)); },
              [&] { return link.done(); });
        });
    processes->wait_ready();
  }
  std::size_t transactions = 0;
  RawConnection sender(config.conninfo);
  std::atomic<bool> sending{true};
  std::atomic<std::size_t> sent{0};
  std::atomic<std::int64_t> give_up_ns{INT64_MAX};
  FirstError failure;
  // As many listening connections as syncbus has receiving buses, each
  // doing all the work a receiver does: reading each notification, and for
  // spilled sizes fetching each row.
  struct Receiver {
    explicit Receiver(const std::string& conninfo) : connection(conninfo) {}
    RawConnection connection;
    ReceiverTally tally;
  };
  // --stages, paced runs: when the sender's statement returned, and when
  // each receiver read the message (its whole latency).
  std::optional<StageTimes> stages;
  if (config.stages && rate) stages.emplace(std::vector<std::string>{"committed", "read"});
  std::vector<std::unique_ptr<Receiver>> receivers;
  for (int i = 0; i < config.receivers && !processes; ++i) {
    receivers.push_back(std::make_unique<Receiver>(config.conninfo));
    receivers.back()->connection.exec(listen_sql.c_str());
  }
  std::vector<std::thread> receiving;
  for (auto& r : receivers) {
    receiving.emplace_back([&, self = r.get()] {
      try {
        receive(
            self->connection, spill, select_sql,
            [&](const std::string& payload) {
              const auto now = now_ns();
              const auto sent_at = sent_time_in(payload).value_or(0);
              self->tally.record(now, sent_at);
              if (stages) stages->record(1, now, sent_at);
            },
            [&] {
              return !sending && (self->tally.received() >= sent || now_ns() > give_up_ns.load());
            });
      } catch (...) {
        failure.record(std::current_exception());
      }
    });
  }
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
    const auto statements =
        drive(std::chrono::duration<double>(config.seconds), rate, failure, [&](std::size_t) {
          if (batched) {
            std::vector<std::string> bodies;
            bodies.reserve(batch);
            const auto t = now_ns();
            for (std::size_t i = 0; i < batch; ++i) {
              bodies.push_back(fmt::format(R"({{"t":{},"pad":"{}","i":{}}})", t, pad, i));
            }
            const auto array = array_literal(bodies);
            sender.exec("SELECT pg_notify($1, b) FROM unnest($2::text[]) b",
                        {channel.c_str(), array.c_str()});
            sent += batch;
            return;
          }
          const auto t = now_ns();
          const auto body = fmt::format(R"({{"t":{},"pad":"{}"}})", t, pad);
          if (spill) {
            sender.exec(insert_sql.c_str(), {channel.c_str(), body.c_str()});
          } else {
            sender.exec("SELECT pg_notify($1, $2)", {channel.c_str(), body.c_str()});
          }
          if (stages) stages->record(0, now_ns(), t);
          ++sent;
        });
    count = statements * (batched ? batch : 1);
    transactions = statements;
  } catch (...) {
    failure.record(std::current_exception());
  }
  // After a failure the listener stops at once; otherwise it has 30 s to
  // catch up.
  give_up_ns = now_ns() + (failure.failed() ? 0 : 30'000'000'000LL);
  sending = false;
  for (auto& t : receiving) t.join();
  std::vector<std::unique_ptr<ReceiverTally>> from_processes;
  double processes_cpu = 0;
  if (processes) {
    // Each ends once it has every message, or at the give-up time.
    processes->expect(count, give_up_ns.load());
    try {
      from_processes = processes->collect();
    } catch (...) {
      failure.record(std::current_exception());
    }
    processes_cpu = processes->cpu_seconds();
  }
  if (spill) {
    try {
      sender.exec(fmt::format("DROP TABLE IF EXISTS {}", table).c_str());
    } catch (...) {
      failure.record(std::current_exception());
    }
  }
  failure.rethrow_if_failed(fmt::format("raw libpq, {} bytes", size));
  Result r;
  r.name = batched ? fmt::format("raw libpq, {} per statement", batch) : "raw libpq";
  r.size = size;
  std::vector<const ReceiverTally*> tallies;
  for (const auto& receiver : receivers) tallies.push_back(&receiver->tally);
  for (const auto& t : from_processes) tallies.push_back(t.get());
  const auto last_received_ns = ReceiverTally::pool_into(r, tallies, count, start_ns);
  // Per receiver: each has every message.
  r.delivered_per_second =
      static_cast<double>(r.delivered) * 1e9 /
      static_cast<double>(std::max<std::int64_t>(1, last_received_ns - start_ns));
  // Per message delivered to a receiver, as for syncbus.
  const double per_1000 =
      1000.0 / static_cast<double>(std::max<std::size_t>(1, count * tallies.size()));
  r.process_cpu_per_1000 = (process_cpu() - cpu_before + processes_cpu) * per_1000;
  if (const auto server_after = server_cpu(postmaster); server_after && server_before) {
    r.server_cpu_per_1000 = (*server_after - *server_before) * per_1000;
  }
  r.rss_growth_kb = resident_kb() - rss_before;
  r.transactions = transactions;
  if (stages) r.stages = stages->times();
  return r;
}

}  // namespace syncbus::bench
