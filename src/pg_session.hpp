#pragma once
// Opening libpqxx connections the way every part of the bus needs them, and
// translating libpqxx exceptions into syncbus ones (none leaks out of src/).

#include <pqxx/connection_base>
#include <pqxx/connectionpolicy>
#include <pqxx/errorhandler>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace syncbus::detail {

/// What bounds a connection attempt. libpq's own blocking connect
/// (PQconnectdb) can be interrupted by nothing: a bus being closed would wait
/// for it, and a publish would overrun its deadline.
struct ConnectLimits {
  /// Give up at this time (on top of the conninfo's connect_timeout).
  std::optional<std::chrono::steady_clock::time_point> deadline;
  /// Give up at once when this fd becomes readable (-1: none), e.g. the
  /// wake-up fd that close() signals.
  int cancel_fd = -1;
};

/// Swallows the server's notices: libpqxx's default prints them to stderr,
/// and the library writes nothing to the terminal by itself.
class NoticeSilencer final : public pqxx::errorhandler {
 public:
  using pqxx::errorhandler::errorhandler;
  bool operator()(const char[]) noexcept override { return false; }
};

/// libpqxx connection policy: connects with libpq's non-blocking calls
/// (PQconnectStart / PQconnectPoll) and poll(), so that the attempt ends at a
/// deadline or when the cancel fd is signalled. It connects once: libpqxx 6.4
/// would otherwise "reactivate" a broken connection behind our back (and
/// re-LISTEN), hiding that notifications were lost meanwhile. Every part of
/// the bus replaces a broken connection itself, on purpose.
class InterruptibleConnect final : public pqxx::connectionpolicy {
 public:
  InterruptibleConnect(const std::string& options, ConnectLimits limits);
  handle do_startconnect(handle orig) override;
  handle do_dropconnect(handle orig) noexcept override;

 private:
  ConnectLimits limits_;
  bool connected_once_ = false;
};

/// A connection of the bus: a libpqxx connection that keeps quiet, connects
/// within limits, and is never silently re-established.
class Session final : public pqxx::connection_base {
 public:
  /// Connects; throws pqxx::broken_connection when it cannot.
  Session(const std::string& conninfo, ConnectLimits limits);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

 private:
  // connection_base keeps a reference to the policy, which keeps one to the
  // options: both must be members constructed before init() runs.
  std::string options_;
  InterruptibleConnect policy_;
  NoticeSilencer silencer_{*this};
};

/// `name` cut to the 63 bytes PostgreSQL keeps of an application_name, at a
/// UTF-8 character boundary.
std::string kept_application_name(std::string name);

/// Opens a connection with client_encoding UTF8, `application_name`, and a
/// connect_timeout of 5 s unless the conninfo sets one (the attempt also ends
/// at `limits`). Throws connection_error (the libpq message, never the
/// conninfo, which may hold a password) or database_error.
std::unique_ptr<Session> open_session(const std::string& conninfo,
                                      const std::string& application_name,
                                      ConnectLimits limits = {});

/// Rethrows the exception being handled as a syncbus exception whose message
/// starts with `doing` ("publishing to channel \"x\""). Call it from a catch
/// block only. syncbus exceptions pass through unchanged.
[[noreturn]] void rethrow_as_syncbus_error(std::string_view doing);

/// Sets up a session before anything else runs on it (one round trip):
/// - search_path to pg_catalog (then pg_temp): every function and operator
///   the library's SQL names is then the server's own. A search_path from
///   the environment (PGOPTIONS='-c search_path=...') could otherwise put a
///   schema of someone else's first, whose pg_notify() or clock_timestamp()
///   would run as the bus's role. Tables are always named with their schema.
/// - statement_timeout (and, when not zero, lock_timeout): a role's own
///   setting would otherwise bound the bus's statements more tightly than
///   its documented deadlines (failing, say, the start-up checks on a loaded
///   server, or every fetch of a large body).
/// - synchronous_commit, when it is off: on (a publish acknowledged is on
///   disk, and survives a crash); any other value is kept.
void configure_session(pqxx::connection_base& session, std::chrono::milliseconds statement,
                       std::chrono::milliseconds lock = std::chrono::milliseconds(0));

/// True when the server's encoding is neither UTF8 nor SQL_ASCII, so bodies
/// must be sent as pure ASCII (\u escapes) to keep their byte sizes exact.
bool needs_ascii_payloads(pqxx::connection_base& session);

}  // namespace syncbus::detail
