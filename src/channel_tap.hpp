#pragma once
// A tool's view of a channel, beside the handlers': `syncbus tail` sees
// through it what a bus hears (every payload as sent, or every message,
// heartbeat and goodbye in stream order, with how it came). It is a bus's
// own listener and delivery stage that feed it, so the tool connects,
// pings, reconnects, checks and follows pointers exactly as a bus does.
// A bus has none (both empty).

#include <functional>

#include "inbound.hpp"
#include "notification_inbox.hpp"

namespace syncbus::detail {

struct ChannelTap {
  /// Every notification on the channel, as sent, before anything is
  /// checked; on the listener's thread, in arrival order.
  std::function<void(const Notification&)> on_payload;
  /// Every message that passes the sequence check (Kind::message, whether
  /// or not a handler hears it; the body may still be JSON text:
  /// Inbound::body_text), and every heartbeat and goodbye; on the delivery
  /// thread, in stream order, before the handlers see the message.
  std::function<void(const Inbound&)> on_delivered;
};

}  // namespace syncbus::detail
