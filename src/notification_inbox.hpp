#pragma once
// Where libpqxx hands over the notifications of one channel: collected in
// order during get_notifs(), and handled afterwards, outside libpqxx's
// callback (where the connection may run statements again). Constructing
// an inbox LISTENs on its channel; destroying it UNLISTENs. Used by the
// bus's listener and its start-up probe (notify_probe.cpp, which doctor uses).

#include <pqxx/notification>

#include <string>
#include <vector>

namespace syncbus::detail {

/// One notification: its payload, and the server process that sent it.
struct Notification {
  std::string payload;
  int sender_pid = 0;
};

class NotificationInbox final : public pqxx::notification_receiver {
 public:
  /// Appends what arrives on `channel` to `sink`, which must outlive it.
  NotificationInbox(pqxx::connection_base& session, const std::string& channel,
                    std::vector<Notification>& sink)
      : pqxx::notification_receiver(session, channel), sink_(sink) {}
  void operator()(const std::string& payload, int backend_pid) override {
    sink_.push_back({payload, backend_pid});
  }

 private:
  std::vector<Notification>& sink_;
};

}  // namespace syncbus::detail
