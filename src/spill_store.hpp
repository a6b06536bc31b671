#pragma once
// The spill table: where messages too large for a NOTIFY payload (or every
// message, in SpillMode::always) are stored, keyed by (channel, origin,
// sequence). Owns the table's SQL; every value is a statement parameter.

#include <pqxx/connection_base>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace syncbus::detail {

class SpillStore {
 public:
  /// `schema` and `table` are used as quoted identifiers, exactly as given.
  SpillStore(pqxx::connection_base& session, const std::string& schema, const std::string& table,
             std::string channel);

  /// The CREATE statements for the table and its index (idempotent).
  std::string create_sql() const;

  /// Creates the table when missing, under an advisory lock so that instances
  /// starting at once do not race; when `create` is false a missing table is
  /// a configuration_error naming the SQL to run.
  void ensure_table(pqxx::connection_base& session, bool create) const;

  /// Prepares this store's statements on a connection; call once per
  /// connection before the calls below.
  void prepare(pqxx::connection_base& session) const;

  /// One statement, committed on return: stores the bodies of `sequences`
  /// (a JSON array of the bodies' JSON texts, in the same order) and NOTIFYs
  /// each of `payloads` (a JSON array of envelope texts), atomically.
  void store_batch_and_notify(pqxx::connection_base& session, const std::string& origin,
                              const std::vector<std::uint64_t>& sequences,
                              const std::string& bodies_json_array,
                              const std::string& payloads_json_array) const;

  /// One stored message, as the listener reads it.
  struct StoredMessage {
    std::string origin;
    std::uint64_t sequence = 0;
    std::string body_json;
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

 private:
  std::string qualified_name_;  // "schema"."table", quoted by the server's rules
  std::string key_name_;
  std::string index_name_;
  std::string channel_;
};

}  // namespace syncbus::detail
