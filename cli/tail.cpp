// syncbus tail: every message on a channel, as it arrives, one JSON line
// each, spill pointers followed. Read-only: it publishes nothing, creates
// nothing, and stops cleanly on Ctrl-C.
#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <poll.h>
#include <nlohmann/json.hpp>
#include <pqxx/nontransaction>
#include <pqxx/notification>

#include <iostream>
#include <map>
#include <thread>

#include "backoff.hpp"
#include "commands.hpp"
#include "connection.hpp"
#include "envelope.hpp"
#include "interrupt.hpp"
#include "message_auth.hpp"
#include "notification_inbox.hpp"
#include "pg_session.hpp"
#include "spill_store.hpp"
#include "spilled_body.hpp"

namespace syncbus::cli {
namespace {

constexpr const char* usage = R"(usage: syncbus tail [options]

Prints every message on the channel as it arrives, one JSON line each:
  {"origin":"...","sequence":7,"size":123,"spilled":false,"body":...}
following spill pointers into the spill table. Publishes nothing; stops on
Ctrl-C (exit 0). Problems with single messages go to stderr.

options:
)";

constexpr const char* usage_tail =
    R"(  --raw                print each NOTIFY payload exactly as sent instead
  --heartbeats         print heartbeats too: {"origin":"...","heartbeat":N}, and
                       a closing bus's last: {..., "goodbye":true}
  --max-bytes N        refuse spilled bodies larger than N bytes (default 64 MiB)
  --help
)";

struct Tail {
  const Connection& where;
  detail::MessageAuth auth;
  bool raw = false;
  bool heartbeats = false;
  std::size_t max_bytes = 64 * 1024 * 1024;

  void print(const nlohmann::json& line) const { std::cout << line.dump() << '\n' << std::flush; }

  static void skipped(const std::string& why) {
    std::cerr << "syncbus tail: skipped: " << why << '\n';
  }

  void show(pqxx::connection_base& connection, const detail::SpillStore& store,
            const std::string& payload) const {
    if (raw) {
      std::cout << payload << '\n' << std::flush;
      return;
    }
    std::string verified;
    detail::Envelope envelope;
    try {
      envelope = detail::decode_envelope(auth.verify_envelope(where.channel, payload, verified));
    } catch (const protocol_error& e) {
      skipped(e.what());
      return;
    }
    if (envelope.kind == detail::Envelope::Kind::heartbeat) {
      if (heartbeats) {
        nlohmann::json line{{"origin", envelope.origin}, {"heartbeat", envelope.sequence}};
        if (envelope.goodbye) line["goodbye"] = true;  // the origin closed
        print(line);
      }
      return;
    }
    if (envelope.kind == detail::Envelope::Kind::inline_body) {
      for (std::uint64_t i = 0; i < envelope.count; ++i) {
        const auto text = envelope.bodies[i].dump();
        print({{"origin", envelope.origin},
               {"sequence", envelope.sequence + i},
               {"size", text.size()},
               {"spilled", false},
               {"body", std::move(envelope.bodies[i])}});
      }
      return;
    }
    std::vector<detail::SpillStore::MessageKey> keys;
    for (std::uint64_t i = 0; i < envelope.count; ++i) {
      keys.push_back({envelope.origin, envelope.sequence + i});
    }
    std::map<std::uint64_t, detail::SpillStore::StoredMessage> rows;
    try {
      for (auto& row : store.fetch_many(connection, keys)) rows[row.sequence] = std::move(row);
    } catch (...) {
      detail::rethrow_as_syncbus_error("reading spilled messages from " + store.qualified_name());
    }
    for (const auto& key : keys) {
      const auto found = rows.find(key.sequence);
      if (found == rows.end()) {
        skipped(fmt::format("{}#{} is not in {} (vacuumed?)", key.origin, key.sequence,
                            store.qualified_name()));
        continue;
      }
      try {
        auto body = detail::accept_spilled_body(found->second, auth, where.channel, max_bytes);
        print({{"origin", key.origin},
               {"sequence", key.sequence},
               {"size", found->second.body_json.size()},
               {"spilled", true},
               {"body", std::move(body)}});
      } catch (const protocol_error& e) {
        skipped(fmt::format("{}#{}: {}", key.origin, key.sequence, e.what()));
      }
    }
  }

  // Listens until Ctrl-C (returns) or a lost connection (throws); sets
  // `connected` once listening.
  void listen_once(int stop_fd, bool& connected) const {
    auto connection = open_session(where, "syncbus:tail", {std::nullopt, stop_fd});
    detail::SpillStore store(*connection,
                             {where.schema, where.table, where.channel, auth.enabled(), max_bytes});
    store.prepare(*connection);
    std::vector<detail::Notification> pending;
    std::unique_ptr<detail::NotificationInbox> inbox;
    try {
      detail::SpillStore::read_by_key_only(*connection);
      inbox = std::make_unique<detail::NotificationInbox>(*connection, where.channel, pending);
    } catch (...) {
      detail::rethrow_as_syncbus_error("listening on channel \"" + where.channel + "\"");
    }
    connected = true;
    std::cerr << "syncbus tail: listening on channel \"" << where.channel
              << "\" (Ctrl-C to stop)\n";
    for (;;) {
      pollfd fds[2] = {{connection->sock(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
      const int ready = ::poll(fds, 2, 5000);
      if (interrupted()) return;
      try {
        // Silence for 5 s: check that the server is still there.
        if (ready == 0) pqxx::nontransaction(*connection).exec("SELECT 1");
        for (;;) {
          connection->get_notifs();
          if (!connection->is_open()) throw pqxx::broken_connection("the connection was lost");
          if (pending.empty()) break;
          std::vector<detail::Notification> arrived;
          arrived.swap(pending);
          for (const auto& notification : arrived) show(*connection, store, notification.payload);
        }
      } catch (const syncbus::error&) {
        throw;
      } catch (...) {
        detail::rethrow_as_syncbus_error("reading notifications");
      }
    }
  }
};

}  // namespace

int run_tail(const Arguments& args) {
  CommandLine line = [&] {
    auto valued = connection_options();
    valued.push_back("max-bytes");
    return CommandLine(args, valued, {"raw", "heartbeats", "help"});
  }();
  if (line.has("help")) {
    std::cout << usage << connection_help << usage_tail;
    return exit_ok;
  }
  const auto where = connection_from(line);
  check_identifiers(where);  // the spill table is read too
  Tail tail{where, detail::MessageAuth(where.secrets)};
  tail.raw = line.has("raw");
  tail.heartbeats = line.has("heartbeats");
  if (auto max = line.value("max-bytes")) tail.max_bytes = std::stoull(*max);
  const int stop_fd = interrupt_fd();
  unsigned failures = 0;  // reconnections in a row
  bool connected = false;
  for (;;) {
    try {
      tail.listen_once(stop_fd, connected);
      return exit_ok;  // Ctrl-C
    } catch (const connection_error& e) {
      if (interrupted()) return exit_ok;
      if (!connected) throw;  // never got going: say why and stop
      std::cerr << "syncbus tail: " << e.what() << "; reconnecting (messages sent meanwhile are "
                << "missed)\n";
      pollfd stop{stop_fd, POLLIN, 0};
      const auto pause = detail::reconnect_backoff.after(++failures);
      if (::poll(&stop, 1, static_cast<int>(pause.count())) > 0) return exit_ok;
    }
  }
}

}  // namespace syncbus::cli
