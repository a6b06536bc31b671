// The listener's thread: connecting, waiting, pinging, markers, reconnecting
// (listener.hpp says which file holds which of its jobs).
#include "listener.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <poll.h>
#include <pqxx/except>
#include <pqxx/nontransaction>
#include <pqxx/notification>

#include <algorithm>
#include <utility>

#include "backoff.hpp"
#include "instance_id.hpp"
#include "listen_session.hpp"
#include "notify_probe.hpp"
#include "pg_session.hpp"
#include "server_admin.hpp"
#include "statement_deadline.hpp"

namespace syncbus::detail {
namespace {

constexpr const char* marker_statement = "syncbus_listener_marker";
constexpr const char* snapshot_statement = "syncbus_listener_snapshot";

// While the socket is lent, how often the listener looks whether the
// delivery thread is delivering rather than waiting on it, to read in its
// place meanwhile: the longest a slow handler holds up reading. (The
// server queues what is not read; a message waits in it at most this much
// longer than behind the handler.) Idle, it costs 20 wake-ups a second.
constexpr std::chrono::milliseconds lend_check{50};

// The listener lends its socket only while messages come at least this far
// apart (its last wait on the socket lasted this long): then a message
// wakes the idle delivery thread alone. Closer together, the listener reads
// while the delivery thread delivers, and lending would only add hand-overs
// (32 receiving processes at saturation lost 5-9 % of their CPU to them).
constexpr std::chrono::microseconds low_load_gap{500};

int poll_timeout(std::chrono::steady_clock::time_point now,
                 std::chrono::steady_clock::time_point until) {
  if (until == std::chrono::steady_clock::time_point::max()) return -1;
  if (until <= now) return 0;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count() + 1;
  return static_cast<int>(std::min<long long>(ms, 60'000));
}

}  // namespace

ListenerLoop::ListenerLoop(const BusServices& services, DeliveryQueue& queue,
                           const ProbeSender& probe)
    : config_(services.config),
      options_(services.config.options()),
      log_(services.log),
      store_(services.store),
      auth_(services.auth),
      queue_(queue),
      tap_(services.tap),
      on_error_(services.on_error),
      stats_(services.stats),
      deadlines_(services.deadlines),
      marker_channel_("syncbus_mark_" + random_hex(16)),
      tag_(listener_tag(options_.channel)) {
  auto session = connect();
  // Taken once LISTEN has taken effect: every transaction not visible in it
  // commits later, and its notifications reach this session.
  position_.start(take_snapshot(*session), std::chrono::steady_clock::now());
  if (config_.durable()) post_mark(position_.start_snapshot());
  listening_since_ = connected_since_ = std::chrono::steady_clock::now();
  if (probe) prove_round_trip(*session, probe);
  queue_.on_room_for_reread([this] { room_.signal(); });
  session_ = std::move(session);
  queue_.set_idle_reader(this);
  thread_.start([this] { run(); });
}

ListenerLoop::~ListenerLoop() { stop(); }

void ListenerLoop::stop() noexcept {
  queue_.on_room_for_reread(nullptr);
  stopping_.store(true);
  turn_.close();
  wake_.signal();
  deadlines_.cut_all(this);  // a ping or fetch in flight returns at once
  // Waits until the delivery thread is out of read_while_idle, unless this
  // is that thread (a callback of its read called close()).
  queue_.set_idle_reader(nullptr);
  // The listener's thread may wait for the delivery thread to let go of
  // the socket: joining it from there would wait for ever. The destructor,
  // never on that thread, joins.
  if (!turn_.held_by_this_thread()) thread_.join_unless_current();
}

std::unique_ptr<ListenSession> ListenerLoop::connect() {
  auto session = std::make_unique<ListenSession>();
  // stop() interrupts a connection attempt as it interrupts any other wait.
  session->connection = open_session(options_.conninfo, config_.listener_application_name(),
                                     {std::nullopt, wake_.fd()});
  auto& connection = *session->connection;
  // Only registers the statements: no round trip.
  store_.prepare(connection, tag_);
  connection.prepare(marker_statement,
                     tag_ + "SELECT pg_current_snapshot()::text, pg_notify($1, $2)");
  connection.prepare(snapshot_statement,
                     tag_ +
                         "SELECT pg_current_snapshot()::text, "
                         "(extract(epoch FROM clock_timestamp()) * 1000)::bigint");
  statement(
      *session,
      [&](pqxx::connection_base& c) {
        configure_reading_session(c, options_.query_timeout);
        // Before any message arrives: each says when it was sent by it.
        clock_.calibrate(c);
        // Issues LISTEN with the channel quoted as an identifier. libpqxx
        // swallows a connection that breaks meanwhile: check for it.
        session->collector =
            std::make_unique<NotificationInbox>(c, options_.channel, session->pending);
        if (config_.durable()) {
          session->markers =
              std::make_unique<NotificationInbox>(c, marker_channel_, session->returned_markers);
        }
        if (!c.is_open()) throw pqxx::broken_connection("the connection broke during LISTEN");
      },
      [&] { return fmt::format("listening on channel \"{}\"", options_.channel); });
  session->backend_pid = session->connection->backendpid();
  return session;
}

PgSnapshot ListenerLoop::take_snapshot(ListenSession& session) {
  const auto asked = ServerClock::Clock::now();
  const auto row = statement(
      session,
      [&](pqxx::connection_base& c) {
        return pqxx::nontransaction(c).exec_prepared1(snapshot_statement);
      },
      [&] { return std::string("taking a snapshot of the server's transactions"); });
  clock_.calibrate(row[1].as<std::int64_t>(), asked, ServerClock::Clock::now());
  return PgSnapshot::parse(row[0].c_str());
}

void ListenerLoop::prove_round_trip(ListenSession& session, const ProbeSender& probe) {
  auto& connection = *session.connection;
  // Normally a millisecond; a loaded server may take a while.
  const auto wait = std::min(options_.query_timeout, std::chrono::milliseconds(5000));
  // The statements' own deadline comes after the wait's: when the NOTIFY
  // does not come, the error must say so, not that the server is frozen.
  const bool reached = run_with_deadline(
      deadlines_, connection.sock(), wait + options_.query_timeout, this,
      [&] { return notify_reaches_listen(connection, probe, wait, wake_.fd()); },
      [&] { return std::string("proving that NOTIFY reaches LISTEN at start-up"); });
  if (!reached) {
    throw configuration_error(fmt::format(
        "syncbus: a NOTIFY sent at start-up did not reach this bus's LISTEN within {} ms. LISTEN "
        "cannot work through a transaction- or statement-pooling proxy (PgBouncer "
        "pool_mode=transaction): connect the bus to PostgreSQL directly, or through a "
        "session-pooled port",
        wait.count()));
  }
  // Leave the channel's LISTEN as the session's last statement (see ping()).
  statement(
      session, [&](pqxx::connection_base& c) { pqxx::nontransaction(c).exec(listen_statement(c)); },
      [&] { return fmt::format("listening on channel \"{}\"", options_.channel); });
  // Bus messages that arrived meanwhile wait in session.pending, in order.
}

void ListenerLoop::run() {
  unsigned failed_connects = 0;  // in a row
  // A statement ran on the connection since the socket was last drained:
  // libpq may hold notifications it read meanwhile, which poll() would not
  // report. So the next wait is no wait.
  bool queried = true;
  for (;;) {
    if (!session_) {
      try {
        session_ = reconnect();
        failed_connects = 0;
        queried = true;
      } catch (const closed_error&) {
        return;  // stop() interrupted it
      } catch (const std::exception& e) {
        report(on_error_, e);
        session_.reset();
        const auto pause = jittered(reconnect_backoff.after(++failed_connects));
        if (!wake_.sleep_unless_signalled(pause)) return;
        continue;
      }
    }
    auto& session = *session_;

    // Wake for the socket, for stop(), for room to read back into, and in
    // time for whichever comes first: a ping, a marker, a read-back retry.
    const auto now = std::chrono::steady_clock::now();
    auto until = std::chrono::steady_clock::time_point::max();
    if (options_.ping_interval.count() > 0) {
      until = last_contact_ + options_.ping_interval;
    }
    if (config_.durable()) until = std::min(until, position_.next_marker_due());
    until = std::min(until, clock_.next_due());
    until = std::min(until, queue_.next_reread_due());
    pollfd fds[4] = {{wake_.fd(), POLLIN, 0},
                     {session.connection->sock(), POLLIN, 0},
                     {room_.fd(), POLLIN, 0},
                     {turn_.signal_fd(), POLLIN, 0}};
    // With statements just run (messages to read back, say), only look at
    // the socket in passing.
    const int timeout = queried ? 0 : poll_timeout(now, until);
    // About to sleep while messages come far apart: when the socket is
    // quiet and the delivery thread idle, it waits on the socket instead
    // (SocketTurn). Said first, so that a delivery thread going idle
    // meanwhile asks for it.
    const bool may_lend = timeout != 0 && sparse_;
    if (may_lend) {
      turn_.listener_waits(true);
      if (queue_.idle() && ::poll(&fds[1], 1, 0) == 0) {
        turn_.listener_waits(false);
        const auto slept = sleep_lent(until);
        if (slept == LentSleep::stopped) return;
        queried = true;  // the delivery thread may have run statements
        if (auto failure = turn_.take_failure()) {
          try {
            std::rethrow_exception(failure);
          } catch (const closed_error&) {
            return;
          } catch (const std::exception& e) {
            if (stopping_.load()) return;
            lose_session(e);
          }
        }
        continue;
      }
    }
    const auto waited_from = std::chrono::steady_clock::now();
    const int ready = ::poll(fds, 4, timeout);
    if (may_lend) turn_.listener_waits(false);
    if (timeout != 0 && (ready == 0 || fds[1].revents != 0)) {
      sparse_ = std::chrono::steady_clock::now() - waited_from >= low_load_gap;
    }
    if (ready < 0 && errno == EINTR) continue;
    if (fds[0].revents != 0) return;  // stop() was called
    if (fds[2].revents != 0) room_.consume();
    // The delivery thread went idle: the next turn of the loop lends it
    // the socket, if it is quiet.
    if (fds[3].revents != 0) turn_.consume_signal();

    try {
      // The server talked to this listener: it sent something, or answered
      // a statement. Only silence is worth a ping.
      bool heard = fds[1].revents != 0;
      const auto idle_for = std::chrono::steady_clock::now() - last_contact_;
      if (ready == 0 && options_.ping_interval.count() > 0 && idle_for >= options_.ping_interval) {
        ping(session);
        heard = true;
      }
      if (clock_.due()) {
        recalibrate(session);
        heard = true;
      }
      if (config_.durable() && position_.marker_due(std::chrono::steady_clock::now())) {
        send_marker(session);
        heard = true;
      }
      // After the statements above: what arrived while they ran is drained.
      receive(session);
      queried = reread_step(session);
      if (heard || queried) last_contact_ = std::chrono::steady_clock::now();
    } catch (const closed_error&) {
      return;  // stop() cut what was in flight
    } catch (const std::exception& e) {
      // stop() shut the socket down under a read that had no deadline of
      // its own (notifications): no news either.
      if (stopping_.load()) return;
      lose_session(e);
    }
  }
}

void ListenerLoop::lose_session(const std::exception& e) {
  report(on_error_, connection_error(fmt::format(
                        "syncbus: the listener on channel \"{}\" lost its connection "
                        "({}); reconnecting. {}",
                        options_.channel, e.what(),
                        config_.durable() ? "It will read what it missed from the spill table"
                                          : "Messages sent while it is away are missed "
                                            "(reported as a gap of unknown range)")));
  session_.reset();
  position_.connection_lost();
}

ListenerLoop::LentSleep ListenerLoop::sleep_lent(std::chrono::steady_clock::time_point until) {
  if (!turn_.lend()) return LentSleep::stopped;
  queue_.offer_idle_read();
  const auto take_back = [&] {
    return turn_.take_back([this] { queue_.interrupt_idle_read(); }) ? LentSleep::taken_back
                                                                     : LentSleep::stopped;
  };
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return take_back();
    pollfd fds[3] = {
        {wake_.fd(), POLLIN, 0}, {room_.fd(), POLLIN, 0}, {turn_.signal_fd(), POLLIN, 0}};
    const int until_due = poll_timeout(now, until);  // -1: nothing due
    const auto check = static_cast<int>(lend_check.count());
    const int ready = ::poll(fds, 3, until_due < 0 ? check : std::min(until_due, check));
    if (ready < 0 && errno == EINTR) continue;
    // Stopped: the session stays as it is (the delivery thread may be
    // reading it); the destructor ends it.
    if (fds[0].revents != 0) return LentSleep::stopped;
    if (fds[2].revents != 0) {
      // Given back: input was waiting when the delivery thread came to it.
      turn_.consume_signal();
      sparse_ = false;
    }
    // Room to read back into (consumed by the next turn), or the socket
    // given back (a failed read, or a burst): the listener's again.
    if (fds[1].revents != 0 || fds[2].revents != 0) return take_back();
    // Delivering rather than waiting on the socket: read in its place.
    if (ready == 0 && turn_.take_if_unused()) return LentSleep::taken_back;
  }
}

bool ListenerLoop::read_while_idle(int wake_fd, std::chrono::milliseconds most) {
  if (!turn_.take_lent()) return false;
  bool give_back = false;
  std::exception_ptr failure;
  try {
    auto& session = *session_;
    pollfd fds[2] = {{session.connection->sock(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
    if (::poll(fds, 1, 0) != 0) {
      // Input waiting already (a burst, or what came while the turn was
      // handed over): the listener's thread reads it while this one
      // delivers, as under load.
      give_back = true;
    } else {
      const auto wait = static_cast<int>(std::min<long long>(most.count(), 60'000));
      const int ready = ::poll(fds, 2, wait);
      if (ready > 0 && fds[0].revents != 0 && !turn_.wanted_back()) {
        receive(session);
        last_contact_ = std::chrono::steady_clock::now();
      }
    }
  } catch (...) {
    failure = std::current_exception();
  }
  const bool again = !give_back && !failure;
  // Moved: the listener's thread ends the exception's life, after handling it.
  turn_.let_go(give_back, std::move(failure));
  return again;
}

std::unique_ptr<ListenSession> ListenerLoop::reconnect() {
  auto session = connect();
  const auto away = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - last_contact_);
  if (!config_.durable()) {
    StatsCounters::add(stats_->reconnects);
    log_(LogLevel::info, "syncbus: the listener on channel \"{}\" is back after {} ms",
         options_.channel, away.count());
    // Listening again: whatever was committed while away is missed. A
    // signed message sent meanwhile and replayed now (through a pooled
    // session, or from a reused process id) must not pass for one this bus
    // heard: it is as old as this listener's hearing, and the origins'
    // fresh words are forgotten with the reset (SequenceTracker).
    listening_since_ = connected_since_ = std::chrono::steady_clock::now();
    queue_.post(Inbound{Inbound::Kind::connection_reset, {}});
    return session;
  }
  // Listening again since now: what was sent inline meanwhile is not in the
  // table. When some publisher of the channel sends inline (it is not in
  // SpillMode::always), that is a gap of unknown range, reported first; the
  // table's rows are read back all the same.
  connected_since_ = std::chrono::steady_clock::now();
  if (heard_inline_) {
    Inbound reset{Inbound::Kind::connection_reset, {}};
    reset.keep_freshness = true;
    queue_.post(std::move(reset));
  }
  // LISTEN first (connect() did), then fix the cutoff, then read what was
  // missed, then go live: notifications arriving meanwhile wait in
  // session->pending, after it. Every transaction not visible in the cutoff
  // commits after the LISTEN, so its notifications arrive; every one
  // visible in it and not in the position is read from the table.
  const auto cutoff = take_snapshot(*session);
  const auto began = std::chrono::steady_clock::now();
  const auto rows = catch_up(*session, position_.confirmed(), cutoff);
  position_.caught_up(cutoff);
  post_mark(cutoff);
  StatsCounters::add(stats_->reconnects);  // counted once it has caught up
  last_contact_ = std::chrono::steady_clock::now();
  log_(LogLevel::info,
       "syncbus: the listener on channel \"{}\" is back after {} ms away; catching up "
       "took {} ms and handed {} message(s) it had missed from the spill table to the "
       "delivery queue (what the queue had no room for is read back as it frees)",
       options_.channel, away.count(),
       std::chrono::duration_cast<std::chrono::milliseconds>(last_contact_ - began).count(), rows);
  return session;
}

void ListenerLoop::post_mark(const PgSnapshot& snapshot) {
  Inbound mark{Inbound::Kind::mark, {}};
  mark.mark = std::make_shared<Inbound::Mark>();
  mark.mark->snapshot = snapshot;
  queue_.post(std::move(mark));
}

void ListenerLoop::ping(ListenSession& session) {
  auto& connection = *session.connection;
  run_with_deadline(
      deadlines_, connection.sock(), options_.ping_timeout, this,
      [&] { pqxx::nontransaction(connection).exec(listen_statement(connection)); },
      [&] {
        return fmt::format("pinging the server from the listener on \"{}\"", options_.channel);
      });
}

void ListenerLoop::recalibrate(ListenSession& session) {
  auto& connection = *session.connection;
  run_with_deadline(
      deadlines_, connection.sock(), options_.ping_timeout, this,
      [&] {
        clock_.calibrate(connection);
        pqxx::nontransaction(connection).exec(listen_statement(connection));
      },
      [] { return std::string("reading the server's clock again"); });
}

void ListenerLoop::send_marker(ListenSession& session) {
  auto token = random_hex(32);
  auto& connection = *session.connection;
  try {
    // A round trip as small as a ping, and as quick to give up.
    const auto row = run_with_deadline(
        deadlines_, connection.sock(), options_.ping_timeout, this,
        [&] {
          return pqxx::nontransaction(connection)
              .exec_prepared1(marker_statement, marker_channel_, token);
        },
        [&] { return std::string("sending a marker to the listener's own channel"); });
    position_.marker_sent(std::move(token), PgSnapshot::parse(row[0].c_str()),
                          std::chrono::steady_clock::now());
  } catch (const connection_error&) {
    throw;
  } catch (const std::exception& e) {
    // The position stays where it is (a catch-up would read more again);
    // a full NOTIFY queue (54000) is reported by the bus's queue watch too.
    position_.marker_failed(std::chrono::steady_clock::now());
    report(on_error_, e);
  }
}

std::string ListenerLoop::listen_statement(pqxx::connection_base& connection) const {
  // The ping is a LISTEN on the channel the session already listens on: a
  // round trip that changes nothing. Like every statement of the session,
  // it begins with the listener's tag, so that operators (and `syncbus
  // status`) can tell in pg_stat_activity which channel it listens on.
  return tag_ + "LISTEN " + connection.quote_name(options_.channel);
}

void ListenerLoop::receive(ListenSession& session) {
  auto& connection = *session.connection;
  std::vector<Notification> payloads;
  std::vector<Notification> markers;
  // A spill fetch is a query on this connection: while libpq waits for its
  // result it reads further NOTIFYs off the socket into its own queue, and
  // poll() would then never report them. So drain until libpq holds nothing.
  for (;;) {
    try {
      connection.get_notifs();
    } catch (...) {
      rethrow_as_syncbus_error("reading notifications");
    }
    // libpqxx may have re-established a broken connection by itself; a new
    // backend means notifications may have been missed meanwhile.
    if (!connection.is_open() || connection.sock() < 0 ||
        connection.backendpid() != session.backend_pid) {
      throw connection_error("the connection was reset");
    }
    if (session.pending.empty() && session.returned_markers.empty()) return;
    payloads.clear();
    payloads.swap(session.pending);
    markers.clear();
    markers.swap(session.returned_markers);
    decode_and_deliver(session, payloads);
    // Everything received before a marker has now been handed on.
    for (const auto& marker : markers) {
      if (position_.marker_returned(marker.payload)) post_mark(position_.confirmed());
    }
  }
}

bool ListenerLoop::wait_draining(ListenSession& session, std::chrono::milliseconds delay) {
  // Past this many waiting payloads (about 200 MB of pointers), a catch-up
  // that cannot make progress gives up and starts over on a new connection,
  // rather than hold the backlog in memory.
  constexpr std::size_t most_pending = 1'000'000;
  const auto until = std::chrono::steady_clock::now() + delay;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return true;
    pollfd fds[2] = {{wake_.fd(), POLLIN, 0}, {session.connection->sock(), POLLIN, 0}};
    const int ready = ::poll(fds, 2, poll_timeout(now, until));
    if (ready < 0 && errno == EINTR) continue;
    if (fds[0].revents != 0) return false;
    if (fds[1].revents != 0) {
      try {
        session.connection->get_notifs();
      } catch (...) {
        rethrow_as_syncbus_error("reading notifications");
      }
      if (session.pending.size() > most_pending) {
        throw connection_error(fmt::format(
            "{} notifications arrived while the listener could not read the spill table; it "
            "starts over on a new connection",
            session.pending.size()));
      }
    }
  }
}

}  // namespace syncbus::detail
