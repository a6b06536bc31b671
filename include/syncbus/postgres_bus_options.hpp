#pragma once
/// \file postgres_bus_options.hpp
/// The options of a PostgresClusterBus.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include <syncbus/gap_event.hpp>
#include <syncbus/log.hpp>
#include <syncbus/queue_policy.hpp>
#include <syncbus/spill_mode.hpp>

namespace syncbus {

/// Options of a PostgresClusterBus. Only `conninfo` is required.
struct PostgresBusOptions {
  /// libpq connection string or URI, e.g. "postgresql://app@db/app" or
  /// "host=127.0.0.1 port=5432 dbname=app user=app".
  std::string conninfo;
  /// The NOTIFY channel: every bus on the same channel and database hears
  /// the others. Used exactly as written (case-sensitive, quoted): 1 to 63
  /// bytes of UTF-8. Longer names are refused, never truncated.
  std::string channel = "absolutejs_sync_cluster";
  /// See SpillMode. SpillMode::always is also the confidential mode: the
  /// NOTIFY, which any role that can connect may LISTEN to, then carries
  /// only a pointer, and the table's grants decide who reads the bodies
  /// (docs/SECURITY.md).
  SpillMode spill = SpillMode::overflow;
  /// false: a publish-only bus, for a process that sends and never needs to
  /// hear (a job runner, an API node without live clients). It opens no
  /// listening session, so the server does not wake one more session per
  /// message for it and it does not wake to discard its own echoes;
  /// subscribe() then throws configuration_error.
  bool listen = true;
  /// Shared secrets for message authentication (HMAC-SHA256): when set,
  /// every envelope and spilled body is signed with the first, and anything
  /// received that is unsigned or signed with none of them is dropped and
  /// reported before it can be delivered or mistaken for a duplicate. List
  /// a new secret first and keep the old one after it while rotating. Each
  /// at least 16 bytes (32 random bytes recommended). Never shown in errors.
  /// Empty: off (any role that can connect could forge messages).
  std::vector<std::string> secrets;
  /// The largest message body, in bytes of JSON: publish() refuses larger
  /// ones (payload_too_large), and a listener refuses a spilled body larger
  /// than this without loading it. Same on every bus of a channel.
  std::size_t max_message_bytes = 64 * 1024 * 1024;
  /// Receives listener-side errors (invalid payloads on the channel, spill
  /// rows that are gone, lost connections, exceptions thrown by handlers).
  /// Called on a thread of the bus; must not block for long. Exceptions it
  /// throws are ignored. Empty: such errors are dropped.
  std::function<void(const std::exception&)> on_error;
  /// Receives gap events: messages this bus knows it missed (see GapEvent).
  /// Called on the delivery thread, in stream order.
  GapHandler on_gap;
  /// Receives the bus's log records at log_level and above: start, lost and
  /// regained connections, catch-ups, gaps, and every error also given to
  /// on_error. The library prints nothing itself. Empty: no log.
  LogHandler log;
  LogLevel log_level = LogLevel::info;
  /// When the bus has published nothing for this long, it sends a heartbeat
  /// carrying its last sequence number, so receivers also find a loss at the
  /// tail of a burst, and keep remembering this origin (a receiver forgets
  /// an origin silent for about half an hour). At most 5 minutes; zero
  /// disables heartbeats.
  std::chrono::milliseconds heartbeat_interval{2000};
  /// Client-side deadline of publish() (and heartbeats): past it, publish()
  /// throws timeout_error and the connection is replaced. A frozen server is
  /// only noticed this way; TCP keepalives do not see it.
  std::chrono::milliseconds publish_timeout{5000};
  /// Group commit: publishes that arrive while a transaction is in flight go
  /// out together in the next one. A message finding the connection free goes
  /// at once, unless this is non-zero: the sender then waits this long for
  /// more messages first (fewer, fuller transactions for some latency).
  std::chrono::microseconds publish_linger{0};
  /// The publish queue: messages wait in it while a transaction is in flight
  /// (publish_async callers do not wait for theirs). When this many bytes of
  /// bodies are waiting, publish() and publish_async() block until there is
  /// room (backpressure), for at most publish_timeout (then timeout_error,
  /// nothing sent). A message larger than this still goes, alone.
  std::size_t publish_queue_bytes = 16 * 1024 * 1024;
  /// The listener pings the server after this long without traffic (0: never)
  /// and reconnects if the answer takes longer than ping_timeout, so a frozen
  /// server or a silent network is noticed within their sum.
  std::chrono::milliseconds ping_interval{2000};
  std::chrono::milliseconds ping_timeout{3000};
  /// Client-side deadline of every other statement (spill fetches, catching
  /// up, vacuum). The listening session also has the server end a statement
  /// just before it (statement_timeout) and a lock wait at half of it
  /// (lock_timeout), then tries again: the rows are still there. Connecting
  /// is bounded by the conninfo's connect_timeout (5 s unless it sets one;
  /// also for a server that accepts the TCP connection and then says
  /// nothing), and for publish() by its own deadline; close() interrupts a
  /// connection attempt at once.
  std::chrono::milliseconds query_timeout{10000};
  /// Every this often the bus reads pg_notification_queue_usage() (into
  /// stats()) and reports to on_error when it is at or above
  /// queue_usage_warning: some listening session on the server has stopped
  /// reading, and when the queue is full every NOTIFY fails. 0: never.
  std::chrono::milliseconds queue_usage_interval{5000};
  double queue_usage_warning = 0.1;
  /// Opt-in watchdog: every this often, terminate syncbus sessions (found by
  /// an application_name starting with "syncbus:") that have been idle in a
  /// transaction, or blocked writing to their client, for longer than
  /// watchdog_stuck_after: such a session holds back the server-wide NOTIFY
  /// queue for every channel. Needs the right to signal those backends (the
  /// same role, or pg_signal_backend). 0: off (the default).
  std::chrono::milliseconds watchdog_interval{0};
  std::chrono::milliseconds watchdog_stuck_after{10000};
  /// Messages the delivery queue holds while handlers are busy (at least 1),
  /// and the bytes of their bodies (JSON text, as received) it holds at most:
  /// it is full at whichever bound comes first (a message larger than
  /// delivery_queue_bytes still fits, alone). Then queue_full_policy decides
  /// what happens. Waiting messages take about twice the byte bound at most
  /// (the queue, plus the batch the handlers are working through), more
  /// where a parsed body (nlohmann::json) is larger than its text.
  std::size_t delivery_queue_capacity = default_delivery_queue_capacity;
  std::size_t delivery_queue_bytes = default_delivery_queue_bytes;
  QueueFullPolicy queue_full_policy = QueueFullPolicy::automatic;

  /// A readable name for the bus: 1 to 55 characters of [A-Za-z0-9._:-],
  /// e.g. the host or pod name. The bus's identity, instance_id() (the
  /// `origin` of its messages), is this name followed by '.' and 8 random hex
  /// digits, new for every bus: receivers number each origin's messages, so a
  /// restarted instance must never reuse its previous run's origin (its
  /// messages would be dropped as duplicates). Empty: 14 random hex digits.
  std::string instance_id;
  /// Schema and name of the spill table.
  std::string spill_schema = "public";
  std::string spill_table = "sync_cluster_spill";
  /// Create the spill table at construction when it is missing (idempotent,
  /// safe when several instances start at once). Set to false when schema is
  /// managed by migrations (see docs/OPERATIONS.md for the SQL); construction
  /// then fails with a clear error if the table is missing, except for a bus
  /// with SpillMode::never, which writes no rows: it starts without the
  /// table (with a warning in its log) and reads the spilled messages of
  /// others once it exists.
  bool create_spill_table = true;
  /// application_name of the bus's publishing connection, visible in
  /// pg_stat_activity; its listening connection's is the same followed by
  /// ":listen". Empty: "syncbus:" followed by the instance id. (PostgreSQL
  /// keeps the first 63 bytes.)
  std::string application_name;
};

}  // namespace syncbus
