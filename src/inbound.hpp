#pragma once
// What a transport (the PostgreSQL listener, the publisher's echo of the
// bus's own messages, the in-memory hub) hands to a bus's delivery stage.

#include <syncbus/cluster_bus.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pg_snapshot.hpp"

namespace syncbus::detail {

class Resume;

struct Inbound {
  enum class Kind {
    /// Deliver `message` (after the sequence check).
    message,
    /// message.origin's last published sequence is message.sequence.
    heartbeat,
    /// The same, and the origin has closed: it will publish no more.
    goodbye,
    /// The transport reconnected: report a gap of unknown range.
    connection_reset,
    /// message.origin's sequences first_dropped..message.sequence were not
    /// delivered (the delivery stage itself makes these: a full queue).
    dropped,
    /// message.origin's message.sequence is known lost: its spill row is
    /// gone or refused, or its publish failed. An exact gap at once.
    lost,
    /// A signed envelope refused as a replay (sent by a session other than
    /// the one it names, or naming none): a gap only if the origin is known
    /// here and this sequence is new to it. (One refused as too old is
    /// `lost`: that may be a message this bus heard too late.)
    stale,
    /// message.origin's message.sequence could not be read from the spill
    /// table (a server error, not a missing row): the origin is withheld
    /// from there and its messages read back once a retry succeeds.
    unfetched,
    /// A durable listener's mark (StreamPosition::settle): every
    /// notification of a transaction visible in mark->snapshot was
    /// received, and everything received was posted before this.
    mark,
    /// A resuming subscription (resume.hpp) hears the stream from here on;
    /// what came before is read for it from the table.
    resume_seam,
    /// A message read from the table for one resuming subscription alone.
    resume_read,
    /// A round of reading for a resuming subscription is done.
    resume_done,
  };

  /// For Kind::mark. The delivery stage records which origins it holds
  /// back when the mark arrives (they are read back later, after it).
  struct Mark {
    PgSnapshot snapshot;
    std::vector<std::pair<std::string, std::uint64_t>> holds;
  };

  Inbound() = default;
  Inbound(Kind kind_, ClusterMessage message_, std::uint64_t first_dropped_ = 0)
      : kind(kind_), message(std::move(message_)), first_dropped(first_dropped_) {}

  Kind kind = Kind::message;
  ClusterMessage message;
  /// For Kind::dropped: the first sequence of the range.
  std::uint64_t first_dropped = 0;
  /// A message whose body is still JSON text (message.body is then unset):
  /// the delivery thread parses it only if a handler is there to see it.
  std::shared_ptr<const std::string> body_text;
  /// The size of the body's JSON text as it arrived (for a batch envelope,
  /// its share of the payload): what counts against the queue's byte bound.
  std::size_t body_bytes = 0;
  /// The origin was born after this bus started listening, so all of its
  /// messages, from sequence 1, were this bus's to see: seen first at a
  /// later sequence, the ones before are missing (a gap), not older than
  /// this bus.
  bool origin_is_new = false;
  /// A signed message signed before this bus started listening, or longer
  /// ago than a bus remembers an origin (origin_memory): if its origin is
  /// unknown here, it may be a replay (a genuine message sent again, or a
  /// genuine row written again), so it is not delivered; it is reported as
  /// a gap instead (if genuine, it is one this bus missed).
  bool signature_predates = false;
  /// A signed message that cannot be genuine news here, whatever this bus
  /// knows of its origin: sent inline (not through the spill table) and
  /// signed before the listener last reconnected, to a bus that catches up
  /// from the table (which would have read it there if it had been in it).
  /// Never delivered: a gap (if genuine, one this bus missed).
  bool replay_suspect = false;
  /// For Kind::connection_reset: report the gap, but leave what the
  /// sequence tracker knows of each origin's freshness (a bus that caught
  /// up from the table; see ListenerLoop::reconnect).
  bool keep_freshness = false;
  /// When its publisher sent it, on this process's monotonic clock (from
  /// the envelope's or row's `sent` and this bus's estimate of the
  /// server's clock); unset when it does not say. For BusStats::delivery_lag.
  std::optional<std::chrono::steady_clock::time_point> sent_at;
  /// Set by the delivery stage when the item arrives: the newest
  /// subscription that may hear it (HandlerRegistry; 0: none).
  std::uint64_t audience = 0;
  /// The body was read from the spill table (a pointer's row, or a row
  /// read in a catch-up or a read-back), not carried by the notification.
  bool from_table = false;
  /// Its writing transaction, when its row says (0: unknown): what lets a
  /// position forget its origin's cursor (stream_position.hpp).
  std::uint64_t xid = 0;
  /// A durable bus's message of a transaction visible in its start
  /// snapshot: from before the bus, named by every position it gives, yet
  /// heard (its notification was queued before LISTEN took effect and
  /// committed after). The sequence check counts it; no handler gets it.
  bool before_start = false;
  /// For Kind::mark.
  std::shared_ptr<Mark> mark;
  /// For Kind::resume_*.
  std::shared_ptr<Resume> resume;
  /// Transport-internal: the message's body is still in the spill table
  /// (the listener reads it before handing the item on).
  bool body_in_table = false;
  /// Transport-internal: an authenticated envelope (a pointer) says this
  /// message exists, so a row that is missing or refused is a loss. A row
  /// found by listing the table vouches for nothing: anyone who may INSERT
  /// can plant one, and a refused plant must not pass for a lost message
  /// (it would make the genuine one with that number a "duplicate").
  bool vouched = false;
};

}  // namespace syncbus::detail
