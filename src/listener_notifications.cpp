// The listener's notifications: payloads become Inbound items, checked for
// authenticity and freshness, with the bodies of spill pointers read from
// the table (listener.hpp says which file holds which of its jobs).
#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <algorithm>

#include "envelope.hpp"
#include "listen_session.hpp"
#include "listener.hpp"

namespace syncbus::detail {
namespace {

// A signed envelope older than this is refused as stale: a replay, or a
// listener that stopped reading for this long. Origins are remembered far
// longer (DeliveryQueue: about half an hour), so any envelope fresh enough
// to be taken comes from an origin whose messages this bus still knows:
// a replay of one is a duplicate.
constexpr std::chrono::minutes freshness_window{10};

// How far apart two buses' estimates of the server's clock may be and still
// be taken to agree: half a round trip each (ServerClock), more through a
// proxy that holds small packets back (measured from outside: a 1 ms TCP
// hop made 30 % of the messages published right after a bus started look
// signed before it). A message signed less than this before the listener
// started hearing everything is taken as signed after; so a replay of one
// signed in that second may reach a bus that just started (docs/SECURITY.md).
// A step of the server's clock is larger: see ServerClock.
constexpr std::chrono::seconds clock_tolerance{1};

std::uint64_t ms(std::chrono::milliseconds d) { return static_cast<std::uint64_t>(d.count()); }

}  // namespace

void ListenerLoop::decode_and_deliver(ListenSession& session,
                                      const std::vector<Notification>& notifications) {
  if (tap_.on_payload) {
    for (const auto& notification : notifications) {
      call_reporting(on_error_, "the channel tap", [&] { tap_.on_payload(notification); });
    }
  }
  // Spill pointers are followed in one query per chunk, not one per message:
  // a round trip per message would make the listener slower than the
  // publishers in SpillMode::always, and libpq would buffer the backlog of
  // notifications without bound. The chunk bounds the query's size.
  constexpr std::size_t chunk_size = 512;
  for (std::size_t first = 0; first < notifications.size(); first += chunk_size) {
    const auto last = std::min(notifications.size(), first + chunk_size);
    deliver_chunk(session, notifications.data() + first, notifications.data() + last);
  }
}

bool ListenerLoop::fresh(const Envelope& envelope, int sender_pid, std::vector<Inbound>& items) {
  // A signature proves who wrote an envelope, not who sends it now: a role
  // that can LISTEN could record one and NOTIFY it again, to a bus that
  // never saw it (one started since) or that forgot its origin. So a signed
  // envelope names the server process of the session that sent it, and the
  // time it was signed, by the server's clock (ServerClock). PostgreSQL
  // tells each listener which process a notification came from: a replay
  // comes from another one, while the session that signed is alive, and
  // from a reused process id only later; and only within the freshness
  // window, in which its origin is still remembered here, so that it would
  // be a duplicate anyway.
  std::string why;
  if (!envelope.pid || !envelope.sent_ms) {
    why =
        "it has no \"pid\" and \"sent\": it comes from a bus older than syncbus 0.2 "
        "(upgrade every bus of the channel), or is a replay of one";
  } else if (*envelope.pid != static_cast<std::uint64_t>(sender_pid)) {
    why = fmt::format(
        "it was signed for the session of server process {} and sent by process {}: a replay",
        *envelope.pid, sender_pid);
  } else if (const auto now = clock_.now_ms(); *envelope.sent_ms + ms(freshness_window) < now) {
    if (envelope.kind == Envelope::Kind::spill_pointer) {
      // Sent by the session it names, but read late: this listener was
      // busy (a long catch-up) or stopped. The rows say more than the
      // pointer: its origin is read back from the table, where each row's
      // signature and signing time are checked (a replay of rows this bus
      // has delivered is a duplicate; of older ones, a gap). Nothing the
      // pointer names is taken on its word, and nothing is lost.
      for (std::uint64_t i = 0; i < envelope.count; ++i) {
        items.push_back(
            {Inbound::Kind::unfetched, {envelope.origin, envelope.sequence + i, {}, {}}});
      }
      return false;
    }
    // Sent by the session it names, only long ago: a replay, or a message
    // this listener heard too late (it stopped reading, or the server's
    // clock stepped). Either way it is not delivered, and never silently:
    // a gap, whether or not the origin is known here.
    report(on_error_,
           protocol_error(fmt::format(
               "syncbus: refused {} {}#{} on channel \"{}\": it was signed {} s ago, longer ago "
               "than the freshness window ({} min): a replay, or this listener stopped reading "
               "for that long (or the server's clock stepped); reported as a gap",
               envelope.kind == Envelope::Kind::heartbeat ? "the heartbeat" : "message(s)",
               envelope.origin, envelope.sequence, options_.channel,
               (now - *envelope.sent_ms) / 1000, freshness_window.count())));
    if (envelope.kind != Envelope::Kind::heartbeat) {
      const bool origin_is_new = position_.origin_is_new(envelope.born);
      for (std::uint64_t i = 0; i < envelope.count; ++i) {
        items.push_back({Inbound::Kind::lost, {envelope.origin, envelope.sequence + i, {}, {}}});
        items.back().origin_is_new = origin_is_new;
      }
    }
    return false;
  } else {
    return true;
  }
  const bool heartbeat = envelope.kind == Envelope::Kind::heartbeat;
  const auto count = heartbeat ? 0 : envelope.count;
  report(on_error_,
         protocol_error(fmt::format(
             "syncbus: refused {} {}#{}{} on channel \"{}\": {}",
             heartbeat ? "the heartbeat" : "message(s)", envelope.origin, envelope.sequence,
             count > 1 ? fmt::format("..{}", envelope.sequence + count - 1) : "", options_.channel,
             why)));
  // A gap, if this bus knows the origin and had not had these yet.
  for (std::uint64_t i = 0; i < count; ++i) {
    items.push_back({Inbound::Kind::stale, {envelope.origin, envelope.sequence + i, {}, {}}});
  }
  return false;
}

bool ListenerLoop::signature_predates(std::optional<std::uint64_t> sent_ms,
                                      std::chrono::steady_clock::time_point since) const {
  // A row written the 0.1 way has no time: it predates everything.
  if (!sent_ms) return true;
  const auto now = clock_.now_ms();
  const auto listening = ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::steady_clock::now() - since) +
                            clock_tolerance);
  const auto memory = ms(origin_memory);
  const auto horizon =
      std::max(now > listening ? now - listening : 0, now > memory ? now - memory : 0);
  return *sent_ms < horizon;
}

void ListenerLoop::deliver_chunk(ListenSession& session, const Notification* begin,
                                 const Notification* end) {
  std::vector<Inbound> items;
  items.reserve(static_cast<std::size_t>(end - begin));
  std::string verified;  // reused for each signed payload's envelope
  for (const auto* notification = begin; notification != end; ++notification) {
    const auto& payload = notification->payload;
    try {
      // Authenticated before anything else looks at it: a forgery must not
      // reach the sequence check, where it could pass for the genuine
      // message and make that one a "duplicate".
      Envelope envelope = decode_envelope(
          auth_.verify_envelope(options_.channel, payload, verified), config_.origin());
      // This bus's own messages reach its handlers from its publisher.
      if (envelope.origin == config_.origin()) continue;
      if (auth_.enabled() && !fresh(envelope, notification->sender_pid, items)) continue;
      const bool origin_is_new = position_.origin_is_new(envelope.born);
      const bool predates =
          auth_.enabled() && signature_predates(envelope.sent_ms, listening_since_);
      // A bus that catches up reads what it missed from the table: an
      // envelope that did not go through it (inline, or a heartbeat) and
      // was signed before this session listened is no news, only a replay.
      const bool replay_suspect = auth_.enabled() && config_.durable() &&
                                  envelope.kind != Envelope::Kind::spill_pointer &&
                                  signature_predates(envelope.sent_ms, connected_since_);
      if (envelope.kind == Envelope::Kind::inline_body) heard_inline_ = true;
      if (envelope.kind == Envelope::Kind::heartbeat) {
        items.push_back({envelope.goodbye ? Inbound::Kind::goodbye : Inbound::Kind::heartbeat,
                         {std::move(envelope.origin), envelope.sequence, {}, {}}});
        items.back().origin_is_new = origin_is_new;
        items.back().signature_predates = predates;
        items.back().replay_suspect = replay_suspect;
        continue;
      }
      // What each inline body counts against the delivery queue's byte
      // bound: its share of the payload (pointers count their rows' sizes).
      const auto inline_share = payload.size() / std::max<std::uint64_t>(1, envelope.count);
      const auto sent_at = clock_.local_time_of(envelope.sent_ms.value_or(0));
      items.reserve(items.size() + envelope.count);  // a batch envelope: hundreds
      for (std::uint64_t i = 0; i < envelope.count; ++i) {
        const auto sequence = envelope.sequence + i;
        if (queue_.drop_if_withheld(envelope.origin, sequence)) continue;
        Inbound item{Inbound::Kind::message, {envelope.origin, sequence, {}, {}}};
        item.origin_is_new = origin_is_new;
        item.signature_predates = predates;
        item.replay_suspect = replay_suspect;
        item.sent_at = sent_at;
        if (envelope.kind == Envelope::Kind::inline_body) {
          item.message.body = std::move(envelope.bodies[i]);
          item.body_bytes = inline_share;
        } else {
          item.body_in_table = true;
          item.vouched = true;
        }
        items.push_back(std::move(item));
      }
    } catch (const std::exception& e) {
      report(on_error_, e);
    }
  }
  // Inline bodies only (the usual case below 8000 bytes): nothing to read,
  // so handed on as they are, without read_bodies' copy into slices.
  if (std::none_of(items.begin(), items.end(),
                   [](const Inbound& item) { return item.body_in_table; })) {
    hand_on(std::move(items));
    return;
  }
  std::size_t handed_on = 0;
  try {
    read_bodies(session, items, handed_on,
                [this](std::vector<Inbound>&& some) { hand_on(std::move(some)); });
  } catch (const connection_error&) {
    // What came before the first unread body was handed on, in order; run()
    // reconnects (and catches up, or reports the unknown gap).
    throw;
  } catch (const closed_error&) {
    throw;  // stop() cut the fetch: run() ends
  } catch (const std::exception& e) {
    // A server error (a lock or statement timeout, a cancelled statement):
    // the rows are still there. Each origin from its first unread message
    // on is withheld and read back after a pause; nothing is lost.
    report(on_error_, e);
    std::vector<Inbound> rest;
    for (auto i = handed_on; i < items.size(); ++i) {
      if (items[i].body_in_table) items[i].kind = Inbound::Kind::unfetched;
      rest.push_back(std::move(items[i]));
    }
    hand_on(std::move(rest));
  }
}

}  // namespace syncbus::detail
