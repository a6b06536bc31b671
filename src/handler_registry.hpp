#pragma once
// The handlers of one bus, and the rule of who hears what: a handler hears
// the messages that reach the bus while it is subscribed, and nothing from
// before. Each subscription gets a number, in order; a message arriving at
// the bus is stamped with the newest number at that moment (its audience),
// and is later delivered only to the subscriptions numbered up to it. So a
// handler that subscribes while the others are busy does not hear what was
// already waiting for them.

#include <syncbus/cluster_bus.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "error_sink.hpp"

namespace syncbus::detail {

/// A message, the newest subscription that may hear it, and when its
/// publisher sent it (Inbound::sent_at).
struct Delivery {
  ClusterMessage message;
  std::uint64_t audience = 0;
  std::optional<std::chrono::steady_clock::time_point> sent_at;
};

/// Shared with every Subscription it hands out, so a Subscription may
/// outlive its bus. Thread-safe.
class HandlerRegistry : public std::enable_shared_from_this<HandlerRegistry> {
 public:
  /// Throws configuration_error for an empty handler. `number`, when
  /// given, is set to the subscription's number (see deliver_to).
  Subscription add(MessageHandler handler, std::uint64_t* number = nullptr);

  /// The audience of a message arriving now: the newest subscription's
  /// number, or 0 when no handler is subscribed (nobody will hear it).
  std::uint64_t audience() const;

  /// Calls every handler that may hear each message (subscribed when it
  /// arrived, and still subscribed), in order, until `cancel` becomes true.
  /// Exceptions thrown by handlers go to `sink`. `handed` (if set) is
  /// called with each delivery once its handlers are done, and the moment
  /// it was handed to them.
  using Handed =
      std::function<void(const Delivery&, std::chrono::steady_clock::time_point handed_at)>;
  void deliver(const std::vector<Delivery>& deliveries, const ErrorSink& sink,
               const std::atomic<bool>& cancel, const Handed& handed = {});
  /// Calls the handler of subscription `number` alone, if still subscribed,
  /// with each message in order, as deliver() does (a resuming
  /// subscription's read messages: resume.hpp).
  void deliver_to(std::uint64_t number, const std::vector<ClusterMessage>& messages,
                  const ErrorSink& sink, const std::atomic<bool>& cancel);

 private:
  struct Entry {
    MessageHandler handler;
    std::uint64_t number = 0;
    std::atomic<bool> active{true};
  };
  void remove(const std::shared_ptr<Entry>& entry);
  static void call(const Entry& entry, const ClusterMessage& message, const ErrorSink& sink);

  // Held while handlers run. Recursive so that a handler may subscribe or
  // unsubscribe; a cancel from another thread waits on it, which is how
  // unsubscribe() guarantees the handler is not running when it returns.
  std::recursive_mutex delivering_;
  mutable std::mutex entries_mutex_;
  std::vector<std::shared_ptr<Entry>> entries_;  // in subscription order
  std::uint64_t last_number_ = 0;                // guarded by entries_mutex_
};

}  // namespace syncbus::detail
