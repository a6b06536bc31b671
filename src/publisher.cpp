#include "publisher.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>

#include <algorithm>

#include "array_parameter.hpp"
#include "backoff.hpp"
#include "envelope.hpp"
#include "failure.hpp"
#include "pg_session.hpp"
#include "pg_snapshot.hpp"
#include "statement_deadline.hpp"

namespace syncbus::detail {
namespace {

constexpr const char* notify_statement = "syncbus_notify";
constexpr const char* notify_many_statement = "syncbus_notify_many";

// A batch is at most this many messages, and stops growing past this many
// bytes of bodies (a single larger message still goes, alone): bigger
// statements cost the server more per message (fresh memory for each, page
// by page), not less. Measured with 16 senders of 20 KB messages, in
// interleaved runs: 1 MB batches averaged 10,850 msg/s, 256 KB 12,070; at
// 2 KB the two were within the noise.
constexpr std::size_t max_batch_messages = 1024;
constexpr std::size_t max_batch_bytes = 256 * 1024;

}  // namespace

struct Publisher::Outgoing {
  std::string body_json;
  std::chrono::steady_clock::time_point deadline;
  // Set once, under the publisher's mutex.
  bool finished = false;
  std::optional<Failure> failure;             // raised by the caller, on its own thread
  std::optional<std::promise<void>> promise;  // publish_async()
};

Publisher::Publisher(const BusServices& services, std::unique_ptr<Session> session,
                     DeliveryQueue* echo)
    : config_(services.config),
      options_(services.config.options()),
      store_(services.store),
      auth_(services.auth),
      echo_(echo),
      stats_(services.stats) {
  connection_ = std::make_unique<BusConnection>(
      std::move(session),
      BusConnection::Settings{options_.conninfo, options_.application_name,
                              config_.connection_statement_timeout()},
      services.deadlines, [this](Session& fresh) { set_up(fresh); }, options_.query_timeout);
  connection_->run(
      options_.query_timeout,
      [&](Session& first) {
        ascii_only_ = needs_ascii_payloads(first);
        // This origin's birth: a transaction of its own, committed before
        // any message, whose id receivers compare with their own start.
        born_ = parse_xid(
            pqxx::nontransaction(first).exec1("SELECT pg_current_xact_id()::text")[0].c_str());
      },
      [] { return std::string("reading the server encoding and this origin's birth"); });
}

Publisher::~Publisher() { close(); }

void Publisher::identify(Session& session) {
  const auto asked = ServerClock::Clock::now();
  const auto row = pqxx::nontransaction(session).exec1(
      "SELECT pg_backend_pid(), (extract(epoch FROM clock_timestamp()) * 1000)::bigint");
  clock_.calibrate(row[1].as<std::int64_t>(), asked, ServerClock::Clock::now());
  session_pid_ = row[0].as<std::uint64_t>();
}

void Publisher::set_up(Session& session) {
  prepare(session);
  identify(session);
}

void Publisher::prepare(Session& session) {
  try {
    session.prepare(notify_statement, "SELECT pg_notify($1, $2)");
    // Payloads in array order (unnest yields them in order). A
    // binary text[] (array_parameter.hpp): the server neither unescapes nor
    // parses them.
    session.prepare(notify_many_statement, "SELECT pg_notify($1, unnest($2::text[]))");
    store_.prepare(session);
  } catch (...) {
    rethrow_as_syncbus_error("preparing the publisher's statements");
  }
}

template <typename Work, typename Describe>
auto Publisher::on_connection(std::chrono::milliseconds timeout, Work&& work, Describe&& describe) {
  return connection_->run(
      timeout,
      [&](Session& session) {
        // The server's clock may have stepped since it was read (ServerClock).
        if (clock_.due()) identify(session);
        return work(session);
      },
      describe);
}

void Publisher::borrow_connection(const char* call, std::chrono::milliseconds timeout,
                                  const std::function<void(Session&)>& work,
                                  const std::string& what) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return closed_ || !connection_busy_; });
  if (closed_) throw closed(call);
  connection_busy_ = true;
  lock.unlock();
  struct Release {
    Publisher& self;
    ~Release() {
      std::lock_guard<std::mutex> relock(self.mutex_);
      self.connection_busy_ = false;
      self.changed_.notify_all();
    }
  } release{*this};
  on_connection(timeout, work, [&] { return what; });
}

closed_error Publisher::closed(const char* call) const {
  return closed_error(fmt::format(
      "syncbus: {} on a PostgresClusterBus (channel \"{}\") that was closed; create a new bus",
      call, options_.channel));
}

std::shared_ptr<Publisher::Outgoing> Publisher::make_outgoing(const nlohmann::json& body) const {
  auto item = std::make_shared<Outgoing>();
  // Serialising needs no lock and is the costliest step for large bodies.
  item->body_json = serialize_body(body, ascii_only_);
  if (item->body_json.size() > options_.max_message_bytes) {
    throw payload_too_large(
        fmt::format("syncbus: message body is {} bytes, over this bus's limit of {} "
                    "(PostgresBusOptions::max_message_bytes, which receivers enforce too); "
                    "nothing was sent",
                    item->body_json.size(), options_.max_message_bytes),
        item->body_json.size(), options_.max_message_bytes);
  }
  item->deadline = std::chrono::steady_clock::now() + options_.publish_timeout;
  return item;
}

void Publisher::publish(const nlohmann::json& body) {
  auto item = make_outgoing(body);
  std::unique_lock<std::mutex> lock(mutex_);
  wait_for_room(lock, *item, "publish()");
  queue_.push_back(item);
  while (!item->finished) {
    if (connection_busy_) {
      changed_.wait(lock);
    } else {
      send_next_batch(lock);
    }
  }
  if (item->failure) item->failure->raise();
}

std::future<void> Publisher::publish_async(const nlohmann::json& body) {
  std::promise<void> promise;
  auto future = promise.get_future();
  try {
    auto item = make_outgoing(body);
    std::unique_lock<std::mutex> lock(mutex_);
    if (!background_sender_.joinable() && !closed_) {
      background_sender_ = std::thread([this] { run_background_sender(); });
    }
    wait_for_room(lock, *item, "publish_async()");
    item->promise = std::move(promise);
    queue_.push_back(std::move(item));
    if (!connection_busy_) changed_.notify_all();
  } catch (...) {
    // Every outcome goes through the future, refusals included.
    promise.set_exception(std::current_exception());
  }
  return future;
}

void Publisher::wait_for_room(std::unique_lock<std::mutex>& lock, const Outgoing& item,
                              const char* call) {
  const auto size = item.body_json.size();
  // A message larger than the whole queue still goes, alone.
  while (!closed_ && queued_bytes_ > 0 && queued_bytes_ + size > options_.publish_queue_bytes) {
    if (room_.wait_until(lock, item.deadline) == std::cv_status::timeout && queued_bytes_ > 0 &&
        queued_bytes_ + size > options_.publish_queue_bytes && !closed_) {
      throw timeout_error(fmt::format(
          "syncbus: {} waited {} ms for room in the publish queue ({} bytes waiting, limit {}: "
          "PostgresBusOptions::publish_queue_bytes); PostgreSQL is not keeping up with this "
          "bus's publishers. Nothing was sent",
          call, options_.publish_timeout.count(), queued_bytes_, options_.publish_queue_bytes));
    }
  }
  if (closed_) throw closed(call);
  queued_bytes_ += size;
}

void Publisher::run_background_sender() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return closed_ || (!queue_.empty() && !connection_busy_); });
    if (closed_) return;
    send_next_batch(lock);
  }
}

void Publisher::send_next_batch(std::unique_lock<std::mutex>& lock) {
  connection_busy_ = true;
  if (options_.publish_linger.count() > 0 && queue_.size() < max_batch_messages) {
    // Trading latency for fuller batches, on request only.
    lock.unlock();
    std::this_thread::sleep_for(options_.publish_linger);
    lock.lock();
  }
  Batch batch;
  std::size_t bytes = 0;
  while (!queue_.empty() && batch.size() < max_batch_messages &&
         (batch.empty() || bytes + queue_.front()->body_json.size() <= max_batch_bytes)) {
    bytes += queue_.front()->body_json.size();
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  queued_bytes_ -= bytes;
  room_.notify_all();
  lock.unlock();
  send(batch);
  lock.lock();
  for (auto& item : batch) {
    item->finished = true;
    if (item->promise) {
      if (item->failure) {
        fail_promise(*item);
      } else {
        item->promise->set_value();
      }
    }
  }
  connection_busy_ = false;
  changed_.notify_all();
}

void Publisher::send(Batch& batch) {
  const auto& origin = config_.origin();
  std::vector<std::string_view> bodies;
  bodies.reserve(batch.size());
  for (const auto& item : batch) bodies.push_back(item->body_json);
  // Numbers and routes first: a message refused here (too large for
  // SpillMode::never) uses no sequence number, and the others stay
  // consecutive.
  const auto plan = plan_batch(sender(), options_.spill, last_sequence_, bodies);
  for (const auto& refusal : plan.refused) batch[refusal.index]->failure = refusal.failure;
  last_sequence_ = plan.last_sequence;
  const auto& accepted = plan.accepted;
  if (accepted.empty()) return;

  // Framed for the session that sends them: signed envelopes name its
  // server process (a retry on a new session is framed again, or receivers
  // would take it for a replay), and envelopes and rows say when they were
  // sent (and signed).
  Frames frames;
  std::uint64_t sent_ms = 0;
  std::chrono::steady_clock::time_point sent_at;  // the same moment, for the local echo
  std::optional<std::uint64_t> framed_for;        // the session_pid_ they were framed for
  std::vector<std::string_view> payload_views;
  const auto describe = [&] {
    const auto first = accepted.front().sequence;
    const auto last = accepted.back().sequence;
    return first == last
               ? fmt::format("publishing message {}#{} ({} bytes) to channel \"{}\"", origin, first,
                             bodies[accepted.front().index].size(), options_.channel)
               : fmt::format("publishing messages {}#{}..{} to channel \"{}\"", origin, first, last,
                             options_.channel);
  };
  const auto statement = [&](Session& session) {
    if (framed_for != session_pid_) {
      const auto now = sender();
      frames = frame_batch(now, plan, bodies);
      sent_ms = now.sent_ms;
      sent_at = std::chrono::steady_clock::now();
      framed_for = session_pid_;
      payload_views.assign(frames.payloads.begin(), frames.payloads.end());
    }
    if (!frames.spilled_sequences.empty()) {
      store_.store_batch_and_notify(session, origin, {born_, sent_ms}, frames);
    } else if (frames.payloads.size() == 1) {
      pqxx::nontransaction(session).exec_prepared(notify_statement, options_.channel,
                                                  frames.payloads.front());
    } else {
      pqxx::nontransaction(session).exec_prepared(notify_many_statement, options_.channel,
                                                  text_array(payload_views));
    }
  };

  // One statement, so one transaction: all of the batch commits, or none.
  // A lost connection is retried, with the same numbers, until the first
  // message's deadline: a repeat of inline messages that did commit is
  // dropped by receivers as duplicates, and of spilled ones hits the table's
  // unique key, which proves the first attempt committed.
  const auto deadline = batch.front()->deadline;
  try {
    for (unsigned failures = 0;; ++failures) {
      const bool retry = failures > 0;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      try {
        on_connection(std::max(left, std::chrono::milliseconds(1)), statement, describe);
        break;
      } catch (const timeout_error&) {
        throw;
      } catch (const connection_error& e) {
        if (connection_->closing()) throw;
        const auto pause = publish_retry_backoff.after(failures + 1);
        if (std::chrono::steady_clock::now() + pause >= deadline) {
          throw timeout_error(
              fmt::format("syncbus: could not publish within {} ms ({}); last error: {}",
                          options_.publish_timeout.count(), describe(), e.what()));
        }
        if (!connection_->pause(pause)) throw;
      } catch (const database_error& e) {
        // On a first attempt the same key would mean another live bus uses
        // this instance id: that is an error, not a success.
        if (retry && !frames.spilled_sequences.empty() && e.sqlstate() == "23505") break;
        throw;
      }
    }
  } catch (...) {
    const auto failure = Failure::of(std::current_exception());
    for (const auto& a : accepted) batch[a.index]->failure = failure;
    // This bus's own subscribers hear of its messages from it, not from the
    // server (echo_, below): they learn at once that these are missing. A
    // failure may hide a commit (a timeout at COMMIT): to them it is a loss
    // all the same, as to everyone who did not hear of it.
    if (echo_ != nullptr) {
      std::vector<Inbound> lost;
      lost.reserve(accepted.size());
      for (const auto& a : accepted) {
        lost.push_back({Inbound::Kind::lost, {origin, a.sequence, {}, {}}});
      }
      echo_->post(std::move(lost));
    }
    return;
  }
  last_sent_ = std::chrono::steady_clock::now();
  StatsCounters::add(stats_->published, accepted.size());
  StatsCounters::add(stats_->spilled, frames.spilled_sequences.size());
  StatsCounters::add(stats_->publish_batches);
  // Committed: this bus's own subscribers get the messages from here, in
  // order, without a round trip through the server (its listener skips its
  // own origin). The body stays JSON text until a handler needs it.
  if (echo_ != nullptr) {
    std::vector<Inbound> echoed;
    echoed.reserve(accepted.size());
    for (const auto& a : accepted) {
      Inbound item{Inbound::Kind::message, {origin, a.sequence, {}, {}}};
      auto& body = batch[a.index]->body_json;
      item.body_bytes = body.size();
      item.body_text = std::make_shared<const std::string>(std::move(body));
      item.sent_at = sent_at;
      echoed.push_back(std::move(item));
    }
    echo_->post(std::move(echoed));
  }
}

void Publisher::heartbeat_if_idle(std::chrono::milliseconds idle) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
  }
  borrow_connection(
      "heartbeat", options_.publish_timeout,
      [&](Session& session) {
        const auto now = std::chrono::steady_clock::now();
        if (last_sequence_ == 0 || now - last_sent_ < idle) return;
        pqxx::nontransaction(session).exec_prepared(notify_statement, options_.channel,
                                                    frame_heartbeat(sender(), last_sequence_));
        last_sent_ = now;
      },
      fmt::format("sending a heartbeat to channel \"{}\"", options_.channel));
}

void Publisher::fail_promise(Outgoing& item) {
  constexpr std::size_t kept_at_most = 1000;
  if (failed_promises_.size() >= kept_at_most) failed_promises_.clear();
  item.promise->set_exception(item.failure->as_exception_ptr());
  failed_promises_.push_back(std::move(*item.promise));
  item.promise.reset();
}

void Publisher::fail_queued() {
  // Nothing queued is sent any more; a send in flight finishes (or is cut).
  const auto error = closed("publish()");
  for (auto& item : queue_) {
    item->finished = true;
    item->failure = Failure::of(std::make_exception_ptr(error));
    if (item->promise) fail_promise(*item);
  }
  queue_.clear();
  queued_bytes_ = 0;
  room_.notify_all();
  changed_.notify_all();
}

void Publisher::say_goodbye() noexcept {
  // Short: close() must return at once, also when the server is frozen.
  constexpr std::chrono::milliseconds goodbye_timeout{200};
  try {
    connection_->run(
        goodbye_timeout,
        [&](Session& session) {
          pqxx::nontransaction(session).exec_prepared(
              notify_statement, options_.channel,
              frame_heartbeat(sender(), last_sequence_, /*goodbye=*/true));
        },
        [] { return std::string("saying goodbye"); });
  } catch (...) {
    // Receivers forget a silent origin in time all the same.
  }
}

void Publisher::close() noexcept {
  {
    // Nothing is sent after the goodbye: the queue is closed first.
    std::unique_lock<std::mutex> lock(mutex_);
    // (Only on a session that is open: close() never connects.)
    if (!closed_ && !connection_busy_ && connection_->has_session() && last_sequence_ > 0) {
      closed_ = true;
      fail_queued();
      connection_busy_ = true;
      lock.unlock();
      say_goodbye();
      lock.lock();
      connection_busy_ = false;
      changed_.notify_all();
    }
  }
  connection_->close();  // a connection attempt, retry pause or statement ends at once
  std::unique_lock<std::mutex> lock(mutex_);
  if (!closed_) {
    closed_ = true;
    fail_queued();
  }
  changed_.wait(lock, [this] { return !connection_busy_; });
  connection_->drop();
  auto background = std::move(background_sender_);
  lock.unlock();
  // The background sender runs no user code, so close() never runs on it.
  if (background.joinable()) background.join();
  // Now, on this thread (see failed_promises_).
  std::vector<std::promise<void>> failed;
  {
    std::lock_guard<std::mutex> relock(mutex_);
    failed.swap(failed_promises_);
  }
}

}  // namespace syncbus::detail
