#pragma once
// The spill table: where messages too large for a NOTIFY payload (or every
// message, in SpillMode::always) are stored, keyed by (channel, origin,
// sequence). Owns the table's SQL; every value is a statement parameter, and
// the names are quoted by the server's rules (see identifiers.hpp).

#include <pqxx/connection_base>
#include <pqxx/result>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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

  /// The CREATE statements for the table and its index (idempotent). With
  /// `lz4`, bodies are compressed with LZ4 (PostgreSQL 14+ built with it)
  /// rather than the slower default.
  std::string create_sql(bool lz4 = true) const;

  /// Creates the table when missing, under an advisory lock so that instances
  /// starting at once do not race; when `create` is false a missing table is
  /// a configuration_error naming the SQL to run. With MACs, a table made by
  /// an older version gains its `mac` column the same way.
  void ensure_table(pqxx::connection_base& session, bool create) const;

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
  void prepare(pqxx::connection_base& session) const;

  /// Makes `session`, which reads the table, look rows up by their key
  /// whatever the planner's statistics say (one round trip: call it where a
  /// statement may run). See the definition for why.
  static void read_by_key_only(pqxx::connection_base& session);

  /// One statement, committed on return: stores `bodies` (JSON texts) as the
  /// messages `sequences` (with MACs, `macs` holds one per body) and NOTIFYs
  /// each of `payloads`, in order, atomically.
  void store_batch_and_notify(pqxx::connection_base& session, const std::string& origin,
                              const std::vector<std::uint64_t>& sequences,
                              const std::vector<std::string_view>& bodies,
                              const std::vector<std::string>& macs,
                              const std::vector<std::string_view>& payloads) const;

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
    /// The query result that body_json points into (shared, not copied).
    pqxx::result rows;
  };

  /// One message's key in the table (channel aside).
  struct MessageKey {
    std::string origin;
    std::uint64_t sequence = 0;
  };

  /// The stored messages among `keys`, in one query, in no particular order;
  /// keys with no row are simply absent.
  std::vector<StoredMessage> fetch_many(pqxx::connection_base& session,
                                        const std::vector<MessageKey>& keys) const;

  /// Up to `limit` of this channel's rows created in the last `window`,
  /// ordered by (origin, sequence) and after (after_origin, after_sequence):
  /// a keyset page. Never by id: bigserial ids are taken at INSERT, not at
  /// COMMIT, so rows commit out of id order.
  std::vector<StoredMessage> fetch_recent(pqxx::connection_base& session,
                                          std::chrono::milliseconds window,
                                          const std::string& after_origin,
                                          std::uint64_t after_sequence, int limit) const;

  /// This channel's messages of `origin` from `from_sequence` on, at most
  /// `limit`, in sequence order (re-reading what a full delivery queue
  /// dropped).
  std::vector<StoredMessage> fetch_from(pqxx::connection_base& session, const std::string& origin,
                                        std::uint64_t from_sequence, int limit) const;

  /// Deletes this channel's rows older than `older_than`; returns the count.
  std::int64_t vacuum(pqxx::connection_base& session, std::chrono::milliseconds older_than) const;

  const std::string& qualified_name() const noexcept { return qualified_name_; }
  const std::string& channel() const noexcept { return settings_.channel; }

 private:
  std::vector<StoredMessage> stored_messages(const pqxx::result& rows) const;
  std::int64_t cap() const noexcept;

  Settings settings_;
  std::string qualified_name_;  // "schema"."table", quoted by the server's rules
  std::string key_name_;
  std::string index_name_;
};

}  // namespace syncbus::detail
