#pragma once
// The listening side of a PostgresClusterBus: a thread that owns its own
// connection, LISTENs on the channel, waits with poll() on the socket and a
// wake-up fd, decodes envelopes, follows spill pointers, and hands messages
// to the delivery queue. It never holds a transaction open and never runs
// handlers itself, so it keeps draining its socket whatever handlers do.

#include <syncbus/cluster_bus.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "deadline_timer.hpp"
#include "delivery_queue.hpp"
#include "logger.hpp"
#include "message_auth.hpp"
#include "owned_thread.hpp"
#include "spill_store.hpp"
#include "stats_counters.hpp"
#include "wake_fd.hpp"

namespace syncbus::detail {

class ListenerLoop {
 public:
  struct Timeouts {
    /// After this long without traffic, the listener pings the server
    /// (0: never), and fails over if the answer takes longer than `ping`.
    std::chrono::milliseconds ping_interval;
    std::chrono::milliseconds ping;
    /// Deadline of every other statement (spill fetches).
    std::chrono::milliseconds query;
  };

  /// SpillMode::always: every message is in the spill table, so after a
  /// reconnect the listener reads what it missed instead of reporting an
  /// unknown gap: the rows created since its last confirmed contact with the
  /// server, less `margin` (for statements that began before and committed
  /// after).
  struct CatchUp {
    bool enabled = false;
    std::chrono::milliseconds margin{10000};
  };

  struct Settings {
    std::string conninfo;
    std::string application_name;
    std::string channel;
    Timeouts timeouts;
    CatchUp catch_up;
    /// Spilled bodies larger than this are refused (not loaded).
    std::size_t max_body_bytes = 0;
    Logger log;
    /// This bus's own origin: its messages reach its handlers from its
    /// publisher (Publisher's echo), so the listener skips them, neither
    /// parsing their bodies nor fetching their rows.
    std::string own_origin;
  };

  /// Sends `payload` on `channel` over another connection (the publisher's).
  using ProbeSender = std::function<void(const std::string& channel, const std::string& payload)>;

  /// Connects and LISTENs before returning (throws connection_error,
  /// database_error or configuration_error), then starts the thread, which
  /// posts what it receives to `queue` (and, under
  /// QueueFullPolicy::drop_and_reread, reads back from the spill table what
  /// the queue withheld). After a lost connection it reconnects with capped,
  /// jittered exponential backoff, and posts an Inbound::connection_reset
  /// once listening again (or catches up). With `probe`, it first proves that
  /// a NOTIFY sent through `probe` reaches its LISTEN (it does not through a
  /// transaction-pooling proxy), or throws configuration_error. `auth`
  /// verifies what arrives; it and `store` must outlive the loop.
  ListenerLoop(Settings settings, const SpillStore& store, const MessageAuth& auth,
               DeliveryQueue& queue, ErrorSink on_error, std::shared_ptr<StatsCounters> stats,
               DeadlineTimer& deadlines, const ProbeSender& probe);
  ~ListenerLoop();
  ListenerLoop(const ListenerLoop&) = delete;
  ListenerLoop& operator=(const ListenerLoop&) = delete;

  /// Interrupts any wait at once and joins the thread (unless called from
  /// it, by a callback: it then ends on its own). Idempotent.
  void stop() noexcept;
  /// True on the listener's thread (where it calls on_error and log).
  bool runs_on_this_thread() const noexcept { return thread_.is_current(); }

 private:
  struct ListenSession;
  std::unique_ptr<ListenSession> connect() const;
  /// The start-up NOTIFY round trip (see the constructor).
  void prove_round_trip(ListenSession& session, const ProbeSender& probe);
  void run(std::unique_ptr<ListenSession> session);
  void receive(ListenSession& session);
  /// An application-level liveness check: TCP keepalives do not notice a
  /// frozen server. Throws timeout_error past the ping deadline.
  void ping(ListenSession& session);
  /// `LISTEN "<channel>"`, quoted by the server's rules.
  std::string listen_statement(pqxx::connection_base& connection) const;
  /// Delivers this channel's rows from the last `window`, page by page, in
  /// order per origin; the delivery stage drops what was delivered already.
  /// Returns how many rows it read.
  std::size_t catch_up(ListenSession& session, std::chrono::milliseconds window);
  /// Reads back one page of what the delivery queue withheld; false when
  /// there was nothing to read back (or no room yet).
  bool reread_step(ListenSession& session);
  /// Decodes rows read from the spill table; a row that cannot be decoded is
  /// reported, and becomes an exact gap. With `skip_own`, this bus's own
  /// rows are left out (its publisher delivered them; but not when reading
  /// back what a full delivery queue dropped).
  std::vector<Inbound> decode_rows(const std::vector<SpillStore::StoredMessage>& rows,
                                   bool skip_own);
  /// The body of a stored message, checked (size, MAC) and parsed; throws
  /// protocol_error naming what is wrong with it.
  nlohmann::json body_of(const SpillStore::StoredMessage& row) const;
  void decode_and_deliver(pqxx::connection_base& connection,
                          const std::vector<std::string>& payloads);
  void deliver_chunk(pqxx::connection_base& connection, const std::string* begin,
                     const std::string* end);
  /// Fills in the bodies of the spill pointers at `awaiting_body` from `rows`;
  /// a pointer with no (valid) row is reported, and becomes an exact gap.
  void attach_bodies(std::vector<Inbound>& items, const std::vector<std::size_t>& awaiting_body,
                     std::vector<SpillStore::StoredMessage>& rows);

  Settings settings_;
  const SpillStore& store_;
  const MessageAuth& auth_;
  DeliveryQueue& queue_;
  ErrorSink on_error_;
  std::shared_ptr<StatsCounters> stats_;
  DeadlineTimer& deadlines_;
  // Last time the server was known to be talking to this listener.
  std::chrono::steady_clock::time_point last_contact_ = std::chrono::steady_clock::now();
  // The largest body of the last page read back (0: none yet): sizes the
  // next page to the room the delivery queue has in bytes.
  std::size_t reread_body_bytes_ = 0;
  WakeFd wake_;
  // Signalled by the delivery thread when it has room for withheld messages.
  WakeFd room_;
  OwnedThread thread_;
};

}  // namespace syncbus::detail
