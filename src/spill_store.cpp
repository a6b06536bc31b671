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
constexpr const char* fetch_statement = "syncbus_spill_fetch";
constexpr const char* vacuum_statement = "syncbus_spill_vacuum";
constexpr const char* recent_statement = "syncbus_spill_recent";

}  // namespace

SpillStore::SpillStore(pqxx::connection& session, const std::string& schema,
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
      "CREATE INDEX IF NOT EXISTS {2} ON {0} (channel, created_at);",
      qualified_name_, key_name_, index_name_);
}

void SpillStore::ensure_table(pqxx::connection& session, bool create) const {
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

void SpillStore::prepare(pqxx::connection& session) const {
  session.prepare(store_statement, fmt::format("WITH stored AS (INSERT INTO {} (channel, origin, "
                                               "sequence, body) VALUES ($1, $2, $3, $4) "
                                               "RETURNING 1) SELECT pg_notify($1, $5) FROM stored",
                                               qualified_name_));
  session.prepare(fetch_statement, fmt::format("SELECT body FROM {} WHERE channel = $1 AND "
                                               "origin = $2 AND sequence = $3",
                                               qualified_name_));
  session.prepare(recent_statement,
                  fmt::format("SELECT origin, sequence, body FROM {} WHERE channel = $1 AND "
                              "created_at >= now() - $2::bigint * interval '1 millisecond' AND "
                              "(origin, sequence) > ($3, $4) ORDER BY origin, sequence LIMIT $5",
                              qualified_name_));
  session.prepare(vacuum_statement,
                  fmt::format("DELETE FROM {} WHERE channel = $1 AND created_at < now() - "
                              "$2::bigint * interval '1 millisecond'",
                              qualified_name_));
}

void SpillStore::store_and_notify(pqxx::connection& session, const std::string& origin,
                                  std::uint64_t sequence, const std::string& body_json,
                                  const std::string& pointer_payload) const {
  pqxx::nontransaction statement(session);
  statement.exec_prepared(store_statement, channel_, origin, static_cast<std::int64_t>(sequence),
                          body_json, pointer_payload);
}

std::optional<std::string> SpillStore::fetch(pqxx::connection& session, const std::string& origin,
                                             std::uint64_t sequence) const {
  pqxx::nontransaction statement(session);
  const auto rows = statement.exec_prepared(fetch_statement, channel_, origin,
                                            static_cast<std::int64_t>(sequence));
  if (rows.empty()) return std::nullopt;
  return rows[0][0].as<std::string>();
}

std::vector<SpillStore::StoredMessage> SpillStore::fetch_recent(pqxx::connection& session,
                                                                std::chrono::milliseconds window,
                                                                const std::string& after_origin,
                                                                std::uint64_t after_sequence,
                                                                int limit) const {
  pqxx::nontransaction statement(session);
  const auto rows =
      statement.exec_prepared(recent_statement, channel_, static_cast<std::int64_t>(window.count()),
                              after_origin, static_cast<std::int64_t>(after_sequence), limit);
  std::vector<StoredMessage> out;
  out.reserve(rows.size());
  for (pqxx::result::size_type i = 0; i < rows.size(); ++i) {
    const auto row = rows[i];
    out.push_back({row[0].as<std::string>(), row[1].as<std::uint64_t>(), row[2].as<std::string>()});
  }
  return out;
}

std::int64_t SpillStore::vacuum(pqxx::connection& session,
                                std::chrono::milliseconds older_than) const {
  pqxx::nontransaction statement(session);
  const auto result = statement.exec_prepared(vacuum_statement, channel_,
                                              static_cast<std::int64_t>(older_than.count()));
  return static_cast<std::int64_t>(result.affected_rows());
}

}  // namespace syncbus::detail
