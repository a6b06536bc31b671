#include "spill_store.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>
#include <pqxx/result>
#include <pqxx/transaction>

#include "pg_session.hpp"

namespace syncbus::detail {
namespace {

constexpr const char* store_statement = "syncbus_spill_store";
constexpr const char* vacuum_statement = "syncbus_spill_vacuum";
constexpr const char* recent_statement = "syncbus_spill_recent";
constexpr const char* from_statement = "syncbus_spill_from";
constexpr const char* many_statement = "syncbus_spill_many";

// A PostgreSQL array literal of `values`, each element double-quoted with
// backslash escapes: libpqxx 6.4 has no array parameters of its own.
template <typename Values, typename Format>
std::string array_literal(const Values& values, Format format) {
  std::string out = "{";
  for (const auto& value : values) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (const char c : format(value)) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

std::vector<SpillStore::StoredMessage> stored_messages(const pqxx::result& rows) {
  std::vector<SpillStore::StoredMessage> out;
  out.reserve(rows.size());
  for (pqxx::result::size_type i = 0; i < rows.size(); ++i) {
    const auto row = rows[i];
    out.push_back({row[0].as<std::string>(), row[1].as<std::uint64_t>(), row[2].as<std::string>()});
  }
  return out;
}

}  // namespace

SpillStore::SpillStore(pqxx::connection_base& session, const std::string& schema,
                       const std::string& table, std::string channel)
    : channel_(std::move(channel)) {
  if (schema.empty() || table.empty()) {
    throw configuration_error(
        "syncbus: spill_schema and spill_table must not be empty (defaults: "
        "\"public\" and \"sync_cluster_spill\")");
  }
  qualified_name_ = session.quote_name(schema) + "." + session.quote_name(table);
  // PostgreSQL truncates these derived names at 63 bytes, which only matters
  // for very long table names.
  key_name_ = session.quote_name(table + "_message_key");
  index_name_ = session.quote_name(table + "_created_at_idx");
}

std::string SpillStore::create_sql() const {
  return fmt::format(
      "CREATE TABLE IF NOT EXISTS {0} (\n"
      "  id         bigserial   PRIMARY KEY,\n"
      "  channel    text        NOT NULL,\n"
      "  origin     text        NOT NULL,\n"
      "  sequence   bigint      NOT NULL,\n"
      "  body       text        NOT NULL,\n"
      "  created_at timestamptz NOT NULL DEFAULT now(),\n"
      "  CONSTRAINT {1} UNIQUE (channel, origin, sequence)\n"
      ");\n"
      "CREATE INDEX IF NOT EXISTS {2} ON {0} (created_at);",
      qualified_name_, key_name_, index_name_);
}

void SpillStore::ensure_table(pqxx::connection_base& session, bool create) const {
  try {
    pqxx::work txn(session);
    const auto exists =
        txn.exec_params1("SELECT to_regclass($1) IS NOT NULL", qualified_name_)[0].as<bool>();
    if (exists) {
      txn.commit();
      return;
    }
    if (!create) {
      throw configuration_error(
          fmt::format("syncbus: the spill table {} does not exist and "
                      "PostgresBusOptions::create_spill_table is false. Create it with:\n{}",
                      qualified_name_, create_sql()));
    }
    // Concurrent CREATE TABLE IF NOT EXISTS can still fail on the catalog's
    // unique index; the lock makes the instances take turns.
    txn.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))",
                    "syncbus:create:" + qualified_name_);
    txn.exec(create_sql());
    txn.commit();
  } catch (...) {
    rethrow_as_syncbus_error(fmt::format("creating the spill table {}", qualified_name_));
  }
}

void SpillStore::prepare(pqxx::connection_base& session) const {
  // The bodies and payloads travel as JSON arrays: the json type keeps each
  // element's text exactly as written, so no escaping is needed on our side.
  // The INSERT runs whether or not the SELECT reads it; the rows and the
  // NOTIFYs commit together.
  session.prepare(
      store_statement,
      fmt::format("WITH stored AS (INSERT INTO {} (channel, origin, sequence, body) "
                  "SELECT $1, $2, s.sequence, b.body::text FROM unnest($3::bigint[]) "
                  "WITH ORDINALITY AS s(sequence, i) JOIN json_array_elements($4::json) "
                  "WITH ORDINALITY AS b(body, i) USING (i) RETURNING 1) "
                  "SELECT pg_notify($1, p.payload::text) FROM "
                  "json_array_elements($5::json) AS p(payload)",
                  qualified_name_));
  session.prepare(recent_statement,
                  fmt::format("SELECT origin, sequence, body FROM {} WHERE channel = $1 AND "
                              "created_at >= now() - $2::bigint * interval '1 millisecond' AND "
                              "(origin, sequence) > ($3, $4) ORDER BY origin, sequence LIMIT $5",
                              qualified_name_));
  session.prepare(from_statement,
                  fmt::format("SELECT origin, sequence, body FROM {} WHERE channel = $1 AND "
                              "origin = $2 AND sequence >= $3 ORDER BY sequence LIMIT $4",
                              qualified_name_));
  session.prepare(many_statement,
                  // One unique-key probe per key, whatever the statistics say.
                  // Without the LIMIT the planner flattens the subquery into a
                  // join, and for a channel newer than the last ANALYZE (its
                  // estimate: 1 row) picks a hash join over all the channel's
                  // rows: seen taking 250 ms for 512 keys among 100,000 rows.
                  // For the same reason the created_at index does not lead
                  // with channel: it was picked instead of the key, scanning.
                  fmt::format("SELECT k.origin, k.sequence, s.body FROM unnest($2::text[], "
                              "$3::bigint[]) AS k(origin, sequence) CROSS JOIN LATERAL (SELECT "
                              "body FROM {} WHERE channel = $1 AND origin = k.origin AND "
                              "sequence = k.sequence LIMIT 1) s",
                              qualified_name_));
  session.prepare(vacuum_statement,
                  fmt::format("DELETE FROM {} WHERE channel = $1 AND created_at < now() - "
                              "$2::bigint * interval '1 millisecond'",
                              qualified_name_));
}

void SpillStore::store_batch_and_notify(pqxx::connection_base& session, const std::string& origin,
                                        const std::vector<std::uint64_t>& sequences,
                                        const std::string& bodies_json_array,
                                        const std::string& payloads_json_array) const {
  pqxx::nontransaction statement(session);
  statement.exec_prepared(
      store_statement, channel_, origin,
      array_literal(sequences, [](std::uint64_t sequence) { return std::to_string(sequence); }),
      bodies_json_array, payloads_json_array);
}

std::vector<SpillStore::StoredMessage> SpillStore::fetch_many(
    pqxx::connection_base& session, const std::vector<MessageKey>& keys) const {
  if (keys.empty()) return {};
  const auto origins =
      array_literal(keys, [](const MessageKey& key) -> const std::string& { return key.origin; });
  const auto sequences =
      array_literal(keys, [](const MessageKey& key) { return std::to_string(key.sequence); });
  pqxx::nontransaction statement(session);
  return stored_messages(statement.exec_prepared(many_statement, channel_, origins, sequences));
}

std::vector<SpillStore::StoredMessage> SpillStore::fetch_recent(pqxx::connection_base& session,
                                                                std::chrono::milliseconds window,
                                                                const std::string& after_origin,
                                                                std::uint64_t after_sequence,
                                                                int limit) const {
  pqxx::nontransaction statement(session);
  const auto rows =
      statement.exec_prepared(recent_statement, channel_, static_cast<std::int64_t>(window.count()),
                              after_origin, static_cast<std::int64_t>(after_sequence), limit);
  return stored_messages(rows);
}

std::vector<SpillStore::StoredMessage> SpillStore::fetch_from(pqxx::connection_base& session,
                                                              const std::string& origin,
                                                              std::uint64_t from_sequence,
                                                              int limit) const {
  pqxx::nontransaction statement(session);
  return stored_messages(statement.exec_prepared(from_statement, channel_, origin,
                                                 static_cast<std::int64_t>(from_sequence), limit));
}

std::int64_t SpillStore::vacuum(pqxx::connection_base& session,
                                std::chrono::milliseconds older_than) const {
  pqxx::nontransaction statement(session);
  const auto result = statement.exec_prepared(vacuum_statement, channel_,
                                              static_cast<std::int64_t>(older_than.count()));
  return static_cast<std::int64_t>(result.affected_rows());
}

}  // namespace syncbus::detail
