#include "bus_parts.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/transaction>

#include "bus_upkeep.hpp"
#include "delivery_queue.hpp"
#include "listener.hpp"
#include "message_auth.hpp"
#include "periodic_tasks.hpp"
#include "pg_session.hpp"
#include "position_token.hpp"
#include "preflight.hpp"
#include "publisher.hpp"
#include "resume.hpp"
#include "resume_reader.hpp"
#include "spill_store.hpp"
#include "statement_deadline.hpp"

namespace syncbus::detail {
namespace {

/// How long subscribe_from()'s check of a position waits for a lock on the
/// removal log, on the publishing session, before leaving the check to the
/// read (a publish waits for it at most that long).
constexpr std::chrono::milliseconds check_lock_wait{100};

}  // namespace

BusParts::BusParts(PostgresBusOptions options, ChannelTap tap) : tap_(std::move(tap)) {
  config_.emplace(BusConfig::resolve(std::move(options)));
  const auto& config = *config_;
  const auto& opts = config.options();

  log_ = Logger(opts.log, opts.log_level);
  on_error_ = counting_errors(stats_, opts.on_error, log_);

  auth_ = std::make_unique<MessageAuth>(opts.secrets);

  // Preflight: the server, the table and this role's privileges, each
  // checked now with an error that says what to fix, rather than found out
  // at the first oversized message.
  auto publishing_session = open_session(opts.conninfo, opts.application_name);
  store_ = std::make_unique<SpillStore>(
      *publishing_session, SpillStore::Settings{opts.spill_schema, opts.spill_table, opts.channel,
                                                auth_->enabled(), opts.max_message_bytes});
  ServerFacts server;
  bool table_missing = false;
  bool has_removal_log = false;
  std::string database;  // read_database_identity(), for positions
  run_with_deadline(
      deadlines_, publishing_session->sock(), opts.query_timeout, this,
      [&] {
        // The server ends a statement no sooner than the bus's own deadline
        // would, whatever the role's statement_timeout says.
        configure_session(*publishing_session, config.connection_statement_timeout());
        server = read_server_facts(*publishing_session);
        check_server(server);
        if (opts.spill != SpillMode::never) {
          if (const auto problem = read_only_problem(server); !problem.empty()) {
            throw configuration_error("syncbus: " + problem);
          }
        }
        // A bus that writes no rows (SpillMode::never) and may not create
        // the table starts without it (`syncbus tail` on a database no bus
        // has used yet): it reads others' spilled messages once it exists.
        table_missing = opts.spill == SpillMode::never && !opts.create_spill_table &&
                        !store_->exists(*publishing_session);
        if (table_missing) return;
        store_->ensure_table(*publishing_session, opts.create_spill_table);
        if (config.durable() && opts.listen) {
          has_removal_log = store_->has_removal_log(*publishing_session);
          gives_positions_ = has_removal_log && store_->may_read_removal_log(*publishing_session);
          if (gives_positions_) database = read_database_identity(*publishing_session);
        }
        check_privileges(store_->missing_privileges(*publishing_session,
                                                    /*publishes=*/opts.spill != SpillMode::never,
                                                    /*listens=*/opts.listen));
      },
      [&] {
        return fmt::format("checking the server and the spill table {}", store_->qualified_name());
      });
  if (table_missing) {
    log_(LogLevel::warning,
         "syncbus: the spill table {} does not exist yet; this bus writes no rows and creates "
         "none, so it starts without it, and reads the spilled messages of others once a bus "
         "or a migration has created it",
         store_->qualified_name());
  }
  if (config.durable() && opts.listen && !gives_positions_) {
    log_(LogLevel::warning,
         "syncbus: {}: this bus gives no positions, and subscribe_from() is refused. {}",
         has_removal_log ? "this role may not read the spill table's removal log"
                         : "the spill table's removal log does not exist, and this role may "
                           "not make it",
         has_removal_log
             ? fmt::format("Grant it: GRANT SELECT ON {} TO <this role>;",
                           store_->removal_log_name())
             : fmt::format("Make it (as the table's owner) with:\n{}", store_->removal_log_sql()));
  }
  if (gives_positions_) {
    position_key_ =
        position_channel_key({database, opts.spill_schema, opts.spill_table, opts.channel});
  }
  services_.emplace(
      BusServices{config, log_, on_error_, stats_, deadlines_, *auth_, *store_, tap_});
  const auto& services = *services_;
  // A publish-only bus has no handlers: no delivery stage, and its
  // publisher echoes to no one.
  if (opts.listen) {
    delivery_ = std::make_unique<DeliveryQueue>(
        on_error_,
        // Gaps are logged too, then handed to the application.
        [log = log_, user = opts.on_gap](const GapEvent& gap) {
          if (gap.range_known()) {
            log(LogLevel::warning, "syncbus: missed {} message(s) of {}: #{} to #{}", gap.count(),
                gap.origin, gap.first_missing, gap.last_missing);
          } else {
            log(LogLevel::warning,
                "syncbus: messages committed while the listener was reconnecting may be missed");
          }
          if (user) user(gap);
        },
        stats_, DeliveryQueue::Capacity{opts.delivery_queue_capacity, opts.delivery_queue_bytes},
        opts.queue_full_policy,
        // With secrets, an origin is remembered after its goodbye, so that a
        // replay of its messages is still a duplicate.
        /*forget_on_goodbye=*/!auth_->enabled(), tap_.on_delivered,
        // Where every message is a row, each one delivered says where the
        // stream stands (ClusterMessage::position).
        position_key_);
  }
  publisher_ =
      std::make_unique<Publisher>(services, std::move(publishing_session), delivery_.get());
  upkeep_ = std::make_unique<BusUpkeep>(services, *publisher_);
  auto* upkeep = upkeep_.get();
  if (opts.listen) {
    listener_ = std::make_unique<ListenerLoop>(
        services, *delivery_,
        // Proves that LISTEN works on this connection path before any message
        // depends on it (it does not through a transaction pooler).
        [upkeep](const std::string& channel, const std::string& payload) {
          upkeep->probe_notify(channel, payload);
        });
  }
  timers_ = std::make_unique<PeriodicTasks>(upkeep->periodic_tasks(), on_error_);
  log_(LogLevel::info, "syncbus: bus {} {} channel \"{}\" (PostgreSQL {}, spill {}{}, table {})",
       config.origin(), opts.listen ? "listening on" : "publishing only on", opts.channel,
       server.version,
       opts.spill == SpillMode::overflow ? "overflow"
       : opts.spill == SpillMode::always ? "always"
                                         : "never",
       auth_->enabled() ? ", signed" : "", store_->qualified_name());
}

BusParts::~BusParts() { close(); }

bool BusParts::on_own_thread() const noexcept {
  {
    std::lock_guard<std::mutex> lock(reader_mutex_);
    if (reader_ && reader_->runs_on_this_thread()) return true;
  }
  return (listener_ && listener_->runs_on_this_thread()) ||
         (delivery_ && delivery_->runs_on_this_thread()) ||
         (timers_ && timers_->runs_on_this_thread());
}

void BusParts::publish(const nlohmann::json& body) { publisher_->publish(body); }

std::future<void> BusParts::publish_async(const nlohmann::json& body) {
  return publisher_->publish_async(body);
}

Subscription BusParts::subscribe(MessageHandler handler) {
  const auto& channel = config_->options().channel;
  if (closed_.load()) {
    throw closed_error(
        fmt::format("syncbus: subscribe() on a PostgresClusterBus (channel \"{}\") that "
                    "was closed; create a new bus",
                    channel));
  }
  if (!listener_) {
    throw configuration_error(fmt::format(
        "syncbus: subscribe() on a publish-only PostgresClusterBus (channel \"{}\", "
        "PostgresBusOptions::listen = false), which hears nothing; subscribe on a bus made "
        "with listen = true",
        channel));
  }
  return delivery_->subscribe(std::move(handler));
}

Subscription BusParts::subscribe_from(std::string_view position, MessageHandler handler) {
  const auto& opts = config_->options();
  const auto& channel = opts.channel;
  const auto closed = [&] {
    return closed_error(fmt::format(
        "syncbus: subscribe_from() on a PostgresClusterBus (channel \"{}\") that was closed; "
        "create a new bus",
        channel));
  };
  if (closed_.load()) throw closed();
  if (!listener_) {
    throw configuration_error(fmt::format(
        "syncbus: subscribe_from() on a publish-only PostgresClusterBus (channel \"{}\", "
        "PostgresBusOptions::listen = false), which hears nothing; subscribe on a bus made "
        "with listen = true",
        channel));
  }
  if (!config_->durable()) {
    throw configuration_error(fmt::format(
        "syncbus: subscribe_from() on a PostgresClusterBus in SpillMode::{} (channel \"{}\"): "
        "resuming from a position needs SpillMode::always on every bus of the channel, where "
        "every message is a row of the spill table that another bus can read after a position; "
        "here most messages travel only as NOTIFYs, gone once delivered",
        opts.spill == SpillMode::overflow ? "overflow" : "never", channel));
  }
  if (!gives_positions_) {
    throw configuration_error(fmt::format(
        "syncbus: subscribe_from() on channel \"{}\": when this bus started, the removal log "
        "{} did not exist or this role could not read it, so it cannot tell a position that "
        "vacuum has outrun from one it has not. Make it (as the table's owner) if it is "
        "missing, grant SELECT on it to this role, then start the bus again:\n{}",
        channel, store_->removal_log_name(), store_->removal_log_sql()));
  }
  if (!handler) {
    throw configuration_error(
        "syncbus: subscribe_from() was given an empty handler; pass a callable");
  }
  auto from = decode_position(position_key_, position);
  // The common case of an expired position fails here, at once; a vacuum
  // that overtakes it before its read begins is found by the read (which
  // then reports it: see position_expired). The check borrows the
  // publishing session, so it waits for no lock: behind an exclusive lock on
  // the removal log it once held publish() for query_timeout, and a message
  // was lost (found from outside, round 7). A check that cannot have its
  // lock at once is left to the read, which makes it again on its own
  // session.
  std::optional<SpillStore::Removed> removed;
  const auto check = [&] {
    publisher_->borrow_connection(
        "subscribe_from()", opts.query_timeout,
        [&](Session& session) {
          pqxx::read_transaction txn(session);
          txn.exec0(fmt::format("SET LOCAL lock_timeout = {}", check_lock_wait.count()));
          removed = store_->removed_after(txn, from.snapshot, from.cursors);
          txn.commit();
        },
        fmt::format("checking a position against {}", store_->removal_log_name()));
  };
  const auto check_unless_locked = [&] {
    try {
      check();
    } catch (const database_error& e) {
      if (e.sqlstate() != "55P03") throw;  // lock_not_available: the read checks
    }
  };
  try {
    check_unless_locked();
  } catch (const timeout_error&) {
    throw;
  } catch (const connection_error&) {
    // The publishing session broke since it last ran a statement (a server
    // restart it has not published through yet): once more, on a new one.
    check_unless_locked();
  }
  if (removed) {
    throw position_expired(
        fmt::format("syncbus: the position given to subscribe_from() on channel \"{}\" has "
                    "expired: vacuum deleted rows it leaves out ({} up to #{}). Give the client "
                    "what it gets without a position (a fresh snapshot), or keep rows longer "
                    "(a larger vacuum age)",
                    channel, removed->origin, removed->sequence),
        std::string(position));
  }
  auto resume =
      std::make_shared<Resume>(std::move(from), std::move(handler), std::string(position));
  ResumeReader* reader = nullptr;
  {
    std::lock_guard<std::mutex> lock(reader_mutex_);
    // Under the lock that close() takes to stop it: none is made after.
    if (closed_.load()) throw closed();
    if (!reader_) reader_ = std::make_unique<ResumeReader>(*services_, *delivery_, position_key_);
    reader = reader_.get();
  }
  auto subscription = delivery_->subscribe_resuming(resume);
  reader->add(std::move(resume));
  return subscription;
}

std::int64_t BusParts::vacuum(std::chrono::milliseconds older_than) {
  return upkeep_->vacuum(older_than);
}

void BusParts::close() {
  {
    std::unique_lock<std::mutex> lock(close_mutex_);
    if (close_state_ != CloseState::open) {
      // Closed already, or being closed. A caller on one of the bus's own
      // threads (a callback), or on the thread running that close (its log
      // line), returns at once: the close in progress may be joining its
      // thread. Anyone else waits until it is done, as close() promises.
      if (closing_thread_ != std::this_thread::get_id() && !on_own_thread()) {
        close_finished_.wait(lock, [&] { return close_state_ == CloseState::closed; });
      }
      return;
    }
    close_state_ = CloseState::closing;
    closing_thread_ = std::this_thread::get_id();
  }
  closed_.store(true);
  // Each stop() joins its thread, but not from that very thread: a close()
  // made by a callback lets its own thread end by itself, and the
  // destructor joins it. Publishing stops first (after the heartbeats,
  // which use its connection): from here on publish() throws closed_error,
  // as subscribe() does, whoever calls it.
  timers_->stop();
  publisher_->close();
  log_(LogLevel::info, "syncbus: bus {} closing", config_->origin());
  if (listener_) listener_->stop();
  if (delivery_) delivery_->stop();
  // After the queue, which frees a reader waiting for room in it; not
  // under the lock, which a callback on the reader's thread may need
  // (on_own_thread) while this joins it.
  ResumeReader* reader = nullptr;
  {
    std::lock_guard<std::mutex> lock(reader_mutex_);
    reader = reader_.get();
  }
  if (reader) reader->stop();
  {
    std::lock_guard<std::mutex> lock(close_mutex_);
    close_state_ = CloseState::closed;
  }
  close_finished_.notify_all();
}

}  // namespace syncbus::detail
