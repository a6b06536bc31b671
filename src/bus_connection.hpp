#pragma once
// The bus's own connection (the one that is not the listener's): a slot
// holding one session, replaced when it breaks, every statement under a
// deadline. It sends the publisher's batches and heartbeats, and serves the
// bus's other statements (vacuum, the NOTIFY-queue watch, the watchdog, the
// start-up probe) in between: the Publisher decides who holds it
// (Publisher::borrow_connection); whoever holds it is the only one using
// it, so the slot itself takes no lock.
//
// A broken session is dropped and the next statement opens a new one (never
// libpqxx's silent reactivation), bounded by that statement's deadline and
// cut short by close(), and set up as the first was: the session's settings
// (configure_session), then the holder's `setup` (prepared statements, the
// signing identity).
//
// A session dropped with a statement in flight (its deadline cut it, say,
// while it waited behind a lock) may live on in the server, and its
// statement commit later: after the batch the publisher sends next, on the
// new session. An origin's messages would then commit out of order, which
// every reader assumes they never do (catching up, positions). So before a
// new session runs anything, the old server process is ended
// (pg_terminate_backend, by process id and start time) and seen gone: what
// it was doing committed before, or never will.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "deadline_timer.hpp"
#include "pg_session.hpp"
#include "statement_deadline.hpp"
#include "wake_fd.hpp"

namespace syncbus::detail {

class BusConnection {
 public:
  struct Settings {
    std::string conninfo;
    std::string application_name;
    /// The server-side statement_timeout of each new session: no sooner
    /// than the bus's own deadlines would end a statement.
    std::chrono::milliseconds statement_timeout;
  };
  /// Run on each new session (the first included) before any other use,
  /// under the deadline of the statement that needed it.
  using Setup = std::function<void(Session&)>;

  /// Takes `first`, open and configured, and runs `setup` on it within
  /// `timeout`.
  BusConnection(std::unique_ptr<Session> first, Settings settings, DeadlineTimer& deadlines,
                Setup setup, std::chrono::milliseconds timeout);
  BusConnection(const BusConnection&) = delete;
  BusConnection& operator=(const BusConnection&) = delete;

  /// Runs work(session) within `timeout`, opening a new session first when
  /// the last one broke (within the same time). Throws what the work threw,
  /// as a syncbus error (timeout_error when the deadline cut it); after a
  /// connection_error (a timeout is one), the session is dropped.
  /// `describe()` says what was being done, for errors.
  template <typename Work, typename Describe>
  auto run(std::chrono::milliseconds timeout, Work&& work, Describe&& describe) {
    try {
      Session& session = open(timeout);
      return run_with_deadline(
          deadlines_, session.sock(), timeout, this, [&] { return work(session); }, describe);
    } catch (const connection_error&) {
      // Timed out or broken: reconnect on the next call, once the server
      // process of this session is gone.
      if (session_ && backend_.pid != 0) abandoned_ = backend_;
      session_.reset();
      throw;
    }
  }

  /// True while a session is open (it may still turn out broken).
  bool has_session() const noexcept { return session_ != nullptr; }

  /// Sleeps for `length` unless close() was called (then returns false at
  /// once).
  bool pause(std::chrono::milliseconds length) {
    return closing_wake_.sleep_unless_signalled(length);
  }
  bool closing() const noexcept { return closing_.load(); }

  /// From any thread: a connection attempt or pause ends at once, and the
  /// statement in flight fails at once. The holder then calls drop().
  void close() noexcept;
  /// Closes the session (by its holder, after close()).
  void drop() noexcept { session_.reset(); }

 private:
  Session& open(std::chrono::milliseconds timeout);

  Settings settings_;
  DeadlineTimer& deadlines_;
  Setup setup_;
  std::atomic<bool> closing_{false};
  WakeFd closing_wake_;
  std::unique_ptr<Session> session_;  // null after a broken connection
  /// The server process of the session in use, and of one dropped with a
  /// statement in flight, not yet seen gone (its start time tells it from
  /// a later process with the same id).
  struct Backend {
    int pid = 0;
    std::string started;
  };
  Backend backend_;
  std::optional<Backend> abandoned_;
  /// Reads backend_ of `session` (a round trip).
  void identify(Session& session);
  /// Ends abandoned_ and waits until it is gone, within `timeout`.
  void end_abandoned(Session& session, std::chrono::milliseconds timeout);
};

}  // namespace syncbus::detail
