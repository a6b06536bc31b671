#pragma once
// The listening side of a PostgresClusterBus: a thread that owns its own
// connection, LISTENs on the channel, waits with poll() on the socket and a
// wake-up fd, decodes envelopes, follows spill pointers, and hands messages
// to the delivery queue. It never holds a transaction open and never runs
// handlers itself, so it keeps draining its socket whatever handlers do.
// While it would only sleep, messages come far apart and the delivery
// thread is idle, it lends that thread its socket to wait on and read
// (SocketTurn, read_while_idle): a message then wakes one thread, not two.
//
// Its jobs, by file:
//   listener.cpp                the thread: connecting, waiting, pinging,
//                               markers (ReceivedPosition), reconnecting
//   listener_notifications.cpp  payloads -> Inbound items: authenticity,
//                               freshness, envelopes, following pointers
//   listener_table_reads.cpp    reading rows: bodies by key in order, the
//                               catch-up after a reconnect, reading back
//                               what the delivery queue withheld

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection_base>

#include "bus_config.hpp"
#include "channel_tap.hpp"
#include "deadline_timer.hpp"
#include "delivery_queue.hpp"
#include "envelope.hpp"
#include "error_sink.hpp"
#include "listen_session.hpp"
#include "logger.hpp"
#include "message_auth.hpp"
#include "notify_probe.hpp"
#include "owned_thread.hpp"
#include "received_position.hpp"
#include "server_clock.hpp"
#include "socket_turn.hpp"
#include "spill_store.hpp"
#include "statement_deadline.hpp"
#include "stats_counters.hpp"
#include "wake_fd.hpp"

namespace syncbus::detail {

class ListenerLoop final : private IdleReader {
 public:
  /// Sends `payload` on `channel` over another connection (the publisher's).
  using ProbeSender = NotifySender;

  /// Connects, LISTENs and takes the snapshot its position starts from
  /// before returning (throws connection_error, database_error or
  /// configuration_error), then starts the thread, which posts what it
  /// receives to `queue` (and reads back from the spill table what the queue
  /// withholds). After a lost connection it reconnects with capped, jittered
  /// exponential backoff, then catches up from the table (a durable bus:
  /// SpillMode::always) or posts an Inbound::connection_reset. With `probe`,
  /// it first proves that a NOTIFY sent through `probe` reaches its LISTEN
  /// (it does not through a transaction-pooling proxy), or throws
  /// configuration_error. Reads from `services.config` the channel, the
  /// timeouts (ping_interval, ping_timeout, query_timeout: every statement
  /// but the ping), max_message_bytes (larger spilled bodies are refused,
  /// not loaded) and its own origin (its messages reach its handlers from
  /// its publisher, so the listener skips them). The services and `queue`
  /// must outlive the loop.
  ListenerLoop(const BusServices& services, DeliveryQueue& queue, const ProbeSender& probe);
  ~ListenerLoop();
  ListenerLoop(const ListenerLoop&) = delete;
  ListenerLoop& operator=(const ListenerLoop&) = delete;

  /// Interrupts any wait at once and joins the thread (unless called from
  /// it, by a callback: it then ends on its own). Idempotent.
  void stop() noexcept;
  /// True on the listener's thread (where it calls on_error and log; so
  /// does the delivery thread while it reads the lent socket).
  bool runs_on_this_thread() const noexcept { return thread_.is_current(); }

 private:
  // listener.cpp
  std::unique_ptr<ListenSession> connect();
  /// pg_current_snapshot() (after the LISTEN took effect) and the server's
  /// clock, in one round trip.
  PgSnapshot take_snapshot(ListenSession& session);
  void prove_round_trip(ListenSession& session, const ProbeSender& probe);
  void run();
  /// A lost connection: reports it; the loop connects again.
  void lose_session(const std::exception& e);
  enum class LentSleep { taken_back, stopped };
  /// Lends the socket to the idle delivery thread and sleeps until `until`
  /// (the listener's own next task), stop(), room to read back into, or the
  /// socket given back; looks every lend_check whether the delivery thread
  /// is busy delivering, and reads itself meanwhile if so.
  LentSleep sleep_lent(std::chrono::steady_clock::time_point until);
  /// IdleReader, on the delivery thread: see SocketTurn.
  bool read_while_idle(int wake_fd, std::chrono::milliseconds most) override;
  /// Connects again; catches up, or posts the unknown gap.
  std::unique_ptr<ListenSession> reconnect();
  /// Drains the socket and hands on what arrived; then settles markers.
  void receive(ListenSession& session);
  /// An application-level liveness check: TCP keepalives do not notice a
  /// frozen server. Throws timeout_error past the ping deadline.
  /// Tells the delivery stage where the stream stands (Inbound::Kind::mark):
  /// every transaction visible in `snapshot` has been received and handed on.
  void post_mark(const PgSnapshot& snapshot);
  void ping(ListenSession& session);
  void send_marker(ListenSession& session);
  /// Waits up to `delay`, reading notifications meanwhile (a listener that
  /// stops reading blocks the server's NOTIFY queue). False when stopped.
  bool wait_draining(ListenSession& session, std::chrono::milliseconds delay);
  /// `LISTEN "<channel>"`, quoted by the server's rules.
  std::string listen_statement(pqxx::connection_base& connection) const;
  /// Runs `work` on the session's connection under the query deadline.
  template <typename Work, typename Describe>
  auto statement(ListenSession& session, Work&& work, Describe&& describe);

  // listener_notifications.cpp
  void decode_and_deliver(ListenSession& session, const std::vector<Notification>& notifications);
  void deliver_chunk(ListenSession& session, const Notification* begin, const Notification* end);
  /// True when a signed envelope is a fresh one from the session that
  /// signed it; otherwise reports it and adds Kind::stale items for its
  /// messages. See the definition.
  bool fresh(const Envelope& envelope, int sender_pid, std::vector<Inbound>& items);

  // listener_table_reads.cpp
  /// Reads the bodies of the messages `items[first..]` that await them (the
  /// others are passed through), in order, a bounded fetch at a time, and
  /// hands each fetch's items on with `take` in order. Throws what the
  /// statements throw; `read_up_to` is then how far items were handed on.
  void read_bodies(ListenSession& session, std::vector<Inbound>& items, std::size_t& read_up_to,
                   const std::function<void(std::vector<Inbound>&&)>& take,
                   std::size_t max_bytes = SIZE_MAX);
  /// The message a row holds, or (reported) none when the row is refused:
  /// too large, badly signed, not JSON.
  std::optional<Inbound> item_of(const SpillStore::StoredMessage& row);
  /// Reads the rows of the transactions visible in `to` and not in `from`,
  /// in commit order per origin, and hands them on. Returns how many.
  std::size_t catch_up(ListenSession& session, const PgSnapshot& from, const PgSnapshot& to);
  /// Reads back one page of what the delivery queue withheld; false when
  /// there was nothing to read back now.
  bool reread_step(ListenSession& session);
  /// Hands `items` to the queue, remembering what was handed on.
  void hand_on(std::vector<Inbound>&& items);

  const BusConfig& config_;
  const PostgresBusOptions& options_;  // config_'s
  Logger log_;
  const SpillStore& store_;
  const MessageAuth& auth_;
  DeliveryQueue& queue_;
  const ChannelTap& tap_;
  ErrorSink on_error_;
  std::shared_ptr<StatsCounters> stats_;
  DeadlineTimer& deadlines_;
  // The private channel markers come back on.
  std::string marker_channel_;
  // What begins each of the session's statements (listener_tag()).
  const std::string tag_;
  ReceivedPosition position_;  // used by the holder of turn_ (and the constructor)
  ServerClock clock_;
  // Since when this listener has heard every message: its start, or (with
  // no catch-up) its last reconnect. Kept by this process's monotonic clock,
  // so that a step of the server's clock moves it with every "sent".
  std::chrono::steady_clock::time_point listening_since_;
  // Since when the listener's current session has been listening: its last
  // (re)connection (the same as listening_since_ without a catch-up). What
  // is sent inline before it was missed, never read back.
  std::chrono::steady_clock::time_point connected_since_;
  // An envelope from another origin carried a message inline: some
  // publisher of the channel does not put every message in the spill
  // table, so a catch-up cannot bring back all that was missed.
  bool heard_inline_ = false;
  /// See Inbound::signature_predates: signed before `since` (less the
  /// clocks' tolerance), or longer ago than a bus remembers an origin.
  bool signature_predates(std::optional<std::uint64_t> sent_ms,
                          std::chrono::steady_clock::time_point since) const;
  /// Reads the server's clock again (ServerClock), then leaves the
  /// channel's LISTEN as the session's last statement (see ping()).
  void recalibrate(ListenSession& session);
  // Last time the server was known to be talking to this listener.
  std::chrono::steady_clock::time_point last_contact_ = std::chrono::steady_clock::now();
  // The connection and all that hangs off it, and everything above that the
  // statements and notifications change: used by whoever holds turn_ (the
  // listener's thread, or the delivery thread while lent), none once gone.
  std::unique_ptr<ListenSession> session_;
  SocketTurn turn_;
  // Messages come far apart (low_load_gap): the socket is worth lending.
  // The listener's thread only.
  bool sparse_ = true;
  WakeFd wake_;
  std::atomic<bool> stopping_{false};  // set by stop(), before it cuts
  // Signalled by the delivery thread when it has room for withheld messages.
  WakeFd room_;
  OwnedThread thread_;
};

template <typename Work, typename Describe>
auto ListenerLoop::statement(ListenSession& session, Work&& work, Describe&& describe) {
  auto& connection = *session.connection;
  return run_with_deadline(
      deadlines_, connection.sock(), options_.query_timeout, this, [&] { return work(connection); },
      std::forward<Describe>(describe));
}

}  // namespace syncbus::detail
