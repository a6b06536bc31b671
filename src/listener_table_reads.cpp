// The listener's reads of the spill table: bodies by key, in order and in
// fetches bounded in bytes; the catch-up after a reconnect; reading back
// what the delivery queue withheld (listener.hpp says which file holds
// which of its jobs).
#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <algorithm>

#include "backoff.hpp"
#include "instance_id.hpp"
#include "listen_session.hpp"
#include "listener.hpp"
#include "spilled_body.hpp"

namespace syncbus::detail {
namespace {

constexpr auto keys_per_fetch = SpillStore::keys_per_fetch;
constexpr auto keys_per_page = SpillStore::keys_per_page;

bool retriable(const std::exception& e) {
  // The connection is gone (or was cut by a deadline): run() reconnects; or
  // stop() cut it: run() ends. Anything else is the server refusing this
  // statement this time.
  return dynamic_cast<const connection_error*>(&e) == nullptr &&
         dynamic_cast<const closed_error*>(&e) == nullptr;
}

}  // namespace

std::optional<Inbound> ListenerLoop::item_of(const SpillStore::StoredMessage& row) {
  try {
    Inbound item{Inbound::Kind::message,
                 {row.origin,
                  row.sequence,
                  accept_spilled_body(row, auth_, options_.channel, options_.max_message_bytes),
                  {}}};
    item.body_bytes = row.body_json.size();
    item.from_table = true;
    item.xid = row.xid;
    item.sent_at = clock_.local_time_of(row.sent_ms.value_or(0));
    item.origin_is_new = position_.origin_is_new(row.born);
    // A row's freshness is its own (a row can be written again, with the
    // same signature); a live pointer's is the envelope's, and the same.
    item.signature_predates = auth_.enabled() && signature_predates(row.sent_ms, listening_since_);
    return item;
  } catch (const std::exception& e) {
    report(on_error_, protocol_error(fmt::format(
                          "syncbus: skipped spilled message {}#{} on channel \"{}\": it was "
                          "refused: {}",
                          row.origin, row.sequence, options_.channel, e.what())));
    return std::nullopt;
  }
}

void ListenerLoop::hand_on(std::vector<Inbound>&& items) {
  if (items.empty()) return;
  // What a catch-up must not read again: only a durable bus catches up (a
  // lookup by origin per message that a bus in overflow mode need not pay).
  if (config_.durable()) {
    for (const auto& item : items) {
      if (item.kind == Inbound::Kind::message || item.kind == Inbound::Kind::lost) {
        position_.handed_on(item.message.origin, item.message.sequence);
      }
    }
  }
  queue_.post(std::move(items));
}

void ListenerLoop::read_bodies(ListenSession& session, std::vector<Inbound>& items,
                               std::size_t& read_up_to,
                               const std::function<void(std::vector<Inbound>&&)>& take,
                               std::size_t max_bytes) {
  std::size_t loaded = 0;
  // Rows missing or refused that no authenticated pointer vouched for are
  // left out (see Inbound::vouched): the sequence check then reports a
  // genuine loss when the origin's next message or heartbeat arrives.
  std::vector<char> left_out(items.size(), 0);
  const auto hand_slice = [&](std::size_t from, std::size_t to) {
    std::vector<Inbound> slice;
    slice.reserve(to - from);
    for (auto i = from; i < to; ++i) {
      if (!left_out[i]) slice.push_back(std::move(items[i]));
    }
    take(std::move(slice));
  };
  while (read_up_to < items.size()) {
    // The next keys to read, in order; items in between pass through.
    std::vector<SpillStore::MessageKey> keys;
    std::vector<std::size_t> at;
    for (auto i = read_up_to; i < items.size() && keys.size() < keys_per_fetch; ++i) {
      if (!items[i].body_in_table) continue;
      keys.push_back({items[i].message.origin, items[i].message.sequence});
      at.push_back(i);
    }
    if (keys.empty()) {
      hand_slice(read_up_to, items.size());
      read_up_to = items.size();
      return;
    }
    const auto rows = statement(
        session,
        [&](pqxx::connection_base& c) {
          return store_.fetch_many(c, keys, std::min(SpillStore::default_fetch_bytes, max_bytes));
        },
        [&] {
          return fmt::format("fetching {} spilled message(s) from {}", keys.size(),
                             store_.qualified_name());
        });
    // Rows come in key order; a key with no row has none.
    std::size_t row = 0;
    auto resolved_to = items.size();  // the first item still awaiting its body
    for (std::size_t k = 0; k < keys.size(); ++k) {
      auto& item = items[at[k]];
      const bool found = row < rows.size() && rows[row].origin == keys[k].origin &&
                         rows[row].sequence == keys[k].sequence;
      if (found && rows[row].deferred) {
        resolved_to = at[k];  // over this fetch's bytes: the next one reads it
        break;
      }
      std::optional<Inbound> read;
      if (found) {
        loaded += rows[row].body_json.size();
        read = item_of(rows[row++]);
        // Before this bus (see Inbound::before_start): its positions, from
        // the first, name it, so delivering it would hand a client resumed
        // here at once what its position already had.
        if (read && config_.durable() && read->xid != 0 &&
            position_.start_snapshot().visible(read->xid)) {
          read->before_start = true;
        }
      } else {
        report(on_error_,
               protocol_error(fmt::format(
                   "syncbus: skipped spilled message {}#{} on channel \"{}\": it is "
                   "not in {} (vacuumed before this listener read it?). Raise the "
                   "vacuum age above your listeners' worst lag",
                   keys[k].origin, keys[k].sequence, options_.channel, store_.qualified_name())));
      }
      if (read) {
        item = std::move(*read);
      } else if (item.vouched) {
        // The message is lost: say so now, as an exact gap.
        const bool origin_is_new = item.origin_is_new;
        item = Inbound{Inbound::Kind::lost, {keys[k].origin, keys[k].sequence, {}, {}}};
        item.origin_is_new = origin_is_new;
      } else {
        left_out[at[k]] = 1;
      }
      if (k + 1 == keys.size()) resolved_to = at[k] + 1;
    }
    // Hand on everything before the first item still waiting for its body
    // (or up to the last key of this fetch, when it read them all: items
    // after it may still have keys to read).
    const auto until = resolved_to;
    hand_slice(read_up_to, until);
    read_up_to = until;
    if (loaded >= max_bytes) return;
  }
}

std::size_t ListenerLoop::catch_up(ListenSession& session, const PgSnapshot& from,
                                   const PgSnapshot& to) {
  // The transactions visible in `to` and not in `from`: those in progress
  // at `from`, then every id from `from`'s xmax up to `to`'s. Each range is
  // listed in (xid, origin, sequence) order, which is commit order per
  // origin; ranges come in ascending ids, so the order holds across them.
  const auto ranges = from.invisible_ranges(to.xmax(), SpillStore::ids_per_span);
  std::size_t read = 0;
  for (const auto& range : ranges) {
    const auto below = range.second;  // a plain variable: lambdas capture it (C++17)
    SpillStore::RowKey after{range.first, "", 0};
    for (;;) {
      // A page of keys. Failures on the server are retried, whatever they
      // are: the rows are there, and waiting costs only time.
      std::vector<SpillStore::RowKey> page;
      for (unsigned failures = 1;; ++failures) {
        const auto pause = table_read_backoff.after(failures);
        try {
          page = statement(
              session,
              [&](pqxx::connection_base& c) {
                return store_.list_committed(c, after, below, to, keys_per_page);
              },
              [&] { return fmt::format("catching up from {}", store_.qualified_name()); });
          break;
        } catch (const std::exception& e) {
          if (!retriable(e)) throw;
          report(on_error_,
                 error(fmt::format("syncbus: the listener on channel \"{}\" could not read what it "
                                   "missed from {} ({}); it tries again in {} ms",
                                   options_.channel, store_.qualified_name(), e.what(),
                                   pause.count())));
          if (!wait_draining(session, pause)) throw closed_error("syncbus: the bus was closed");
        }
      }
      std::vector<Inbound> items;
      for (const auto& key : page) {
        // Its own messages reach the bus's handlers from its publisher;
        // what was handed on before the connection broke is not read again.
        // An origin no bus could have (an envelope's would be refused) is a
        // planted row's: anyone who may INSERT can write one, of any size.
        if (key.origin == config_.origin() || !is_plain_instance_id(key.origin) ||
            position_.already_handed_on(key.origin, key.sequence) ||
            queue_.drop_if_withheld(key.origin, key.sequence)) {
          continue;
        }
        Inbound item{Inbound::Kind::message, {key.origin, key.sequence, {}, {}}};
        item.body_in_table = true;
        items.push_back(std::move(item));
      }
      read += items.size();
      std::size_t handed_on = 0;
      try {
        read_bodies(session, items, handed_on,
                    [this](std::vector<Inbound>&& some) { hand_on(std::move(some)); });
      } catch (const std::exception& e) {
        if (!retriable(e)) throw;
        // As for a live pointer: the origins are withheld from their first
        // unread row, and read back after a pause.
        report(on_error_, e);
        std::vector<Inbound> rest(
            std::make_move_iterator(items.begin() + static_cast<std::ptrdiff_t>(handed_on)),
            std::make_move_iterator(items.end()));
        for (auto& item : rest) item.kind = Inbound::Kind::unfetched;
        hand_on(std::move(rest));
      }
      if (page.size() < static_cast<std::size_t>(keys_per_page)) break;
      after = page.back();
    }
  }
  return read;
}

bool ListenerLoop::reread_step(ListenSession& session) {
  constexpr std::size_t page_rows = 256;
  const auto request = queue_.next_reread();
  if (!request) return false;
  const auto limit = static_cast<int>(std::min(page_rows, request->room));
  const auto& read = request->read;
  std::vector<Inbound> items;
  try {
    const auto keys = statement(
        session,
        [&](pqxx::connection_base& c) {
          return store_.list_from(c, read.origin, read.from, limit);
        },
        [&] {
          return fmt::format("re-reading messages of {} from {}", read.origin,
                             store_.qualified_name());
        });
    for (const auto& key : keys) {
      Inbound item{Inbound::Kind::message, {key.origin, key.sequence, {}, {}}};
      item.body_in_table = true;
      items.push_back(std::move(item));
    }
    std::vector<Inbound> taken;
    std::size_t handed_on = 0;
    // No more bytes than the queue has room for: what does not fit would
    // be read again.
    read_bodies(
        session, items, handed_on,
        [&](std::vector<Inbound>&& some) {
          taken.insert(taken.end(), std::make_move_iterator(some.begin()),
                       std::make_move_iterator(some.end()));
        },
        std::max<std::size_t>(1, request->room_bytes));
    const bool reached_end =
        keys.size() < static_cast<std::size_t>(limit) && handed_on == items.size();
    for (const auto& item : taken) {
      if (item.kind == Inbound::Kind::message || item.kind == Inbound::Kind::lost) {
        position_.handed_on(item.message.origin, item.message.sequence);
      }
    }
    // Rows refused on the way (planted ones, say) are behind the read all
    // the same: it goes on past them, never back to them.
    const auto read_past = handed_on == 0 ? read.from : keys[handed_on - 1].sequence + 1;
    queue_.post_reread(*request, std::move(taken), read_past, reached_end);
  } catch (const std::exception& e) {
    if (!retriable(e)) throw;
    const auto pause = queue_.reread_failed(*request);
    report(on_error_,
           error(fmt::format("syncbus: could not read back the messages of {} from {} ({}); it "
                             "tries again in {} ms, and holds that origin's later messages until "
                             "then (nothing is lost)",
                             read.origin, store_.qualified_name(), e.what(), pause.count())));
  }
  return true;
}

}  // namespace syncbus::detail
