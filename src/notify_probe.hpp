#pragma once
// Does a NOTIFY reach a LISTEN on this connection path? Not through a
// transaction- or statement-pooling proxy (PgBouncer pool_mode=transaction),
// where a session's LISTEN is forgotten once its transaction ends. A bus's
// listener proves it at start-up; `syncbus doctor` checks it.

#include <chrono>
#include <functional>
#include <string>

#include <pqxx/connection_base>

namespace syncbus::detail {

/// Sends `payload` on `channel` over another connection.
using NotifySender = std::function<void(const std::string& channel, const std::string& payload)>;

/// LISTENs on a fresh private channel on `listening`, has `send` NOTIFY a
/// fresh token on it, and waits up to `wait` for the token to come back;
/// UNLISTENs before returning. False when it did not come. Throws
/// closed_error as soon as `stop_fd` (when not -1) becomes readable, and
/// what the statements throw. Notifications of other channels that arrive
/// meanwhile stay with their own receivers.
bool notify_reaches_listen(pqxx::connection_base& listening, const NotifySender& send,
                           std::chrono::milliseconds wait, int stop_fd = -1);

}  // namespace syncbus::detail
