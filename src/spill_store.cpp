#include "spill_store.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>
#include <pqxx/result>
#include <pqxx/transaction>

#include <algorithm>
#include <cstdint>

#include "identifiers.hpp"
#include "pg_session.hpp"

namespace syncbus::detail {
namespace {

constexpr const char* store_statement = "syncbus_spill_store";
constexpr const char* vacuum_statement = "syncbus_spill_vacuum";
constexpr const char* recent_statement = "syncbus_spill_recent";
constexpr const char* from_statement = "syncbus_spill_from";
constexpr const char* many_statement = "syncbus_spill_many";

// A PostgreSQL array literal of `values`, each element double-quoted with
// backslash escapes: libpqxx 6.4 has no array parameters of its own. It
// travels as a parameter, never as SQL text.
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

}  // namespace

SpillStore::SpillStore(pqxx::connection_base& session, Settings settings)
    : settings_(std::move(settings)) {
  qualified_name_ =
      session.quote_name(settings_.schema) + "." + session.quote_name(settings_.table);
  key_name_ = session.quote_name(derived_identifier(settings_.table, "_message_key"));
  index_name_ = session.quote_name(derived_identifier(settings_.table, "_created_at_idx"));
}

std::string SpillStore::create_sql() const {
  return fmt::format(
      "CREATE TABLE IF NOT EXISTS {0} (\n"
      "  id         bigserial   PRIMARY KEY,\n"
      "  channel    text        NOT NULL,\n"
      "  origin     text        NOT NULL,\n"
      "  sequence   bigint      NOT NULL,\n"
      "  body       text        NOT NULL,\n"
      "  mac        text,\n"
      "  created_at timestamptz NOT NULL DEFAULT now(),\n"
      "  CONSTRAINT {1} UNIQUE (channel, origin, sequence)\n"
      ");\n"
      "CREATE INDEX IF NOT EXISTS {2} ON {0} (created_at);",
      qualified_name_, key_name_, index_name_);
}

void SpillStore::ensure_table(pqxx::connection_base& session, bool create) const {
  try {
    pqxx::work txn(session);
    // to_regclass() parses the quoted name: it finds exactly this table,
    // whatever search_path says.
    const auto found = txn.exec_params1(
        "SELECT to_regclass($1) IS NOT NULL, EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid "
        "= to_regclass($1) AND attname = 'mac' AND NOT attisdropped)",
        qualified_name_);
    const bool exists = found[0].as<bool>();
    const bool has_mac = found[1].as<bool>();
    const bool needs_mac = settings_.with_macs && !has_mac;
    if (exists && !needs_mac) {
      txn.commit();
      return;
    }
    const auto add_mac_sql =
        fmt::format("ALTER TABLE {} ADD COLUMN IF NOT EXISTS mac text;", qualified_name_);
    if (!create) {
      throw configuration_error(
          exists ? fmt::format("syncbus: the spill table {} has no `mac` column, which "
                               "PostgresBusOptions::secrets needs, and create_spill_table is "
                               "false. Add it with:\n{}",
                               qualified_name_, add_mac_sql)
                 : fmt::format("syncbus: the spill table {} does not exist and "
                               "PostgresBusOptions::create_spill_table is false. Create it "
                               "with:\n{}",
                               qualified_name_, create_sql()));
    }
    const auto quoted_schema = session.quote_name(settings_.schema);
    const bool may_create =
        exists ||
        // Unlike the table functions, this one takes the name as is, unparsed.
        txn.exec_params1("SELECT has_schema_privilege($1, 'CREATE')", settings_.schema)[0]
            .as<bool>();
    if (!may_create) {
      throw configuration_error(fmt::format(
          "syncbus: the spill table {0} does not exist, and this role may not create it (no "
          "CREATE on schema {1}). Create it ahead of time with a migration, as a role that "
          "may, and set PostgresBusOptions::create_spill_table = false:\n{2}\n"
          "See docs/OPERATIONS.md for the grants each role needs",
          qualified_name_, quoted_schema, create_sql()));
    }
    // Concurrent CREATE TABLE IF NOT EXISTS can still fail on the catalog's
    // unique index; the lock makes the instances take turns.
    txn.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))",
                    "syncbus:create:" + qualified_name_);
    txn.exec(exists ? add_mac_sql : create_sql());
    txn.commit();
  } catch (...) {
    rethrow_as_syncbus_error(fmt::format("creating the spill table {}", qualified_name_));
  }
}

std::vector<SpillStore::MissingPrivilege> SpillStore::missing_privileges(
    pqxx::connection_base& session, bool publishes) const {
  pqxx::nontransaction query(session);
  // The names go in as parameters: the table, quoted, since the table
  // functions parse it as SQL (exactly as the statements will); the schema
  // as is, since has_schema_privilege() does not.
  const auto quoted_schema = session.quote_name(settings_.schema);
  const auto row = query.exec_params1(
      "SELECT has_schema_privilege($1, 'USAGE'), has_table_privilege($2, 'SELECT'), "
      "has_table_privilege($2, 'INSERT'), coalesce(has_sequence_privilege("
      "pg_get_serial_sequence($2, 'id'), 'USAGE'), true), "
      "coalesce(pg_get_serial_sequence($2, 'id'), ''), quote_ident(current_user)",
      settings_.schema, qualified_name_);
  const auto role = row[5].as<std::string>();
  std::vector<MissingPrivilege> missing;
  const auto lacks = [&](std::string what, std::string grant) {
    missing.push_back({std::move(what), std::move(grant) + " TO " + role + ";"});
  };
  if (!row[0].as<bool>()) {
    lacks("USAGE on schema " + quoted_schema, "GRANT USAGE ON SCHEMA " + quoted_schema);
  }
  if (!row[1].as<bool>()) {
    lacks("SELECT on table " + qualified_name_, "GRANT SELECT ON TABLE " + qualified_name_);
  }
  if (publishes && !row[2].as<bool>()) {
    lacks("INSERT on table " + qualified_name_, "GRANT INSERT ON TABLE " + qualified_name_);
  }
  if (publishes && !row[3].as<bool>()) {
    const auto sequence = row[4].as<std::string>();
    lacks("USAGE on sequence " + sequence, "GRANT USAGE ON SEQUENCE " + sequence);
  }
  return missing;
}

void SpillStore::prepare(pqxx::connection_base& session) const {
  // The bodies and payloads travel as JSON arrays: the json type keeps each
  // element's text exactly as written, so no escaping is needed on our side.
  // The INSERT runs whether or not the SELECT reads it; the rows and the
  // NOTIFYs commit together.
  session.prepare(
      store_statement,
      fmt::format(
          "WITH stored AS (INSERT INTO {} (channel, origin, sequence, body{}) "
          "SELECT $1, $2, s.sequence, b.body::text{} FROM unnest($3::bigint[]) "
          "WITH ORDINALITY AS s(sequence, i) JOIN json_array_elements($4::json) "
          "WITH ORDINALITY AS b(body, i) USING (i){} RETURNING 1) "
          "SELECT pg_notify($1, p.payload::text) FROM "
          "json_array_elements($5::json) AS p(payload)",
          qualified_name_, settings_.with_macs ? ", mac" : "", settings_.with_macs ? ", m.mac" : "",
          settings_.with_macs ? " JOIN unnest($6::text[]) WITH ORDINALITY AS m(mac, i) USING (i)"
                              : ""));
  // What every read returns: the key, the body unless it is over the cap
  // (then only its size: a hostile row is refused, never loaded), the MAC.
  // The size cap is each statement's last parameter, `$n`.
  const auto columns = [&](int n) {
    return fmt::format(
        "s.origin, s.sequence, CASE WHEN octet_length(s.body) <= ${0}::bigint THEN s.body END, "
        "octet_length(s.body), {1}",
        n, settings_.with_macs ? "s.mac" : "NULL::text");
  };
  session.prepare(recent_statement,
                  fmt::format("SELECT {} FROM {} s WHERE channel = $1 AND "
                              "created_at >= now() - $2::bigint * interval '1 millisecond' AND "
                              "(origin, sequence) > ($3, $4) ORDER BY origin, sequence LIMIT $5",
                              columns(6), qualified_name_));
  session.prepare(from_statement,
                  fmt::format("SELECT {} FROM {} s WHERE channel = $1 AND "
                              "origin = $2 AND sequence >= $3 ORDER BY sequence LIMIT $4",
                              columns(5), qualified_name_));
  session.prepare(many_statement,
                  // One unique-key probe per key, whatever the statistics say.
                  // Without the LIMIT the planner flattens the subquery into a
                  // join, and for a channel newer than the last ANALYZE (its
                  // estimate: 1 row) picks a hash join over all the channel's
                  // rows: seen taking 250 ms for 512 keys among 100,000 rows.
                  // For the same reason the created_at index does not lead
                  // with channel: it was picked instead of the key, scanning.
                  fmt::format("SELECT {} FROM unnest($2::text[], $3::bigint[]) AS k(origin, "
                              "sequence) CROSS JOIN LATERAL (SELECT * FROM {} WHERE channel = $1 "
                              "AND origin = k.origin AND sequence = k.sequence LIMIT 1) s",
                              columns(4), qualified_name_));
  session.prepare(vacuum_statement,
                  fmt::format("DELETE FROM {} WHERE channel = $1 AND created_at < now() - "
                              "$2::bigint * interval '1 millisecond'",
                              qualified_name_));
}

void SpillStore::store_batch_and_notify(pqxx::connection_base& session, const std::string& origin,
                                        const std::vector<std::uint64_t>& sequences,
                                        const std::string& bodies_json_array,
                                        const std::vector<std::string>& macs,
                                        const std::string& payloads_json_array) const {
  pqxx::nontransaction statement(session);
  const auto sequence_array =
      array_literal(sequences, [](std::uint64_t sequence) { return std::to_string(sequence); });
  if (settings_.with_macs) {
    statement.exec_prepared(
        store_statement, settings_.channel, origin, sequence_array, bodies_json_array,
        payloads_json_array,
        array_literal(macs, [](const std::string& mac) -> const std::string& { return mac; }));
  } else {
    statement.exec_prepared(store_statement, settings_.channel, origin, sequence_array,
                            bodies_json_array, payloads_json_array);
  }
}

std::int64_t SpillStore::cap() const noexcept {
  return static_cast<std::int64_t>(
      std::min<std::size_t>(settings_.max_body_bytes, static_cast<std::size_t>(INT64_MAX)));
}

std::vector<SpillStore::StoredMessage> SpillStore::stored_messages(const pqxx::result& rows) const {
  std::vector<StoredMessage> out;
  out.reserve(rows.size());
  for (pqxx::result::size_type i = 0; i < rows.size(); ++i) {
    const auto row = rows[i];
    StoredMessage message;
    message.origin = row[0].as<std::string>();
    message.sequence = row[1].as<std::uint64_t>();
    if (row[2].is_null()) {
      message.too_large = row[3].as<std::uint64_t>();
    } else {
      message.body_json = row[2].as<std::string>();
    }
    if (!row[4].is_null()) message.mac = row[4].as<std::string>();
    out.push_back(std::move(message));
  }
  return out;
}

std::vector<SpillStore::StoredMessage> SpillStore::fetch_many(
    pqxx::connection_base& session, const std::vector<MessageKey>& keys) const {
  if (keys.empty()) return {};
  const auto origins =
      array_literal(keys, [](const MessageKey& key) -> const std::string& { return key.origin; });
  const auto sequences =
      array_literal(keys, [](const MessageKey& key) { return std::to_string(key.sequence); });
  pqxx::nontransaction statement(session);
  return stored_messages(
      statement.exec_prepared(many_statement, settings_.channel, origins, sequences, cap()));
}

std::vector<SpillStore::StoredMessage> SpillStore::fetch_recent(pqxx::connection_base& session,
                                                                std::chrono::milliseconds window,
                                                                const std::string& after_origin,
                                                                std::uint64_t after_sequence,
                                                                int limit) const {
  pqxx::nontransaction statement(session);
  return stored_messages(statement.exec_prepared(
      recent_statement, settings_.channel, static_cast<std::int64_t>(window.count()), after_origin,
      static_cast<std::int64_t>(after_sequence), limit, cap()));
}

std::vector<SpillStore::StoredMessage> SpillStore::fetch_from(pqxx::connection_base& session,
                                                              const std::string& origin,
                                                              std::uint64_t from_sequence,
                                                              int limit) const {
  pqxx::nontransaction statement(session);
  return stored_messages(statement.exec_prepared(from_statement, settings_.channel, origin,
                                                 static_cast<std::int64_t>(from_sequence), limit,
                                                 cap()));
}

std::int64_t SpillStore::vacuum(pqxx::connection_base& session,
                                std::chrono::milliseconds older_than) const {
  pqxx::nontransaction statement(session);
  const auto result = statement.exec_prepared(vacuum_statement, settings_.channel,
                                              static_cast<std::int64_t>(older_than.count()));
  return static_cast<std::int64_t>(result.affected_rows());
}

}  // namespace syncbus::detail
