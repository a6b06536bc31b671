#include "resume_reader.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>

#include <algorithm>
#include <iterator>
#include <utility>

#include "backoff.hpp"
#include "delivery_queue.hpp"
#include "instance_id.hpp"
#include "listen_session.hpp"
#include "resume.hpp"
#include "spilled_body.hpp"
#include "statement_deadline.hpp"

namespace syncbus::detail {
namespace {

constexpr auto keys_per_fetch = SpillStore::keys_per_fetch;
constexpr auto keys_per_page = SpillStore::keys_per_page;

bool names(const DecodedPosition& position, const SpillStore::RowKey& row) {
  return detail::names(position, row.origin, row.sequence, row.xid);
}

}  // namespace

ResumeReader::ResumeReader(const BusServices& services, DeliveryQueue& queue,
                           std::string position_key)
    : config_(services.config),
      options_(services.config.options()),
      on_error_(services.on_error),
      deadlines_(services.deadlines),
      auth_(services.auth),
      store_(services.store),
      queue_(queue),
      position_key_(std::move(position_key)) {
  thread_.start([this] { run(); });
}

ResumeReader::~ResumeReader() { stop(); }

void ResumeReader::stop() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    if (serving_) serving_->end();
  }
  added_.notify_all();
  wake_.signal();
  deadlines_.cut_all(this);
  thread_.join_unless_current();
}

void ResumeReader::add(std::shared_ptr<Resume> resume) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    waiting_.push_back(std::move(resume));
  }
  added_.notify_all();
}

void ResumeReader::run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      serving_.reset();
      added_.wait(lock, [this] { return stopping_ || !waiting_.empty(); });
      if (stopping_) return;
      serving_ = std::move(waiting_.front());
      waiting_.pop_front();
    }
    serve(*serving_);
  }
}

template <typename Work>
auto ResumeReader::statement(const char* what, Work&& work) {
  auto& connection = session();
  return run_with_deadline(
      deadlines_, connection.sock(), options_.query_timeout, this, [&] { return work(connection); },
      [&] {
        return fmt::format("{} for a subscription resumed on channel \"{}\"", what,
                           options_.channel);
      });
}

Session& ResumeReader::session() {
  if (session_) return *session_;
  auto opened = open_session(options_.conninfo, config_.reader_application_name(),
                             {std::nullopt, wake_.fd()});
  run_with_deadline(
      deadlines_, opened->sock(), options_.query_timeout, this,
      [&] {
        configure_reading_session(*opened, options_.query_timeout);
        store_.prepare(*opened);
      },
      [] { return std::string("setting up the session that reads for resumed subscriptions"); });
  session_ = std::move(opened);
  return *session_;
}

void ResumeReader::serve(Resume& resume) {
  std::shared_ptr<Resume> held = serving_;  // for what it posts
  for (;;) {
    auto target = resume.next_target();
    if (!target) return;
    bool read = false;
    for (unsigned failures = 1;; ++failures) {
      try {
        read = read_round(resume, *target);
        break;
      } catch (const position_expired& e) {
        report(on_error_, e);
        resume.end();
        return;
      } catch (const closed_error&) {
        return;  // the bus is closing (its delivery stage first)
      } catch (const std::exception& e) {
        if (resume.ended()) return;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          if (stopping_) return;
        }
        // A broken session is replaced; a server error (a lock, a timeout)
        // is retried on the same one. Either way the round goes on from
        // what it had handed on (resume.from()).
        const bool timed_out = dynamic_cast<const timeout_error*>(&e) != nullptr;
        const bool lost = dynamic_cast<const connection_error*>(&e) != nullptr;
        if (lost) session_.reset();
        const auto pause = jittered(table_read_backoff.after(failures));
        const auto why = timed_out
                             ? fmt::format(
                                   "a statement outlasted query_timeout ({} ms), so the bus cut "
                                   "it and replaces the reading session",
                                   options_.query_timeout.count())
                         : lost ? std::string(
                                      "the reading session was lost (ended by the server or an "
                                      "administrator, or the network), and is replaced")
                                : std::string("the server refused a statement");
        report(on_error_,
               error(fmt::format("syncbus: a subscription resumed on channel \"{}\" could not "
                                 "read what it missed from {}: {} ({}); it tries again in {} ms, "
                                 "from what it had handed on",
                                 options_.channel, store_.qualified_name(), why, e.what(),
                                 pause.count())));
        if (!wake_.sleep_unless_signalled(pause)) return;
      }
    }
    if (resume.ended()) return;
    if (!read) {
      // This bus lags the one the position came from: the messages it has
      // yet to deliver would reach the subscription twice. Ask again a
      // little later, from a later point of its stream.
      if (!wake_.sleep_unless_signalled(std::chrono::milliseconds(20))) return;
      resume.behind = true;
    }
    queue_.post_read(held, {}, /*done=*/true);
  }
}

bool ResumeReader::target_lags(const DecodedPosition& from, const DecodedPosition& target,
                               const PgSnapshot& now) {
  // The origins with a cursor in `from`: the row at (or last below) the
  // cursor is the one to look at, since what a position names of an origin
  // is a prefix of it.
  // (Plain variables, not structured bindings: lambdas capture them, C++17.)
  for (const auto& entry : from.cursors) {
    const auto& origin = entry.first;
    const auto cursor = entry.second;
    const auto row = statement("looking up a position's row",
                               [&](auto& c) { return store_.last_at_or_below(c, origin, cursor); });
    if (row && !names(target, *row)) return true;
  }
  // The other origins of the target's cursors: their first row after it,
  // if `from` names it.
  for (const auto& entry : target.cursors) {
    const auto& origin = entry.first;
    const auto cursor = entry.second;
    if (from.cursors.count(origin) != 0) continue;
    const auto rows = statement("looking up a position's row", [&](auto& c) {
      return store_.list_from(c, origin, cursor + 1, 1);
    });
    if (!rows.empty() && names(from, rows[0])) return true;
  }
  // The rest: rows visible in from's snapshot and not in the target's
  // (the target's in-progress ids, and those from its xmax on).
  const auto ranges = target.snapshot.invisible_ranges(std::min(from.snapshot.xmax(), now.xmax()),
                                                       SpillStore::ids_per_span);
  for (const auto& range : ranges) {
    const auto below = range.second;
    SpillStore::RowKey after{range.first, "", 0};
    for (;;) {
      const auto keys = statement("listing rows by transaction", [&](auto& c) {
        return store_.list_committed(c, after, below, from.snapshot, keys_per_page);
      });
      for (const auto& key : keys) {
        if (from.cursors.count(key.origin) == 0 && target.cursors.count(key.origin) == 0 &&
            is_plain_instance_id(key.origin)) {
          return true;
        }
      }
      if (keys.size() < static_cast<std::size_t>(keys_per_page)) break;
      after = keys.back();
    }
  }
  return false;
}

bool ResumeReader::read_round(Resume& resume, const DecodedPosition& target) {
  // One snapshot for the round: the check that nothing it needs was
  // vacuumed, and every read after it, see the same rows. Taken after the
  // target was set, so every row the target names is in it.
  statement("beginning a read", [](pqxx::connection_base& c) {
    pqxx::nontransaction(c).exec0("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  });
  // Ended on every way out, a round cut short too: one left open made the
  // next round's BEGIN a mere warning, and that round read on in the old
  // snapshot, blind to every row committed since, some of which its target
  // named: lost (the random-cuts test, 1 run in 10; ResumeTest.
  // AReadCutShortByItsSubscriptionEndingDoesNotBlindTheNextRead).
  bool read = false;
  try {
    read = read_in_snapshot(resume, target);
  } catch (...) {
    end_read();
    throw;
  }
  end_read();
  return read;
}

void ResumeReader::end_read() noexcept {
  if (!session_) return;
  try {
    // A read only transaction: ROLLBACK and COMMIT end it alike.
    statement("ending a read",
              [](pqxx::connection_base& c) { pqxx::nontransaction(c).exec0("ROLLBACK"); });
  } catch (...) {
    session_.reset();  // the next round begins on a new session
  }
}

bool ResumeReader::read_in_snapshot(Resume& resume, const DecodedPosition& target) {
  auto& from = resume.from();
  const auto now = PgSnapshot::parse(statement("taking a snapshot",
                                               [](pqxx::connection_base& c) {
                                                 return pqxx::nontransaction(c).exec1(
                                                     "SELECT pg_current_snapshot()::text");
                                               })[0]
                                         .c_str());
  const auto removed = statement("checking what vacuum has removed", [&](auto& c) {
    pqxx::nontransaction in_round(c);
    return store_.removed_after(in_round, from.snapshot, from.cursors);
  });
  if (removed) {
    throw position_expired(
        fmt::format("syncbus: the position resumed from on channel \"{}\" has expired: vacuum "
                    "deleted rows it leaves out ({} up to #{}). Give the client what it gets "
                    "without a position (a fresh snapshot), or keep rows longer (a larger "
                    "vacuum age)",
                    options_.channel, removed->origin, removed->sequence),
        resume.token);
  }
  if (target_lags(from, target, now)) return false;
  // A genuine row is never numbered at or below its origin's highest
  // deleted one while written after it: such a row is a deleted one
  // written again (anyone who may INSERT can copy a signed row back), a
  // replay, which a listener's sequence check would drop and a read must
  // skip.
  removed_ = statement("reading the removal log",
                       [&](pqxx::connection_base& c) { return store_.removed(c); });
  // What the subscription had when the round began: from() moves on as
  // rows are handed to it.
  const auto had = from;
  const auto wanted = [&](const SpillStore::RowKey& row) {
    return !names(had, row) && names(target, row) && !written_again(row);
  };

  // Where each origin's reading starts: after its cursor, for the
  // origins `from` has one for; for the others, at their first row of a
  // transaction not visible in from's snapshot (those in progress in it,
  // and those from its xmax on, up to this round's snapshot), found by one
  // aggregate per range of ids (no paging: a page sorted by key costs,
  // with a plan made on stale statistics, the whole channel each time).
  std::map<std::string, std::uint64_t> start;
  for (const auto& [origin, cursor] : had.cursors) start[origin] = cursor + 1;
  for (const auto& range : from.snapshot.invisible_ranges(now.xmax(), SpillStore::ids_per_span)) {
    if (resume.ended()) return true;
    const auto firsts = statement("finding the origins written since a position", [&](auto& c) {
      return store_.first_sequences(c, range.first, range.second);
    });
    for (const auto& [origin, sequence] : firsts) {
      // An origin no bus could have is a planted row's (as in a catch-up).
      if (had.cursors.count(origin) != 0 || !is_plain_instance_id(origin)) continue;
      auto [at, added] = start.try_emplace(origin, sequence);
      if (!added) at->second = std::min(at->second, sequence);
    }
  }

  // Each origin's rows in sequence order, from there (in transaction id
  // order they are the same, as an origin commits one transaction after
  // another (bus_connection.hpp); read by origin, they need not be, and
  // the read looks at every row, not only a prefix).
  for (const auto& entry : start) {
    const auto& origin = entry.first;
    auto next = entry.second;
    for (;;) {
      if (resume.ended()) return true;
      const auto keys = statement("listing an origin's rows", [&](auto& c) {
        return store_.list_from(c, origin, next, keys_per_page);
      });
      std::vector<SpillStore::RowKey> some;
      std::copy_if(keys.begin(), keys.end(), std::back_inserter(some), wanted);
      hand_on(resume, some);
      if (keys.size() < static_cast<std::size_t>(keys_per_page)) break;
      next = keys.back().sequence + 1;
    }
  }
  return true;
}

bool ResumeReader::written_again(const SpillStore::RowKey& row) const {
  const auto found = removed_.find(row.origin);
  if (found == removed_.end()) return false;
  const auto [sequence, xid] = found->second;
  return row.sequence <= sequence && (row.xid == 0 || xid == 0 || row.xid > xid);
}

void ResumeReader::hand_on(Resume& resume, const std::vector<SpillStore::RowKey>& keys) {
  auto& from = resume.from();
  for (std::size_t first = 0; first < keys.size();) {
    if (resume.ended()) return;
    const auto last = std::min(keys.size(), first + keys_per_fetch);
    std::vector<SpillStore::MessageKey> chunk;
    for (auto i = first; i < last; ++i) chunk.push_back({keys[i].origin, keys[i].sequence});
    const auto rows =
        statement("fetching rows", [&](auto& c) { return store_.fetch_many(c, chunk); });
    std::vector<ClusterMessage> messages;
    std::size_t row = 0;
    auto next = last;
    for (auto i = first; i < last; ++i) {
      const auto& key = keys[i];
      const bool found =
          row < rows.size() && rows[row].origin == key.origin && rows[row].sequence == key.sequence;
      if (found && rows[row].deferred) {
        next = i;  // past this fetch's bytes: the next fetch starts here
        break;
      }
      // Handed on, refused or gone, the row is behind the subscription now.
      from.cursors[key.origin] = key.sequence;
      if (!found) continue;  // deleted since it was listed: not by vacuum
      try {
        auto body =
            accept_spilled_body(rows[row], auth_, options_.channel, options_.max_message_bytes);
        messages.push_back({key.origin, key.sequence, std::move(body),
                            encode_position(position_key_, from.snapshot, from.cursors)});
      } catch (const std::exception& e) {
        report(on_error_,
               protocol_error(fmt::format("syncbus: skipped spilled message {}#{} on channel "
                                          "\"{}\" for a resumed subscription: it was refused: {}",
                                          key.origin, key.sequence, options_.channel, e.what())));
      }
      ++row;
    }
    if (!messages.empty()) {
      if (!queue_.wait_for_room()) throw closed_error("syncbus: the bus was closed");
      queue_.post_read(serving_, std::move(messages), /*done=*/false);
    }
    first = next;
  }
}

}  // namespace syncbus::detail
