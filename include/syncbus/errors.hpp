#pragma once
/// \file errors.hpp
/// The exceptions syncbus throws. Every one derives from syncbus::error, so
/// `catch (const syncbus::error&)` catches everything the library reports.
/// Messages say what failed, with which value, and what to do about it.
/// Database driver exceptions are translated inside the library; none leaks.

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

#include <syncbus/export.hpp>

namespace syncbus {

// Adding a type: the publisher carries a failed batch's error to each of
// its callers as a value (src/failure.cpp), which must know the new type
// (tests/test_failure.cpp lists every one).

/// Root of every exception syncbus throws.
class SYNCBUS_API error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An option or argument is invalid (empty conninfo, bad channel name,
/// negative vacuum age, ...). Nothing was sent or changed.
class SYNCBUS_API configuration_error : public error {
 public:
  using error::error;
};

/// The PostgreSQL server could not be reached, or the connection broke.
class SYNCBUS_API connection_error : public error {
 public:
  using error::error;
};

/// A statement did not finish within its client-side deadline (a frozen or
/// unreachable server, or a lost network). The connection was dropped and is
/// replaced on the next call. For publish(): the message may or may not have
/// been committed; its sequence number is never reused, so receivers see
/// either the message or a gap, never a duplicate.
class SYNCBUS_API timeout_error : public connection_error {
 public:
  using connection_error::connection_error;
};

/// A statement failed on the server. sqlstate() is the server's five-character
/// SQLSTATE code ("" when unknown), e.g. "42501" for a missing privilege.
class SYNCBUS_API database_error : public error {
 public:
  database_error(const std::string& what, std::string sqlstate)
      : error(what), sqlstate_(std::move(sqlstate)) {}
  /// The server's SQLSTATE code for the failure, or "" when unknown.
  const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  std::string sqlstate_;
};

/// PostgreSQL's server-wide NOTIFY queue is full (SQLSTATE 54000): some
/// listening session stopped reading (stuck in a transaction, or a process
/// that stopped draining its socket) and every NOTIFY on the server now
/// fails. Find it with pg_notification_queue_usage() and pg_stat_activity.
class SYNCBUS_API notify_queue_full : public database_error {
 public:
  using database_error::database_error;
};

/// A message does not fit in a NOTIFY payload and the bus was configured with
/// SpillMode::never. Nothing was sent and no sequence number was used.
class SYNCBUS_API payload_too_large : public error {
 public:
  payload_too_large(const std::string& what, std::size_t size, std::size_t limit)
      : error(what), size_(size), limit_(limit) {}
  /// Size in bytes of the envelope that would have been sent.
  std::size_t size() const noexcept { return size_; }
  /// The largest envelope size that can be sent inline, plus one
  /// (PostgreSQL rejects payloads of this many bytes or more).
  std::size_t limit() const noexcept { return limit_; }

 private:
  std::size_t size_;
  std::size_t limit_;
};

/// A message body cannot be published, e.g. a JSON string that holds invalid
/// UTF-8. Nothing was sent.
class SYNCBUS_API invalid_message : public error {
 public:
  using error::error;
};

/// A notification on the channel is not a valid syncbus envelope (garbage,
/// an unknown protocol version, a spill pointer to a row that is gone).
/// Reported to the on_error handler; the listener keeps running.
class SYNCBUS_API protocol_error : public error {
 public:
  using error::error;
};

/// A position (ClusterMessage::position) that cannot be read: not a
/// position at all (mistyped, cut short), or one from another channel,
/// spill table or database (another server's, or one restored from a dump,
/// whose transaction ids are not these). Nothing was changed.
class SYNCBUS_API invalid_position : public error {
 public:
  using error::error;
};

/// A position (ClusterMessage::position) that is too old: vacuum has deleted
/// rows it leaves out, so resuming from it would skip them. Fall back to
/// what a client that has no position gets (a fresh snapshot of the state).
/// Thrown by subscribe_from(); or, when vacuum deletes such rows while a
/// resumed subscription is still reading (a position within moments of the
/// vacuum age), or when subscribe_from() could not check at once (another
/// session held a lock on the removal log), reported to on_error, after
/// which that subscription's handler is called no more.
class SYNCBUS_API position_expired : public error {
 public:
  position_expired(const std::string& what, std::string position)
      : error(what), position_(std::move(position)) {}
  /// The position resumed from, as given to subscribe_from().
  const std::string& position() const noexcept { return position_; }

 private:
  std::string position_;
};

/// The bus was closed: publish() and subscribe() are no longer possible.
class SYNCBUS_API closed_error : public error {
 public:
  using error::error;
};

}  // namespace syncbus
