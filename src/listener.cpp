#include "listener.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <poll.h>
#include <pqxx/nontransaction>
#include <pqxx/notification>

#include <algorithm>
#include <random>

#include "envelope.hpp"
#include "pg_session.hpp"
#include "statement_deadline.hpp"

namespace syncbus::detail {
namespace {

// Collects payloads during get_notifs(); they are decoded afterwards, outside
// libpqxx's callback, where the connection may run the spill fetch.
class PayloadCollector final : public pqxx::notification_receiver {
 public:
  PayloadCollector(pqxx::connection_base& session, const std::string& channel,
                   std::vector<std::string>& sink)
      : pqxx::notification_receiver(session, channel), sink_(sink) {}
  void operator()(const std::string& payload, int /*backend_pid*/) override {
    sink_.push_back(payload);
  }

 private:
  std::vector<std::string>& sink_;
};

constexpr std::chrono::milliseconds first_retry_delay{50};
// Capped so a listener is back within about a second of the server, while
// making at most a few attempts a second during a long outage.
constexpr std::chrono::milliseconds max_retry_delay{1000};

// Full jitter over [delay/2, delay]: instances that lost the server together
// do not come back in lockstep.
std::chrono::milliseconds jittered(std::chrono::milliseconds delay) {
  thread_local std::minstd_rand random{std::random_device{}()};
  std::uniform_int_distribution<long> pick(delay.count() / 2, delay.count());
  return std::chrono::milliseconds(pick(random));
}

}  // namespace

struct ListenerLoop::ListenSession {
  std::unique_ptr<Session> connection;
  std::vector<std::string> pending;
  // Declared after `connection`, so destroyed before it (it UNLISTENs).
  std::unique_ptr<PayloadCollector> collector;
  int backend_pid = 0;
};

ListenerLoop::ListenerLoop(std::string conninfo, std::string application_name, std::string channel,
                           const SpillStore& store, Deliver deliver, ErrorSink on_error,
                           std::shared_ptr<StatsCounters> stats, DeadlineTimer& deadlines,
                           Timeouts timeouts, CatchUp catch_up)
    : conninfo_(std::move(conninfo)),
      application_name_(std::move(application_name)),
      channel_(std::move(channel)),
      store_(store),
      deliver_(std::move(deliver)),
      on_error_(std::move(on_error)),
      stats_(std::move(stats)),
      deadlines_(deadlines),
      timeouts_(timeouts),
      catch_up_(catch_up) {
  auto session = connect();
  thread_ = std::thread([this, s = std::move(session)]() mutable { run(std::move(s)); });
}

ListenerLoop::~ListenerLoop() { stop(); }

void ListenerLoop::stop() noexcept {
  wake_.signal();
  deadlines_.cut_all(this);  // a ping or fetch in flight returns at once
  if (thread_.joinable()) thread_.join();
}

std::unique_ptr<ListenerLoop::ListenSession> ListenerLoop::connect() const {
  auto session = std::make_unique<ListenSession>();
  session->connection = open_session(conninfo_, application_name_);
  try {
    store_.prepare(*session->connection);
    // Issues LISTEN with the channel quoted as an identifier.
    session->collector =
        std::make_unique<PayloadCollector>(*session->connection, channel_, session->pending);
  } catch (...) {
    rethrow_as_syncbus_error(fmt::format("listening on channel \"{}\"", channel_));
  }
  session->backend_pid = session->connection->backendpid();
  return session;
}

bool ListenerLoop::pause(std::chrono::milliseconds delay) {
  pollfd wake{wake_.fd(), POLLIN, 0};
  const int ready = ::poll(&wake, 1, static_cast<int>(delay.count()));
  return ready == 0 || (ready < 0 && errno == EINTR);
}

void ListenerLoop::run(std::unique_ptr<ListenSession> session) {
  auto retry_delay = first_retry_delay;
  for (;;) {
    if (!session) {
      try {
        session = connect();
        retry_delay = first_retry_delay;
        StatsCounters::add(stats_->reconnects);
        if (catch_up_.enabled) {
          // LISTEN first (connect() did), then read what was missed, then go
          // live: NOTIFYs arriving meanwhile wait in the socket, after it.
          const auto away = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - last_contact_);
          catch_up(*session, away + catch_up_.margin);
          last_contact_ = std::chrono::steady_clock::now();
        } else {
          // Listening again: whatever was committed while away is missed.
          deliver_({Inbound{Inbound::Kind::connection_reset, {}}});
        }
      } catch (const std::exception& e) {
        report(on_error_, e);
        session.reset();
        if (!pause(jittered(retry_delay))) return;
        retry_delay = std::min(retry_delay * 2, max_retry_delay);
        continue;
      }
    }

    pollfd fds[2] = {{wake_.fd(), POLLIN, 0}, {session->connection->sock(), POLLIN, 0}};
    const int idle_ms = timeouts_.ping_interval.count() > 0
                            ? static_cast<int>(timeouts_.ping_interval.count())
                            : -1;
    const int ready = ::poll(fds, 2, idle_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (fds[0].revents != 0) return;  // stop() was called

    try {
      if (ready == 0) ping(*session);
      receive(*session);
      last_contact_ = std::chrono::steady_clock::now();
    } catch (const std::exception& e) {
      report(on_error_, connection_error(fmt::format(
                            "syncbus: the listener on channel \"{}\" lost its connection "
                            "({}); reconnecting. Messages sent while it was away are "
                            "missed",
                            channel_, e.what())));
      session.reset();
    }
  }
}

void ListenerLoop::ping(ListenSession& session) {
  auto& connection = *session.connection;
  run_with_deadline(
      deadlines_, connection.sock(), timeouts_.ping, this,
      [&] { pqxx::nontransaction(connection).exec("SELECT 1"); },
      [&] { return fmt::format("pinging the server from the listener on \"{}\"", channel_); });
}

void ListenerLoop::catch_up(ListenSession& session, std::chrono::milliseconds window) {
  constexpr int page_size = 256;
  std::string after_origin;
  std::uint64_t after_sequence = 0;
  auto& connection = *session.connection;
  for (;;) {
    const auto page = run_with_deadline(
        deadlines_, connection.sock(), timeouts_.query, this,
        [&] {
          return store_.fetch_recent(connection, window, after_origin, after_sequence, page_size);
        },
        [&] { return fmt::format("catching up from {}", store_.qualified_name()); });
    std::vector<Inbound> items;
    items.reserve(page.size());
    for (const auto& row : page) {
      try {
        items.push_back(
            {Inbound::Kind::message, {row.origin, row.sequence, parse_body(row.body_json)}});
      } catch (const std::exception& e) {
        report(on_error_, e);  // the tracker reports the hole it leaves
      }
    }
    deliver_(std::move(items));
    if (page.size() < static_cast<std::size_t>(page_size)) return;
    after_origin = page.back().origin;
    after_sequence = page.back().sequence;
  }
}

void ListenerLoop::receive(ListenSession& session) {
  auto& connection = *session.connection;
  std::vector<std::string> payloads;
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
    if (session.pending.empty()) return;
    payloads.clear();
    payloads.swap(session.pending);
    decode_and_deliver(connection, payloads);
  }
}

void ListenerLoop::decode_and_deliver(pqxx::connection& connection,
                                      const std::vector<std::string>& payloads) {
  std::vector<Inbound> items;
  items.reserve(payloads.size());
  for (const auto& payload : payloads) {
    try {
      Envelope envelope = decode_envelope(payload);
      ClusterMessage message{std::move(envelope.origin), envelope.sequence, {}};
      if (envelope.kind == Envelope::Kind::heartbeat) {
        items.push_back({Inbound::Kind::heartbeat, std::move(message)});
        continue;
      }
      if (envelope.kind == Envelope::Kind::inline_body) {
        message.body = std::move(envelope.body);
      } else {
        const auto stored = run_with_deadline(
            deadlines_, connection.sock(), timeouts_.query, this,
            [&] { return store_.fetch(connection, message.origin, message.sequence); },
            [&] {
              return fmt::format("fetching spilled message {}#{}", message.origin,
                                 message.sequence);
            });
        if (!stored) {
          // The message is lost: say so as an exact gap, now, through the
          // tracker (a heartbeat up to its number does exactly that).
          items.push_back({Inbound::Kind::heartbeat, message});
          throw protocol_error(
              fmt::format("syncbus: spilled message {}#{} on channel \"{}\" is not in {} "
                          "(vacuumed before this listener read it?); it was skipped. "
                          "Raise the vacuum age above your listeners' worst lag",
                          message.origin, message.sequence, channel_, store_.qualified_name()));
        }
        message.body = parse_body(*stored);
      }
      items.push_back({Inbound::Kind::message, std::move(message)});
    } catch (const connection_error&) {
      // Deliver what came before, in order, then let run() reconnect.
      deliver_(std::move(items));
      throw;
    } catch (const std::exception& e) {
      report(on_error_, e);
    }
  }
  deliver_(std::move(items));
}

}  // namespace syncbus::detail
