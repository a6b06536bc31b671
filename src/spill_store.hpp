#pragma once
// The spill table: where messages too large for a NOTIFY payload (or every
// message, in SpillMode::always) are stored, keyed by (channel, origin,
// sequence). Each row records its writer's transaction id (`xid`, by a
// column default) and its origin's birth transaction (`born`), so that a
// listener can read exactly what it missed (received_position.hpp). Owns the
// table's SQL; every value is a statement parameter, and the names are
// quoted by the server's rules (see identifiers.hpp).

#include <pqxx/connection_base>
#include <pqxx/result>
#include <pqxx/transaction_base>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "framing.hpp"
#include "message_auth.hpp"
#include "pg_snapshot.hpp"

namespace syncbus::detail {

class SpillStore {
 public:
  struct Settings {
    std::string schema;
    std::string table;
    std::string channel;
    /// Store and read each body's MAC (PostgresBusOptions::secrets).
    bool with_macs = false;
    /// Bodies larger than this are not loaded (StoredMessage::too_large).
    std::size_t max_body_bytes = 0;
  };

  /// Names are checked by the caller (check_identifier) and used exactly as
  /// given, quoted.
  SpillStore(pqxx::connection_base& session, Settings settings);

  /// The CREATE statements for the table and its indexes (idempotent). With
  /// `lz4`, bodies are compressed with LZ4 (PostgreSQL 14+ built with it)
  /// rather than the slower default.
  std::string create_sql(bool lz4 = true) const;

  /// The statements that bring a table made by syncbus 0.1 up to date
  /// (idempotent; no table rewrite, but the index is built under a SHARE
  /// lock: docs/OPERATIONS.md shows how to build it concurrently first).
  /// With `mac`, the `mac` column that secrets need too.
  std::string upgrade_sql(bool mac) const;

  /// Creates the table when missing, or upgrades one made by an older
  /// version (its `xid` and `born` columns and their index; with MACs, its
  /// `mac` column), under an advisory lock so that instances starting at
  /// once do not race. When `create` is false, or the role does not own the
  /// table, what is missing is a configuration_error naming the SQL to run.
  void ensure_table(pqxx::connection_base& session, bool create) const;
  /// True when the table exists (one round trip).
  bool exists(pqxx::connection_base& session) const;

  /// What the connection's role may do with the table (which must exist).
  struct Privileges {
    std::string role;  // quote_ident(current_user)
    bool schema_usage = false;
    bool select = false;
    bool insert = false;
    bool delete_rows = false;
    /// The id sequence of a table made by syncbus 0.1 (INSERT needs USAGE
    /// on it too), or empty; and whether the role has that USAGE.
    std::string sequence;
    bool sequence_usage = true;
  };
  Privileges privileges(pqxx::connection_base& session) const;

  /// A privilege the connection's role lacks, and the statement that grants it.
  struct MissingPrivilege {
    std::string what;   // "INSERT on table "public"."sync_cluster_spill""
    std::string grant;  // "GRANT INSERT ON TABLE ... TO "app";"
  };
  /// What this connection's role lacks for the table: USAGE on the schema;
  /// when `listens`, SELECT (a listener reads spilled messages); when
  /// `publishes`, INSERT (and USAGE on the id sequence of a table made by
  /// syncbus 0.1, which had one). Empty when it has them all.
  std::vector<MissingPrivilege> missing_privileges(pqxx::connection_base& session, bool publishes,
                                                   bool listens) const;

  /// Prepares this store's statements on a connection; call once per
  /// connection before the calls below.
  /// `tag` begins every statement's text (a listener's: listener_tag()).
  void prepare(pqxx::connection_base& session, std::string_view tag = {}) const;

  /// Makes `session`, which reads the table, look rows up by their key
  /// whatever the planner's statistics say (one round trip: call it where a
  /// statement may run). See the definition for why.
  static void read_by_key_only(pqxx::connection_base& session);

  /// One statement, committed on return: stores the spilled rows of
  /// `frames` (framing.hpp) as messages of `origin`, stamped with the
  /// origin's birth transaction and the signing time (sent_ms 0: not
  /// signed), and NOTIFYs each of its payloads, in order, atomically.
  void store_batch_and_notify(pqxx::connection_base& session, const std::string& origin,
                              MessageAuth::RowStamp stamp, const Frames& frames) const;

  /// One stored message, as the listener reads it.
  struct StoredMessage {
    std::string origin;
    std::uint64_t sequence = 0;
    /// The body as the server sent it, viewed in place in `rows` (empty when
    /// too_large): a spilled body is tens of kilobytes, and the parser makes
    /// the one copy it needs itself.
    std::string_view body_json;
    std::string mac;  // with MACs: "" when the row has none
    /// The body's size when it exceeded max_body_bytes and was not loaded;
    /// 0 otherwise.
    std::uint64_t too_large = 0;
    /// Not loaded by this fetch, which had loaded its budget in bytes: to
    /// fetch again.
    bool deferred = false;
    /// The origin's birth transaction, when the writer recorded it.
    std::optional<std::uint64_t> born;
    /// When it was signed (ms since the epoch, the server's clock), when the
    /// writer signs.
    std::optional<std::uint64_t> sent_ms;
    /// Its writing transaction (0: not recorded).
    std::uint64_t xid = 0;
    /// The query result that body_json points into (shared, not copied).
    pqxx::result rows;
  };

  /// One message's key in the table (channel aside).
  struct MessageKey {
    std::string origin;
    std::uint64_t sequence = 0;
  };

  /// The stored messages among `keys`, in one query, in the order of `keys`;
  /// keys with no row are simply absent. Bodies are loaded while they add
  /// up to at most `budget_bytes` (the first one always): the rest come back
  /// `deferred`.
  std::vector<StoredMessage> fetch_many(pqxx::connection_base& session,
                                        const std::vector<MessageKey>& keys,
                                        std::size_t budget_bytes = default_fetch_bytes) const;
  /// What one fetch loads at most (but a single larger body): 8 MiB, a
  /// few milliseconds of the server's time, well within any deadline.
  static constexpr std::size_t default_fetch_bytes = 8 * 1024 * 1024;
  /// Keys per fetch of bodies: bounds the query's text and its result's
  /// rows (its bytes are bounded by the statement itself).
  static constexpr std::size_t keys_per_fetch = 128;
  /// Keys per page of a listing (a few dozen bytes each).
  static constexpr int keys_per_page = 1024;
  /// A reader lists a range of transaction ids this wide at a time, so that
  /// each statement's scan is bounded even where the table holds mostly
  /// other channels' rows in that range (an index entry per row, about 16 K
  /// transactions of other traffic: a few milliseconds).
  static constexpr std::uint64_t ids_per_span = 16384;

  /// A row's place, without its body: what a reader lists first, to size
  /// the fetches of the bodies that follow by their bytes.
  struct RowKey {
    std::uint64_t xid = 0;  // the writing transaction (0 when not listed by it)
    std::string origin;
    std::uint64_t sequence = 0;
  };

  /// A keyset page of this channel's rows whose writing transaction is
  /// visible in `visible_in` and lies in [after.xid, below_xid), after
  /// `after` in (xid, origin, sequence) order, at most `limit`. The order is
  /// commit order per origin: an origin commits its transactions one after
  /// another, each taking its id after the one before committed. The range
  /// is scanned on the `xid` index, so each page costs what it covers.
  std::vector<RowKey> list_committed(pqxx::connection_base& session, const RowKey& after,
                                     std::uint64_t below_xid, const PgSnapshot& visible_in,
                                     int limit) const;

  /// `origin`'s rows from `from_sequence` on, at most `limit`, in sequence
  /// order (reading back what the delivery stage withheld). `xid` is 0 for
  /// a row written before the table had the column.
  std::vector<RowKey> list_from(pqxx::connection_base& session, const std::string& origin,
                                std::uint64_t from_sequence, int limit) const;

  /// The origins with rows written by a transaction in [from_xid,
  /// below_xid), and the lowest sequence of each there (an aggregate: one
  /// statement, whatever the rows, read on the `xid` index).
  std::map<std::string, std::uint64_t> first_sequences(pqxx::connection_base& session,
                                                       std::uint64_t from_xid,
                                                       std::uint64_t below_xid) const;

  /// `origin`'s row with the highest sequence up to `sequence`, if any.
  std::optional<RowKey> last_at_or_below(pqxx::connection_base& session, const std::string& origin,
                                         std::uint64_t sequence) const;

  /// The server's time `older_than` ago, as timestamptz text: the cutoff of
  /// one vacuum, fixed before its first batch so that it does not move.
  std::string vacuum_cutoff(pqxx::connection_base& session,
                            std::chrono::milliseconds older_than) const;
  /// Deletes up to `limit` of this channel's rows created before `cutoff`
  /// (vacuum_cutoff), in a transaction of its own; returns the count. A
  /// vacuum repeats it until it deletes fewer than `limit`: each batch is
  /// short, whatever the backlog, and what one deleted stays deleted. With
  /// `note_removed` (when has_removal_log()), the same transaction notes
  /// what it deleted in the removal log.
  std::int64_t vacuum_batch(pqxx::connection_base& session, const std::string& cutoff,
                            std::int64_t limit, bool note_removed) const;

  /// The removal log: what vacuum has deleted, per channel and origin (the
  /// highest sequence and transaction id), so that a position whose rows
  /// are gone is known to have expired. Made with the table; a table made
  /// by an older syncbus gets it from a role that may (ensure_table), or
  /// from this SQL.
  std::string removal_log_sql() const;
  /// True when the removal log exists (one round trip).
  bool has_removal_log(pqxx::connection_base& session) const;
  /// True when this role may read the removal log (which exists).
  bool may_read_removal_log(pqxx::connection_base& session) const;
  /// A deleted row a position does not name (the origin, and the highest
  /// sequence deleted of it), or none: the position has not expired. In
  /// the caller's transaction (a resume's round; subscribe_from()'s check,
  /// with its own lock_timeout).
  struct Removed {
    std::string origin;
    std::uint64_t sequence = 0;
  };
  std::optional<Removed> removed_after(pqxx::transaction_base& txn, const PgSnapshot& snapshot,
                                       const std::map<std::string, std::uint64_t>& cursors) const;
  /// The channel's removal log: per origin, the highest sequence and
  /// transaction id deleted (0 when unknown).
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> removed(
      pqxx::connection_base& session) const;
  const std::string& removal_log_name() const noexcept { return removed_name_; }
  /// Rows a vacuum batch deletes at most: measured here, a million rows went
  /// in 0.65 s, so a batch takes milliseconds.
  static constexpr std::int64_t vacuum_batch_rows = 10000;

  const std::string& qualified_name() const noexcept { return qualified_name_; }
  const std::string& channel() const noexcept { return settings_.channel; }

 private:
  /// Throws configuration_error when the table carries code that would run
  /// as the bus's role (a trigger, a default syncbus did not give, ...).
  void check_shape(pqxx::transaction_base& txn) const;
  std::vector<StoredMessage> stored_messages(const pqxx::result& rows) const;
  std::int64_t cap() const noexcept;

  Settings settings_;
  std::string qualified_name_;  // "schema"."table", quoted by the server's rules
  std::string key_name_;
  std::string index_name_;      // on created_at, for vacuum()
  std::string xid_index_name_;  // on xid, for catching up
  std::string qualified_xid_index_;
  std::string removed_name_;  // the removal log, "schema"."table_removed"
  std::string removed_key_name_;
};

}  // namespace syncbus::detail
