#pragma once
// The publishing side of a PostgresClusterBus: group commit on the bus's
// connection (bus_connection.hpp), whose use it schedules. Messages published while a transaction
// is in flight wait in a queue and go out together in the next one: inline ones packed into batch
// envelopes up to the NOTIFY payload limit, spilled ones as one multi-row
// INSERT, all in a single statement. A lone message goes out at once.
//
// Whoever finds the connection free sends (leader/follower): a thread that
// calls publish() sends its own message and whatever queued behind it, with
// no hand-off to another thread. publish_async() callers do not wait, so a
// background thread sends for them when no publish() caller is.

#include <syncbus/errors.hpp>

#include <pqxx/connection_base>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bus_config.hpp"
#include "bus_connection.hpp"
#include "deadline_timer.hpp"
#include "delivery_queue.hpp"
#include "envelope.hpp"
#include "framing.hpp"
#include "message_auth.hpp"
#include "pg_session.hpp"
#include "server_clock.hpp"
#include "spill_store.hpp"
#include "stats_counters.hpp"

namespace syncbus::detail {

class Publisher {
 public:
  /// Takes an open, configured session (the bus's connection) and prepares
  /// its statements; a session that breaks is replaced on the next send
  /// (BusConnection). Reads from `services.config` the channel, the spill
  /// mode, the timeouts (publish_timeout, query_timeout), publish_linger,
  /// max_message_bytes and publish_queue_bytes. Signs with
  /// `services.auth` (when enabled). Once a batch is committed, its
  /// messages are posted to `echo` (the bus's own delivery queue: its
  /// listener skips its own origin), or reported there as lost when the
  /// batch failed; none for a publish-only bus. The services and `echo`
  /// must outlive the publisher.
  Publisher(const BusServices& services, std::unique_ptr<Session> session, DeliveryQueue* echo);
  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  /// Sends one message; returns once it is committed. Throws payload_too_large
  /// (SpillMode::never), invalid_message, timeout_error (past the publish
  /// timeout), connection_error, notify_queue_full, database_error or
  /// closed_error.
  void publish(const nlohmann::json& body);

  /// Queues one message and returns at once; the future becomes ready once it
  /// is committed, or holds what publish() would have thrown.
  std::future<void> publish_async(const nlohmann::json& body);

  /// Sends a heartbeat (the last sequence number) if something was published
  /// and nothing was sent for `idle`. Throws like publish().
  void heartbeat_if_idle(std::chrono::milliseconds idle);

  /// Runs work(session) on the bus's connection when it is free (between
  /// batches), within `timeout`: the bus's statements that are not
  /// publishing (vacuum, the NOTIFY-queue watch, the watchdog, the start-up
  /// probe). `call` names the public call in a closed_error; `what` says
  /// what is being done, for errors. Throws like publish().
  void borrow_connection(const char* call, std::chrono::milliseconds timeout,
                         const std::function<void(Session&)>& work, const std::string& what);

  /// Fails what is still queued with closed_error, says goodbye (a last
  /// heartbeat, so that receivers forget this origin) when the connection
  /// is free, waits for a send in flight (cut at once by the bus's
  /// DeadlineTimer::cut_all), and closes the connection; later calls throw
  /// closed_error.
  void close() noexcept;

  /// The transaction id of this origin's birth: committed at construction,
  /// before any message (PROTOCOL.md, "born").
  std::uint64_t born() const noexcept { return born_; }

 private:
  struct Outgoing;
  using Batch = std::vector<std::shared_ptr<Outgoing>>;

  std::shared_ptr<Outgoing> make_outgoing(const nlohmann::json& body) const;
  /// Holding the lock and the free connection: sends one batch from the
  /// queue (releasing the lock meanwhile) and settles its messages.
  void send_next_batch(std::unique_lock<std::mutex>& lock);
  /// Sends `batch` in one statement, retrying a lost connection until the
  /// first message's deadline; sets each message's outcome.
  void send(Batch& batch);
  void run_background_sender();
  /// Holding the lock: waits until the queue has room for `item` (or the
  /// item's deadline passes: timeout_error; or close(): closed_error), then
  /// counts it in.
  void wait_for_room(std::unique_lock<std::mutex>& lock, const Outgoing& item, const char* call);

  /// Runs work(session) on the connection, held by the caller, within
  /// `timeout`; when signing, reads the server's clock again first when due.
  template <typename Work, typename Describe>
  auto on_connection(std::chrono::milliseconds timeout, Work&& work, Describe&& describe);
  /// Sets up a new session: the statements, and the signing identity.
  void set_up(Session& session);
  void prepare(Session& session);
  closed_error closed(const char* call) const;
  /// Holding the lock: fails every queued message with closed_error.
  void fail_queued();
  /// Who sends, as of now: this origin, the server's time, and (written
  /// when signing) the session's server process.
  Sender sender() const {
    return {options_.channel, config_.origin(), born_, auth_, session_pid_, clock_.now_ms()};
  }
  /// Learns the session's server process and the server's clock (one
  /// round trip, under the caller's deadline): on each new session, and
  /// again every ServerClock::recalibrate_every.
  void identify(Session& session);
  /// Sends the goodbye heartbeat, holding the free connection.
  void say_goodbye() noexcept;

  const BusConfig& config_;
  const PostgresBusOptions& options_;  // config_'s
  const SpillStore& store_;
  const MessageAuth& auth_;
  DeliveryQueue* echo_;
  std::shared_ptr<StatsCounters> stats_;
  bool ascii_only_ = false;
  std::uint64_t born_ = 0;  // set once, by the constructor
  ServerClock clock_;
  // pg_backend_pid() of session_, when signing (not libpq's: a session
  // pooler reports a made-up one). Used only by whoever holds the connection.
  std::uint64_t session_pid_ = 0;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::shared_ptr<Outgoing>> queue_;
  std::size_t queued_bytes_ = 0;  // of the bodies in queue_
  std::condition_variable room_;  // queued_bytes_ went down
  bool connection_busy_ = false;  // someone is using session_
  bool closed_ = false;
  std::thread background_sender_;  // started by the first publish_async()
  // The promises of publish_async() calls that failed, kept until close()
  // (or a thousand of them): the exception each holds may have been read by
  // the caller's thread, and is best destroyed by the thread that closes
  // the bus, after the sending thread is joined, than by the sending thread.
  // libstdc++ orders the two with an atomic count that ThreadSanitizer
  // cannot see, and a fresh machine's TSan run reported the destruction on
  // the sending thread as a "data race on vptr".
  std::vector<std::promise<void>> failed_promises_;
  /// Holding the lock: sets `item`'s failure on its promise, and keeps the
  /// promise (failed_promises_).
  void fail_promise(Outgoing& item);

  // Used only by whoever holds the connection (connection_busy_).
  std::unique_ptr<BusConnection> connection_;
  std::chrono::steady_clock::time_point last_sent_{};
  // Never reused, even after a failed publish: a failure at COMMIT leaves the
  // outcome unknown, and reusing the number could make receivers drop the
  // next message as a duplicate. A failure shows up as a gap instead.
  std::uint64_t last_sequence_ = 0;
};

}  // namespace syncbus::detail
