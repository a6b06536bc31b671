#include "listener.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <poll.h>
#include <pqxx/except>
#include <pqxx/nontransaction>
#include <pqxx/notification>

#include <algorithm>
#include <map>
#include <random>
#include <string_view>
#include <utility>

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
                           const SpillStore& store, DeliveryQueue& queue, ErrorSink on_error,
                           std::shared_ptr<StatsCounters> stats, DeadlineTimer& deadlines,
                           Timeouts timeouts, CatchUp catch_up)
    : conninfo_(std::move(conninfo)),
      application_name_(std::move(application_name)),
      channel_(std::move(channel)),
      store_(store),
      queue_(queue),
      on_error_(std::move(on_error)),
      stats_(std::move(stats)),
      deadlines_(deadlines),
      timeouts_(timeouts),
      catch_up_(catch_up) {
  auto session = connect();
  queue_.on_room_for_reread([this] { room_.signal(); });
  thread_ = std::thread([this, s = std::move(session)]() mutable { run(std::move(s)); });
}

ListenerLoop::~ListenerLoop() { stop(); }

void ListenerLoop::stop() noexcept {
  queue_.on_room_for_reread(nullptr);
  wake_.signal();
  deadlines_.cut_all(this);  // a ping or fetch in flight returns at once
  if (thread_.joinable()) thread_.join();
}

std::unique_ptr<ListenerLoop::ListenSession> ListenerLoop::connect() const {
  auto session = std::make_unique<ListenSession>();
  // stop() interrupts a connection attempt as it interrupts any other wait.
  session->connection = open_session(conninfo_, application_name_, {std::nullopt, wake_.fd()});
  auto& connection = *session->connection;
  store_.prepare(connection);  // only registers the statements: no round trip
  run_with_deadline(
      deadlines_, connection.sock(), timeouts_.query, this,
      [&] {
        // Issues LISTEN with the channel quoted as an identifier. libpqxx
        // swallows a connection that breaks meanwhile: check for it.
        session->collector =
            std::make_unique<PayloadCollector>(connection, channel_, session->pending);
        if (!connection.is_open())
          throw pqxx::broken_connection("the connection broke during LISTEN");
      },
      [&] { return fmt::format("listening on channel \"{}\"", channel_); });
  session->backend_pid = session->connection->backendpid();
  return session;
}

void ListenerLoop::run(std::unique_ptr<ListenSession> session) {
  auto retry_delay = first_retry_delay;
  bool rereading = false;
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
          queue_.post(Inbound{Inbound::Kind::connection_reset, {}});
        }
      } catch (const std::exception& e) {
        report(on_error_, e);
        session.reset();
        if (!wake_.sleep_unless_signalled(jittered(retry_delay))) return;
        retry_delay = std::min(retry_delay * 2, max_retry_delay);
        continue;
      }
    }

    pollfd fds[3] = {
        {wake_.fd(), POLLIN, 0}, {session->connection->sock(), POLLIN, 0}, {room_.fd(), POLLIN, 0}};
    const int idle_ms = timeouts_.ping_interval.count() > 0
                            ? static_cast<int>(timeouts_.ping_interval.count())
                            : -1;
    // With messages left to read back, only look at the socket in passing.
    const int ready = ::poll(fds, 3, rereading ? 0 : idle_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (fds[0].revents != 0) return;  // stop() was called
    if (fds[2].revents != 0) room_.consume();

    try {
      if (ready == 0 && !rereading) ping(*session);
      receive(*session);
      rereading = reread_step(*session);
      last_contact_ = std::chrono::steady_clock::now();
    } catch (const std::exception& e) {
      report(on_error_,
             connection_error(fmt::format(
                 "syncbus: the listener on channel \"{}\" lost its connection "
                 "({}); reconnecting. {}",
                 channel_, e.what(),
                 catch_up_.enabled ? "It will read what it missed from the spill table"
                                   : "Messages sent while it is away are missed (reported as a "
                                     "gap of unknown range)")));
      session.reset();
      rereading = false;
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
    queue_.post(decode_rows(page));
    if (page.size() < static_cast<std::size_t>(page_size)) return;
    after_origin = page.back().origin;
    after_sequence = page.back().sequence;
  }
}

std::vector<Inbound> ListenerLoop::decode_rows(const std::vector<SpillStore::StoredMessage>& rows) {
  std::vector<Inbound> items;
  items.reserve(rows.size());
  for (const auto& row : rows) {
    try {
      items.push_back(
          {Inbound::Kind::message, {row.origin, row.sequence, parse_body(row.body_json)}});
    } catch (const std::exception& e) {
      report(on_error_, e);
    }
  }
  return items;
}

bool ListenerLoop::reread_step(ListenSession& session) {
  constexpr std::size_t page_size = 256;
  const auto request = queue_.next_reread();
  if (!request) return false;
  const int limit = static_cast<int>(std::min(page_size, request->room));
  auto& connection = *session.connection;
  const auto rows = run_with_deadline(
      deadlines_, connection.sock(), timeouts_.query, this,
      [&] { return store_.fetch_from(connection, request->origin, request->from_sequence, limit); },
      [&] {
        return fmt::format("re-reading messages of {} from {}", request->origin,
                           store_.qualified_name());
      });
  const auto next_sequence = rows.empty() ? request->from_sequence : rows.back().sequence + 1;
  queue_.post_reread(request->origin, decode_rows(rows), next_sequence,
                     rows.size() < static_cast<std::size_t>(limit));
  return true;
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

void ListenerLoop::decode_and_deliver(pqxx::connection_base& connection,
                                      const std::vector<std::string>& payloads) {
  // Spill pointers are followed in one query per chunk, not one per message:
  // a round trip per message would make the listener slower than the
  // publishers in SpillMode::always, and libpq would buffer the backlog of
  // notifications without bound. The chunk bounds the query's size.
  constexpr std::size_t chunk_size = 512;
  for (std::size_t first = 0; first < payloads.size(); first += chunk_size) {
    const auto last = std::min(payloads.size(), first + chunk_size);
    deliver_chunk(connection, payloads.data() + first, payloads.data() + last);
  }
}

void ListenerLoop::deliver_chunk(pqxx::connection_base& connection, const std::string* begin,
                                 const std::string* end) {
  std::vector<Inbound> items;
  items.reserve(static_cast<std::size_t>(end - begin));
  std::vector<std::size_t> awaiting_body;  // indexes of spill pointers in `items`
  std::vector<SpillStore::MessageKey> keys;
  for (const auto* payload = begin; payload != end; ++payload) {
    try {
      Envelope envelope = decode_envelope(*payload);
      if (envelope.kind == Envelope::Kind::heartbeat) {
        items.push_back(
            {Inbound::Kind::heartbeat, {std::move(envelope.origin), envelope.sequence, {}}});
        continue;
      }
      for (std::uint64_t i = 0; i < envelope.count; ++i) {
        const auto sequence = envelope.sequence + i;
        if (queue_.drop_if_withheld(envelope.origin, sequence)) continue;
        ClusterMessage message{envelope.origin, sequence, {}};
        if (envelope.kind == Envelope::Kind::inline_body) {
          message.body = std::move(envelope.bodies[i]);
        } else {
          awaiting_body.push_back(items.size());
          keys.push_back({envelope.origin, sequence});
        }
        items.push_back({Inbound::Kind::message, std::move(message)});
      }
    } catch (const std::exception& e) {
      report(on_error_, e);
    }
  }
  if (!keys.empty()) {
    std::vector<SpillStore::StoredMessage> rows;
    try {
      const auto fetch = [&](const std::vector<SpillStore::MessageKey>& some) {
        return run_with_deadline(
            deadlines_, connection.sock(), timeouts_.query, this,
            [&] { return store_.fetch_many(connection, some); },
            [&] {
              return fmt::format("fetching {} spilled message(s) from {}", some.size(),
                                 store_.qualified_name());
            });
      };
      // Ranges can make many keys of few payloads: bound each query.
      constexpr std::size_t keys_per_query = 1024;
      if (keys.size() <= keys_per_query) {
        rows = fetch(keys);
      } else {
        for (auto first = keys.begin(); first != keys.end();) {
          const auto last =
              first + static_cast<std::ptrdiff_t>(std::min<std::size_t>(
                          keys_per_query, static_cast<std::size_t>(keys.end() - first)));
          auto some = fetch({first, last});
          rows.insert(rows.end(), std::make_move_iterator(some.begin()),
                      std::make_move_iterator(some.end()));
          first = last;
        }
      }
    } catch (const connection_error&) {
      // Deliver what came before the first pointer, in order, then let run()
      // reconnect (and catch up, or report the unknown gap).
      items.resize(awaiting_body.front());
      queue_.post(std::move(items));
      throw;
    } catch (const std::exception& e) {
      // Reported once; the messages it was fetching are lost: exact gaps.
      report(on_error_, e);
      for (const auto index : awaiting_body) items[index].kind = Inbound::Kind::heartbeat;
      queue_.post(std::move(items));
      return;
    }
    attach_bodies(items, awaiting_body, rows);
  }
  queue_.post(std::move(items));
}

void ListenerLoop::attach_bodies(std::vector<Inbound>& items,
                                 const std::vector<std::size_t>& awaiting_body,
                                 std::vector<SpillStore::StoredMessage>& rows) {
  std::map<std::pair<std::string_view, std::uint64_t>, std::string*> body_of;
  for (auto& row : rows) body_of[{row.origin, row.sequence}] = &row.body_json;
  for (const auto index : awaiting_body) {
    auto& item = items[index];
    const auto found = body_of.find({item.message.origin, item.message.sequence});
    std::string why;
    if (found == body_of.end()) {
      why = fmt::format(
          "is not in {} (vacuumed before this listener read it?). Raise the vacuum age above "
          "your listeners' worst lag",
          store_.qualified_name());
    } else {
      try {
        item.message.body = parse_body(*found->second);
        continue;
      } catch (const std::exception& e) {
        why = fmt::format("could not be read: {}", e.what());
      }
    }
    report(on_error_, protocol_error(fmt::format(
                          "syncbus: skipped spilled message {}#{} on channel \"{}\": it {}",
                          item.message.origin, item.message.sequence, channel_, why)));
    // The message is lost: say so now, as an exact gap, through the sequence
    // check (a heartbeat up to its number does exactly that).
    item.kind = Inbound::Kind::heartbeat;
  }
}

}  // namespace syncbus::detail
