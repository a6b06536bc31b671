#include <syncbus/postgres_bus.hpp>

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "bus_config.hpp"
#include "bus_upkeep.hpp"
#include "deadline_timer.hpp"
#include "delivery_queue.hpp"
#include "listener.hpp"
#include "logger.hpp"
#include "message_auth.hpp"
#include "periodic_tasks.hpp"
#include "pg_session.hpp"
#include "preflight.hpp"
#include "publisher.hpp"
#include "spill_store.hpp"
#include "statement_deadline.hpp"
#include "stats_counters.hpp"

namespace syncbus {

// Members are declared in dependency order; the destructor runs close() first
// so that threads stop before the objects they use go away.
struct PostgresClusterBus::impl {
  std::optional<detail::BusConfig> config;  // set first, by the constructor
  std::shared_ptr<detail::StatsCounters> stats = std::make_shared<detail::StatsCounters>();
  detail::Logger log;
  detail::ErrorSink on_error;  // counts, logs, then calls the user's on_error
  std::unique_ptr<detail::MessageAuth> auth;
  std::unique_ptr<detail::SpillStore> store;
  detail::DeadlineTimer deadlines;
  std::optional<detail::BusServices> services;      // the parts' view of the above
  std::unique_ptr<detail::DeliveryQueue> delivery;  // none when publish-only
  std::unique_ptr<detail::Publisher> publisher;
  std::unique_ptr<detail::BusUpkeep> upkeep;       // borrows the publisher's connection
  std::unique_ptr<detail::ListenerLoop> listener;  // none when publish-only
  std::unique_ptr<detail::PeriodicTasks> timers;

  // close() may be called from any thread, from the bus's own callbacks too
  // (a handler, on_error, on_gap, log), concurrently. The first call does
  // the work; see close().
  std::atomic<bool> closed{false};
  std::mutex close_mutex;
  std::condition_variable close_finished;
  enum class CloseState { open, closing, closed } close_state = CloseState::open;
  std::thread::id closing_thread;

  /// True on a thread of this bus: its callbacks run there.
  bool on_own_thread() const noexcept {
    return (listener && listener->runs_on_this_thread()) ||
           (delivery && delivery->runs_on_this_thread()) ||
           (timers && timers->runs_on_this_thread());
  }
};

PostgresClusterBus::PostgresClusterBus(PostgresBusOptions options)
    : impl_(std::make_unique<impl>()) {
  auto& self = *impl_;
  self.config.emplace(detail::BusConfig::resolve(std::move(options)));
  const auto& config = *self.config;
  const auto& opts = config.options();

  self.log = detail::Logger(opts.log, opts.log_level);
  self.on_error = detail::counting_errors(self.stats, opts.on_error, self.log);

  self.auth = std::make_unique<detail::MessageAuth>(opts.secrets);

  // Preflight: the server, the table and this role's privileges, each
  // checked now with an error that says what to fix, rather than found out
  // at the first oversized message.
  auto publishing_session = detail::open_session(opts.conninfo, opts.application_name);
  self.store = std::make_unique<detail::SpillStore>(
      *publishing_session,
      detail::SpillStore::Settings{opts.spill_schema, opts.spill_table, opts.channel,
                                   self.auth->enabled(), opts.max_message_bytes});
  detail::ServerFacts server;
  detail::run_with_deadline(
      self.deadlines, publishing_session->sock(), opts.query_timeout, &self,
      [&] {
        // The server ends a statement no sooner than the bus's own deadline
        // would, whatever the role's statement_timeout says.
        detail::configure_session(*publishing_session, config.connection_statement_timeout());
        server = detail::read_server_facts(*publishing_session);
        detail::check_server(server);
        self.store->ensure_table(*publishing_session, opts.create_spill_table);
        detail::check_privileges(self.store->missing_privileges(
            *publishing_session, /*publishes=*/opts.spill != SpillMode::never,
            /*listens=*/opts.listen));
      },
      [&] {
        return fmt::format("checking the server and the spill table {}",
                           self.store->qualified_name());
      });
  self.services.emplace(detail::BusServices{config, self.log, self.on_error, self.stats,
                                            self.deadlines, *self.auth, *self.store});
  const auto& services = *self.services;
  // A publish-only bus has no handlers: no delivery stage, and its
  // publisher echoes to no one.
  if (opts.listen) {
    self.delivery = std::make_unique<detail::DeliveryQueue>(
        self.on_error,
        // Gaps are logged too, then handed to the application.
        [log = self.log, user = opts.on_gap](const GapEvent& gap) {
          if (gap.range_known()) {
            log(LogLevel::warning, "syncbus: missed {} message(s) of {}: #{} to #{}", gap.count(),
                gap.origin, gap.first_missing, gap.last_missing);
          } else {
            log(LogLevel::warning,
                "syncbus: messages committed while the listener was reconnecting may be missed");
          }
          if (user) user(gap);
        },
        self.stats,
        detail::DeliveryQueue::Capacity{opts.delivery_queue_capacity, opts.delivery_queue_bytes},
        opts.queue_full_policy,
        // With secrets, an origin is remembered after its goodbye, so that a
        // replay of its messages is still a duplicate.
        /*forget_on_goodbye=*/!self.auth->enabled());
  }
  self.publisher = std::make_unique<detail::Publisher>(services, std::move(publishing_session),
                                                       self.delivery.get());
  self.upkeep = std::make_unique<detail::BusUpkeep>(services, *self.publisher);
  auto* upkeep = self.upkeep.get();
  if (opts.listen) {
    self.listener = std::make_unique<detail::ListenerLoop>(
        services, *self.delivery,
        // Proves that LISTEN works on this connection path before any message
        // depends on it (it does not through a transaction pooler).
        [upkeep](const std::string& channel, const std::string& payload) {
          upkeep->probe_notify(channel, payload);
        });
  }
  self.timers = std::make_unique<detail::PeriodicTasks>(upkeep->periodic_tasks(), self.on_error);
  self.log(LogLevel::info,
           "syncbus: bus {} {} channel \"{}\" (PostgreSQL {}, spill {}{}, table {})",
           config.origin(), opts.listen ? "listening on" : "publishing only on", opts.channel,
           server.version,
           opts.spill == SpillMode::overflow ? "overflow"
           : opts.spill == SpillMode::always ? "always"
                                             : "never",
           self.auth->enabled() ? ", signed" : "", self.store->qualified_name());
}

PostgresClusterBus::~PostgresClusterBus() { close(); }

const std::string& PostgresClusterBus::instance_id() const { return impl_->config->origin(); }

const std::string& PostgresClusterBus::channel() const noexcept {
  return impl_->config->options().channel;
}

void PostgresClusterBus::publish(const nlohmann::json& body) { impl_->publisher->publish(body); }

std::future<void> PostgresClusterBus::publish_async(const nlohmann::json& body) {
  return impl_->publisher->publish_async(body);
}

Subscription PostgresClusterBus::subscribe(MessageHandler handler) {
  if (impl_->closed.load()) {
    throw closed_error(
        fmt::format("syncbus: subscribe() on a PostgresClusterBus (channel \"{}\") that "
                    "was closed; create a new bus",
                    impl_->config->options().channel));
  }
  if (!impl_->listener) {
    throw configuration_error(fmt::format(
        "syncbus: subscribe() on a publish-only PostgresClusterBus (channel \"{}\", "
        "PostgresBusOptions::listen = false), which hears nothing; subscribe on a bus made "
        "with listen = true",
        impl_->config->options().channel));
  }
  return impl_->delivery->subscribe(std::move(handler));
}

BusStats PostgresClusterBus::stats() const { return impl_->stats->snapshot(); }

void PostgresClusterBus::close() {
  auto& self = *impl_;
  {
    std::unique_lock<std::mutex> lock(self.close_mutex);
    if (self.close_state != impl::CloseState::open) {
      // Closed already, or being closed. A caller on one of the bus's own
      // threads (a callback), or on the thread running that close (its log
      // line), returns at once: the close in progress may be joining its
      // thread. Anyone else waits until it is done, as close() promises.
      if (self.closing_thread != std::this_thread::get_id() && !self.on_own_thread()) {
        self.close_finished.wait(lock,
                                 [&] { return self.close_state == impl::CloseState::closed; });
      }
      return;
    }
    self.close_state = impl::CloseState::closing;
    self.closing_thread = std::this_thread::get_id();
  }
  self.closed.store(true);
  // Each stop() joins its thread, but not from that very thread: a close()
  // made by a callback lets its own thread end by itself, and the
  // destructor joins it. Publishing stops first (after the heartbeats,
  // which use its connection): from here on publish() throws closed_error,
  // as subscribe() does, whoever calls it.
  self.timers->stop();
  self.publisher->close();
  self.log(LogLevel::info, "syncbus: bus {} closing", self.config->origin());
  if (self.listener) self.listener->stop();
  if (self.delivery) self.delivery->stop();
  {
    std::lock_guard<std::mutex> lock(self.close_mutex);
    self.close_state = impl::CloseState::closed;
  }
  self.close_finished.notify_all();
}

std::int64_t PostgresClusterBus::vacuum(std::chrono::milliseconds older_than) {
  return impl_->upkeep->vacuum(older_than);
}

}  // namespace syncbus
