#pragma once
/// \file cluster_bus.hpp
/// The contract a sync engine codes against: publish a change, hear every
/// change of every instance on the same channel.

#include <cstdint>
#include <functional>
#include <future>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

// What its functions throw, complete for a catch (syncbus::error and the rest).
#include <syncbus/errors.hpp>
#include <syncbus/export.hpp>

namespace syncbus {

namespace detail {
/// Text types: what publish() refuses to take as a body (see ClusterBus).
template <typename T>
struct is_text : std::false_type {};
template <>
struct is_text<std::string> : std::true_type {};
template <>
struct is_text<std::string_view> : std::true_type {};
template <>
struct is_text<const char*> : std::true_type {};
template <>
struct is_text<char*> : std::true_type {};
template <std::size_t N>
struct is_text<char[N]> : std::true_type {};
template <typename T>
inline constexpr bool is_text_v = is_text<std::remove_cv_t<std::remove_reference_t<T>>>::value;
template <typename T>
inline constexpr bool dependent_false = false;
}  // namespace detail

/// One message as a subscriber receives it.
struct ClusterMessage {
  /// instance_id() of the bus that published it.
  std::string origin;
  /// 1, 2, 3, ... per origin, in publish order: receivers can order, dedupe
  /// and detect gaps with it.
  std::uint64_t sequence = 0;
  /// The JSON value given to publish().
  nlohmann::json body;
  /// Where the channel's stream stands just after this message, as this bus
  /// delivers it: a short printable token (letters, digits, '-', '_', '.')
  /// that names every message this bus has delivered up to and including
  /// this one, or reported as a gap. A client keeps the position of the
  /// last message it got as its `since`. Empty when the bus gives no
  /// positions: only a PostgresClusterBus in SpillMode::always gives them
  /// (there every message is a row of the spill table, which is what lets
  /// another bus of the channel find what comes after a position).
  /// docs/PROTOCOL.md, "Positions", says what one holds.
  std::string position;
};

/// Handler called for each delivered message.
using MessageHandler = std::function<void(const ClusterMessage&)>;

/// Move-only RAII handle of one subscribe() call.
///
/// Destroying it, or calling unsubscribe(), stops delivery to its handler:
/// once unsubscribe() returns, the handler is not running and will not be
/// called again (unless unsubscribe() is called from inside that very
/// handler, in which case the current call simply finishes). Because it
/// waits, do not call it while holding a lock that the handler takes. A default-
/// constructed Subscription is empty. A Subscription may outlive its bus.
/// Not thread-safe itself: one Subscription object belongs to one thread at a
/// time (different Subscriptions may be used from different threads).
class SYNCBUS_API Subscription {
 public:
  Subscription() noexcept = default;
  /// For bus implementations: `cancel` is called once, by unsubscribe() or
  /// the destructor, and must stop delivery before it returns.
  explicit Subscription(std::function<void()> cancel) noexcept;
  ~Subscription();

  Subscription(Subscription&& other) noexcept;
  /// Unsubscribes the handler this object held, then takes over `other`'s.
  Subscription& operator=(Subscription&& other) noexcept;
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  /// Stops delivery to the handler. Idempotent; never throws.
  void unsubscribe() noexcept;
  /// True until unsubscribe() is called (false when default-constructed).
  bool active() const noexcept { return static_cast<bool>(cancel_); }

 private:
  std::function<void()> cancel_;
};

/// The cross-instance seam of a sync engine.
///
/// Delivery semantics, shared by every implementation:
/// - every published message is delivered to every subscriber of every bus on
///   the same channel, the publisher's own subscribers included (an engine
///   filters by ClusterMessage::origin when it must not re-apply its own
///   changes);
/// - messages of one origin arrive in publish order;
/// - handlers of one bus run on that bus's delivery thread, one at a time,
///   never on the thread that calls publish(); an exception thrown by a
///   handler is reported to the bus's error handler and does not stop
///   delivery.
///
/// Thread safety: every member function may be called from any thread
/// concurrently, including from inside a handler, except destroying the bus
/// from inside one of its own handlers.
class SYNCBUS_API ClusterBus {
 public:
  virtual ~ClusterBus() = default;

  /// This bus's identity: the `origin` of every message it publishes. Unique
  /// to this bus object: a bus created again (a restarted instance) has a new
  /// one, even when configured with the same name.
  virtual const std::string& instance_id() const = 0;

  /// Publishes `body` to every bus on the channel. Returns once the message is
  /// committed (durably handed to the transport); throws syncbus::error when
  /// it was not, never dropping a message silently. Throws closed_error after
  /// close().
  virtual void publish(const nlohmann::json& body) = 0;

  /// publish() without waiting: returns a future that becomes ready once the
  /// message is committed, or holds the error publish() would have thrown.
  /// This default publishes at once and returns a ready future.
  [[nodiscard]] virtual std::future<void> publish_async(const nlohmann::json& body);

  /// Text is not taken as a body: publish(std::string{"{\"id\":1}"}) would
  /// send a JSON *string*, not the object it spells, and receivers would get
  /// is_string(). Say which you mean: publish(nlohmann::json::parse(text))
  /// for the JSON a text holds, publish(nlohmann::json(text)) for a string.
  template <typename Text, std::enable_if_t<detail::is_text_v<Text>, int> = 0>
  void publish(Text&&) {
    static_assert(detail::dependent_false<Text>,
                  "syncbus: publish() takes a JSON value, not text: pass "
                  "nlohmann::json::parse(text) to send the JSON the text holds, or "
                  "nlohmann::json(text) to send it as a JSON string");
  }
  template <typename Text, std::enable_if_t<detail::is_text_v<Text>, int> = 0>
  std::future<void> publish_async(Text&&) {
    static_assert(detail::dependent_false<Text>,
                  "syncbus: publish_async() takes a JSON value, not text: pass "
                  "nlohmann::json::parse(text) to send the JSON the text holds, or "
                  "nlohmann::json(text) to send it as a JSON string");
    return {};
  }

  /// Registers `handler` for every message that reaches this bus from now on
  /// (a message that reached it earlier, even one not yet handed to the other
  /// handlers, is not replayed to it). Delivery stops when the returned
  /// Subscription is destroyed or unsubscribed: keep it for as long as the
  /// handler should hear messages (one thrown away, as an unused return
  /// value is at once, delivers nothing; hence [[nodiscard]]). Throws closed_error after
  /// close() and configuration_error for an empty handler (or on a bus made
  /// to publish only, such as PostgresBusOptions::listen = false).
  [[nodiscard]] virtual Subscription subscribe(MessageHandler handler) = 0;

  /// Registers `handler` for every message after `position` (a
  /// ClusterMessage::position this bus or another bus of the same channel
  /// gave), then for every message that reaches this bus from now on, as
  /// subscribe() does: first, on the delivery thread, every message the
  /// position leaves out that this bus has delivered (in order per origin,
  /// each carrying its own position), then live ones, with none lost and
  /// none repeated at the seam. Returns once the position is checked; the
  /// messages before the seam follow on the delivery thread.
  ///
  /// Throws invalid_position for text that is not a position of this
  /// channel, position_expired when vacuum has deleted messages it leaves
  /// out (the client then needs what it gets without a position), and
  /// configuration_error on a bus that gives no positions. This default
  /// throws configuration_error; PostgresClusterBus (in SpillMode::always)
  /// and InMemoryClusterBus implement it.
  [[nodiscard]] virtual Subscription subscribe_from(std::string_view position,
                                                    MessageHandler handler);

  /// Stops the bus: no handler runs once close() returns (messages not yet
  /// delivered are discarded), later publish() calls throw closed_error.
  /// Idempotent; called by the destructor.
  virtual void close() = 0;

 protected:
  ClusterBus() = default;
  ClusterBus(const ClusterBus&) = delete;
  ClusterBus& operator=(const ClusterBus&) = delete;
};

}  // namespace syncbus
