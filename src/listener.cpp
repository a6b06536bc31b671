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
#include "instance_id.hpp"
#include "pg_session.hpp"
#include "spilled_body.hpp"
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

// How many rows a page read from the table (catching up, reading back)
// asks for: at most `most`, and no more than about `bytes` of bodies going by
// the largest body of the page before. A body may be as large as
// max_message_bytes, so a page of 256 unknown ones could be gigabytes: the
// first is short, and the next sized from what it brought.
std::size_t rows_per_page(std::size_t most, std::size_t bytes, std::size_t largest_body_before) {
  constexpr std::size_t first_page_rows = 16;
  if (largest_body_before == 0) return std::min(most, first_page_rows);
  return std::min(most, std::max<std::size_t>(1, bytes / largest_body_before));
}

std::size_t largest_body(const std::vector<SpillStore::StoredMessage>& rows) {
  std::size_t largest = 0;
  for (const auto& row : rows) largest = std::max(largest, row.body_json.size());
  return largest;
}

}  // namespace

struct ListenerLoop::ListenSession {
  std::unique_ptr<Session> connection;
  std::vector<std::string> pending;
  // Declared after `connection`, so destroyed before it (it UNLISTENs).
  std::unique_ptr<PayloadCollector> collector;
  int backend_pid = 0;
};

ListenerLoop::ListenerLoop(Settings settings, const SpillStore& store, const MessageAuth& auth,
                           DeliveryQueue& queue, ErrorSink on_error,
                           std::shared_ptr<StatsCounters> stats, DeadlineTimer& deadlines,
                           const ProbeSender& probe)
    : settings_(std::move(settings)),
      store_(store),
      auth_(auth),
      queue_(queue),
      on_error_(std::move(on_error)),
      stats_(std::move(stats)),
      deadlines_(deadlines) {
  auto session = connect();
  if (probe) prove_round_trip(*session, probe);
  queue_.on_room_for_reread([this] { room_.signal(); });
  thread_.start([this, s = std::move(session)]() mutable { run(std::move(s)); });
}

ListenerLoop::~ListenerLoop() { stop(); }

void ListenerLoop::stop() noexcept {
  queue_.on_room_for_reread(nullptr);
  wake_.signal();
  deadlines_.cut_all(this);  // a ping or fetch in flight returns at once
  thread_.join_unless_current();
}

std::unique_ptr<ListenerLoop::ListenSession> ListenerLoop::connect() const {
  auto session = std::make_unique<ListenSession>();
  // stop() interrupts a connection attempt as it interrupts any other wait.
  session->connection =
      open_session(settings_.conninfo, settings_.application_name, {std::nullopt, wake_.fd()});
  auto& connection = *session->connection;
  store_.prepare(connection);  // only registers the statements: no round trip
  run_with_deadline(
      deadlines_, connection.sock(), settings_.timeouts.query, this,
      [&] {
        SpillStore::read_by_key_only(connection);
        // Issues LISTEN with the channel quoted as an identifier. libpqxx
        // swallows a connection that breaks meanwhile: check for it.
        session->collector =
            std::make_unique<PayloadCollector>(connection, settings_.channel, session->pending);
        if (!connection.is_open())
          throw pqxx::broken_connection("the connection broke during LISTEN");
      },
      [&] { return fmt::format("listening on channel \"{}\"", settings_.channel); });
  session->backend_pid = session->connection->backendpid();
  return session;
}

void ListenerLoop::prove_round_trip(ListenSession& session, const ProbeSender& probe) {
  // A channel of its own, so that no other bus sees the probe.
  const auto probe_channel = "syncbus_probe_" + random_hex(16);
  const auto token = random_hex(16);
  auto& connection = *session.connection;
  std::vector<std::string> arrived;
  // Normally a millisecond; a loaded server may take a while.
  const auto wait = std::min(settings_.timeouts.query, std::chrono::milliseconds(5000));
  const auto deadline = std::chrono::steady_clock::now() + wait;
  // The statements' own deadline comes after the wait's: when the NOTIFY
  // does not come, the error must say so, not that the server is frozen.
  run_with_deadline(
      deadlines_, connection.sock(), wait + settings_.timeouts.query, this,
      [&] {
        PayloadCollector collector(connection, probe_channel, arrived);
        if (!connection.is_open()) throw pqxx::broken_connection("the connection broke");
        probe(probe_channel, token);
        while (std::find(arrived.begin(), arrived.end(), token) == arrived.end()) {
          const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
              deadline - std::chrono::steady_clock::now());
          if (left.count() <= 0) {
            throw configuration_error(fmt::format(
                "syncbus: a NOTIFY sent at start-up did not reach this bus's LISTEN within {} "
                "ms. LISTEN cannot work through a transaction- or statement-pooling proxy "
                "(PgBouncer pool_mode=transaction): connect the bus to PostgreSQL directly, or "
                "through a session-pooled port",
                wait.count()));
          }
          pollfd fds[2] = {{connection.sock(), POLLIN, 0}, {wake_.fd(), POLLIN, 0}};
          if (::poll(fds, 2, static_cast<int>(left.count())) > 0 && fds[1].revents != 0) {
            throw closed_error("syncbus: the bus was closed while starting");
          }
          connection.get_notifs();
        }
        // The collector's destructor UNLISTENs the probe channel.
      },
      [&] { return std::string("proving that NOTIFY reaches LISTEN at start-up"); });
  // Leave the channel's LISTEN as the session's last statement (see ping()).
  run_with_deadline(
      deadlines_, connection.sock(), settings_.timeouts.query, this,
      [&] { pqxx::nontransaction(connection).exec(listen_statement(connection)); },
      [&] { return fmt::format("listening on channel \"{}\"", settings_.channel); });
  // Bus messages that arrived meanwhile wait in session.pending, in order.
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
        const auto away = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - last_contact_);
        if (settings_.catch_up.enabled) {
          // LISTEN first (connect() did), then read what was missed, then go
          // live: NOTIFYs arriving meanwhile wait in the socket, after it.
          const auto rows = catch_up(*session, away + settings_.catch_up.margin);
          last_contact_ = std::chrono::steady_clock::now();
          settings_.log(LogLevel::info,
                        "syncbus: the listener on channel \"{}\" is back after {} ms and read "
                        "{} row(s) it may have missed from the spill table",
                        settings_.channel, away.count(), rows);
        } else {
          settings_.log(LogLevel::info,
                        "syncbus: the listener on channel \"{}\" is back after {} ms",
                        settings_.channel, away.count());
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
    const int idle_ms = settings_.timeouts.ping_interval.count() > 0
                            ? static_cast<int>(settings_.timeouts.ping_interval.count())
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
      report(on_error_, connection_error(fmt::format(
                            "syncbus: the listener on channel \"{}\" lost its connection "
                            "({}); reconnecting. {}",
                            settings_.channel, e.what(),
                            settings_.catch_up.enabled
                                ? "It will read what it missed from the spill table"
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
      deadlines_, connection.sock(), settings_.timeouts.ping, this,
      [&] { pqxx::nontransaction(connection).exec(listen_statement(connection)); },
      [&] {
        return fmt::format("pinging the server from the listener on \"{}\"", settings_.channel);
      });
}

std::string ListenerLoop::listen_statement(pqxx::connection_base& connection) const {
  // The ping is a LISTEN on the channel the session already listens on: a
  // round trip that changes nothing, and leaves `LISTEN "<channel>"` as the
  // session's last statement in pg_stat_activity, so that operators (and
  // `syncbus status`) can tell which sessions listen on which channel.
  return "LISTEN " + connection.quote_name(settings_.channel);
}

std::size_t ListenerLoop::catch_up(ListenSession& session, std::chrono::milliseconds window) {
  constexpr std::size_t page_rows = 256;
  constexpr std::size_t page_bytes = 8 * 1024 * 1024;
  std::size_t read = 0;
  std::string after_origin;
  std::uint64_t after_sequence = 0;
  std::size_t largest = 0;  // of the page before
  auto& connection = *session.connection;
  for (;;) {
    const auto limit = static_cast<int>(rows_per_page(page_rows, page_bytes, largest));
    const auto page = run_with_deadline(
        deadlines_, connection.sock(), settings_.timeouts.query, this,
        [&] {
          return store_.fetch_recent(connection, window, after_origin, after_sequence, limit);
        },
        [&] { return fmt::format("catching up from {}", store_.qualified_name()); });
    read += page.size();
    queue_.post(decode_rows(page, /*skip_own=*/true));
    if (page.size() < static_cast<std::size_t>(limit)) return read;
    after_origin = page.back().origin;
    after_sequence = page.back().sequence;
    largest = largest_body(page);
  }
}

std::vector<Inbound> ListenerLoop::decode_rows(const std::vector<SpillStore::StoredMessage>& rows,
                                               bool skip_own) {
  std::vector<Inbound> items;
  items.reserve(rows.size());
  for (const auto& row : rows) {
    if (skip_own && row.origin == settings_.own_origin) continue;
    try {
      items.push_back({Inbound::Kind::message, {row.origin, row.sequence, body_of(row)}});
      items.back().body_bytes = row.body_json.size();
    } catch (const std::exception& e) {
      report(on_error_, protocol_error(fmt::format(
                            "syncbus: skipped spilled message {}#{} on channel \"{}\": {}",
                            row.origin, row.sequence, settings_.channel, e.what())));
      items.push_back({Inbound::Kind::lost, {row.origin, row.sequence, {}}});
    }
  }
  return items;
}

nlohmann::json ListenerLoop::body_of(const SpillStore::StoredMessage& row) const {
  return accepted_body(row, auth_, settings_.channel, settings_.max_body_bytes);
}

bool ListenerLoop::reread_step(ListenSession& session) {
  constexpr std::size_t page_rows = 256;
  const auto request = queue_.next_reread();
  if (!request) return false;
  // A page no larger than the queue can take: what does not fit is read
  // again later, so reading bodies of megabytes 256 at a time would load
  // (and drop) hundreds of them for the few that fit.
  const auto limit = static_cast<int>(
      rows_per_page(std::min(page_rows, request->room), request->room_bytes, reread_body_bytes_));
  auto& connection = *session.connection;
  const auto rows = run_with_deadline(
      deadlines_, connection.sock(), settings_.timeouts.query, this,
      [&] { return store_.fetch_from(connection, request->origin, request->from_sequence, limit); },
      [&] {
        return fmt::format("re-reading messages of {} from {}", request->origin,
                           store_.qualified_name());
      });
  reread_body_bytes_ = largest_body(rows);
  const auto next_sequence = rows.empty() ? request->from_sequence : rows.back().sequence + 1;
  queue_.post_reread(request->origin, decode_rows(rows, /*skip_own=*/false), next_sequence,
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
  std::string verified;  // reused for each signed payload's envelope
  for (const auto* payload = begin; payload != end; ++payload) {
    try {
      // Authenticated before anything else looks at it: a forgery must not
      // reach the sequence check, where it could pass for the genuine
      // message and make that one a "duplicate".
      Envelope envelope = decode_envelope(
          auth_.verify_envelope(settings_.channel, *payload, verified), settings_.own_origin);
      // This bus's own messages reach its handlers from its publisher.
      if (envelope.origin == settings_.own_origin) continue;
      if (envelope.kind == Envelope::Kind::heartbeat) {
        items.push_back(
            {Inbound::Kind::heartbeat, {std::move(envelope.origin), envelope.sequence, {}}});
        continue;
      }
      // What each inline body counts against the delivery queue's byte
      // bound: its share of the payload (pointers count their rows' sizes).
      const auto inline_share = payload->size() / std::max<std::uint64_t>(1, envelope.count);
      for (std::uint64_t i = 0; i < envelope.count; ++i) {
        const auto sequence = envelope.sequence + i;
        if (queue_.drop_if_withheld(envelope.origin, sequence)) continue;
        ClusterMessage message{envelope.origin, sequence, {}};
        std::size_t body_bytes = 0;
        if (envelope.kind == Envelope::Kind::inline_body) {
          message.body = std::move(envelope.bodies[i]);
          body_bytes = inline_share;
        } else {
          awaiting_body.push_back(items.size());
          keys.push_back({envelope.origin, sequence});
        }
        items.push_back({Inbound::Kind::message, std::move(message)});
        items.back().body_bytes = body_bytes;
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
            deadlines_, connection.sock(), settings_.timeouts.query, this,
            [&] { return store_.fetch_many(connection, some); },
            [&] {
              return fmt::format("fetching {} spilled message(s) from {}", some.size(),
                                 store_.qualified_name());
            });
      };
      // Ranges can make many keys of few payloads: bound each query (and
      // its result: spilled bodies are large).
      constexpr std::size_t keys_per_query = 128;
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
      for (const auto index : awaiting_body) items[index].kind = Inbound::Kind::lost;
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
  std::map<std::pair<std::string_view, std::uint64_t>, const SpillStore::StoredMessage*> row_of;
  for (const auto& row : rows) row_of[{row.origin, row.sequence}] = &row;
  for (const auto index : awaiting_body) {
    auto& item = items[index];
    const auto found = row_of.find({item.message.origin, item.message.sequence});
    std::string why;
    if (found == row_of.end()) {
      why = fmt::format(
          "is not in {} (vacuumed before this listener read it?). Raise the vacuum age above "
          "your listeners' worst lag",
          store_.qualified_name());
    } else {
      try {
        item.message.body = body_of(*found->second);
        item.body_bytes = found->second->body_json.size();
        continue;
      } catch (const std::exception& e) {
        why = fmt::format("was refused: {}", e.what());
      }
    }
    report(on_error_, protocol_error(fmt::format(
                          "syncbus: skipped spilled message {}#{} on channel \"{}\": it {}",
                          item.message.origin, item.message.sequence, settings_.channel, why)));
    // The message is lost: say so now, as an exact gap.
    item.kind = Inbound::Kind::lost;
  }
}

}  // namespace syncbus::detail
