#include "notify_probe.hpp"

#include <syncbus/errors.hpp>

#include <poll.h>
#include <pqxx/except>

#include <algorithm>
#include <vector>

#include "instance_id.hpp"
#include "notification_inbox.hpp"

namespace syncbus::detail {

bool notify_reaches_listen(pqxx::connection_base& listening, const NotifySender& send,
                           std::chrono::milliseconds wait, int stop_fd) {
  // A channel of its own, so that no bus sees the probe.
  const auto channel = "syncbus_probe_" + random_hex(16);
  const auto token = random_hex(16);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::vector<Notification> arrived;
  NotificationInbox inbox(listening, channel, arrived);  // UNLISTENs when it goes
  if (!listening.is_open()) throw pqxx::broken_connection("the connection broke");
  send(channel, token);
  const auto came = [&] {
    return std::any_of(arrived.begin(), arrived.end(),
                       [&](const Notification& n) { return n.payload == token; });
  };
  while (!came()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd fds[2] = {{listening.sock(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(fds, stop_fd >= 0 ? 2 : 1, static_cast<int>(left.count())) > 0 && stop_fd >= 0 &&
        fds[1].revents != 0) {
      throw closed_error("syncbus: stopped while proving that NOTIFY reaches LISTEN");
    }
    listening.get_notifs();
  }
  return true;
}

}  // namespace syncbus::detail
