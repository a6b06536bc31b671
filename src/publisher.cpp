#include "publisher.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>

#include <algorithm>
#include <thread>

#include "envelope.hpp"
#include "pg_session.hpp"
#include "spill_decision.hpp"
#include "statement_deadline.hpp"

namespace syncbus::detail {
namespace {

constexpr const char* notify_statement = "syncbus_notify";

}  // namespace

Publisher::Publisher(std::unique_ptr<Session> session, std::string conninfo,
                     std::string application_name, const SpillStore& store, std::string channel,
                     std::string origin, SpillMode mode, std::shared_ptr<StatsCounters> stats,
                     DeadlineTimer& deadlines, std::chrono::milliseconds publish_timeout,
                     std::chrono::milliseconds query_timeout)
    : session_(std::move(session)),
      conninfo_(std::move(conninfo)),
      application_name_(std::move(application_name)),
      store_(store),
      channel_(std::move(channel)),
      origin_(std::move(origin)),
      mode_(mode),
      stats_(std::move(stats)),
      deadlines_(deadlines),
      publish_timeout_(publish_timeout),
      query_timeout_(query_timeout) {
  ascii_only_ = needs_ascii_payloads(*session_);
  prepare(*session_);
}

void Publisher::prepare(Session& session) {
  try {
    session.prepare(notify_statement, "SELECT pg_notify($1, $2)");
    store_.prepare(session);
  } catch (...) {
    rethrow_as_syncbus_error("preparing the publisher's statements");
  }
}

template <typename Work, typename Describe>
auto Publisher::with_session(std::chrono::milliseconds timeout, Work&& work, Describe&& describe) {
  try {
    Session& open = session();
    return run_with_deadline(
        deadlines_, open.sock(), timeout, this, [&] { return work(open); }, describe);
  } catch (const connection_error&) {
    session_.reset();  // timed out or broken: reconnect on the next call
    throw;
  }
}

Session& Publisher::session() {
  if (!session_) {
    auto fresh = open_session(conninfo_, application_name_);
    prepare(*fresh);
    session_ = std::move(fresh);
  }
  return *session_;
}

void Publisher::publish(const nlohmann::json& body) {
  // Serialising needs no lock and is the costliest step for large bodies.
  const std::string body_json = serialize_body(body, ascii_only_);

  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) {
    throw closed_error(
        fmt::format("syncbus: publish() on a PostgresClusterBus (channel \"{}\") that was "
                    "closed; create a new bus",
                    channel_));
  }
  const std::uint64_t sequence = last_sequence_ + 1;
  std::string envelope = encode_inline(origin_, sequence, body_json);
  // Throws before the sequence number is used (SpillMode::never).
  const Route route = choose_route(mode_, envelope.size());
  last_sequence_ = sequence;
  const auto describe = [&] {
    return fmt::format("publishing message {}#{} ({} bytes) to channel \"{}\"", origin_, sequence,
                       body_json.size(), channel_);
  };
  const auto send = [&](Session& session) {
    if (route == Route::inline_payload) {
      pqxx::nontransaction statement(session);
      statement.exec_prepared(notify_statement, channel_, envelope);
    } else {
      store_.store_and_notify(session, origin_, sequence, body_json,
                              encode_spill_pointer(origin_, sequence));
    }
  };
  // A lost connection is retried, with the same origin and sequence, until
  // the deadline: a repeat of an inline message that did commit is dropped by
  // receivers as a duplicate, and a spilled one hits the table's unique key,
  // which proves the first attempt committed.
  const auto deadline = std::chrono::steady_clock::now() + publish_timeout_;
  auto pause = std::chrono::milliseconds(20);
  for (bool retry = false;; retry = true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    try {
      with_session(std::max(left, std::chrono::milliseconds(1)), send, describe);
      break;
    } catch (const timeout_error&) {
      throw;
    } catch (const connection_error& e) {
      if (std::chrono::steady_clock::now() + pause >= deadline) {
        throw timeout_error(
            fmt::format("syncbus: could not publish within {} ms ({}); last error: {}",
                        publish_timeout_.count(), describe(), e.what()));
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(500));
    } catch (const database_error& e) {
      // On a first attempt the same key would mean another live bus uses
      // this instance id: that is an error, not a success.
      if (retry && route == Route::spill_table && e.sqlstate() == "23505") break;
      throw;
    }
  }
  last_sent_ = std::chrono::steady_clock::now();
  StatsCounters::add(stats_->published);
  if (route == Route::spill_table) StatsCounters::add(stats_->spilled);
}

void Publisher::heartbeat_if_idle(std::chrono::milliseconds idle) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_ || last_sequence_ == 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_sent_ < idle) return;
  with_session(
      publish_timeout_,
      [&](Session& session) {
        pqxx::nontransaction statement(session);
        statement.exec_prepared(notify_statement, channel_,
                                encode_heartbeat(origin_, last_sequence_));
      },
      [&] { return fmt::format("sending a heartbeat to channel \"{}\"", channel_); });
  last_sent_ = now;
}

double Publisher::notification_queue_usage() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) return 0;
  return with_session(
      query_timeout_,
      [](Session& session) {
        return pqxx::nontransaction(session)
            .exec1("SELECT pg_notification_queue_usage()")[0]
            .as<double>();
      },
      [] { return std::string("reading pg_notification_queue_usage()"); });
}

std::int64_t Publisher::terminate_stuck_listeners(std::chrono::milliseconds stuck_after) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) return 0;
  return with_session(
      query_timeout_,
      [&](Session& session) {
        // 'idle in transaction': get_notifs() sees nothing while a transaction
        // is open, and the session pins the queue tail. ClientWrite: the
        // server is blocked sending to a client that stopped reading.
        return pqxx::nontransaction(session)
            .exec_params1(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name LIKE 'syncbus:%' AND pid <> pg_backend_pid() "
                "AND ((state = 'idle in transaction' AND state_change < now() - $1::bigint * "
                "interval '1 millisecond') OR (wait_event = 'ClientWrite' AND "
                "state_change < now() - $1::bigint * interval '1 millisecond'))",
                static_cast<std::int64_t>(stuck_after.count()))[0]
            .as<std::int64_t>();
      },
      [] { return std::string("looking for stuck listeners in pg_stat_activity"); });
}

std::int64_t Publisher::vacuum(std::chrono::milliseconds older_than) {
  if (older_than.count() < 0) {
    throw configuration_error(
        fmt::format("syncbus: vacuum() was given a negative age ({} ms); pass how old a "
                    "spill row must be to be deleted, e.g. std::chrono::minutes(1)",
                    older_than.count()));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) {
    throw closed_error(
        "syncbus: vacuum() on a PostgresClusterBus that was "
        "closed; create a new bus or use another open one");
  }
  return with_session(
      query_timeout_, [&](Session& session) { return store_.vacuum(session, older_than); },
      [&] { return fmt::format("vacuuming the spill table {}", store_.qualified_name()); });
}

void Publisher::close() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  session_.reset();
}

}  // namespace syncbus::detail
